"""Making creatives through the real services, for tests of every layer."""

from __future__ import annotations

import io

from portal.models import Creative, Program, User
from portal.services import creatives
from portal.services.creative_files import Upload
from tests.images import png

MAX = 5 * 1024 * 1024


def upload(data: bytes | None = None, name: str = "banner.png") -> Upload:
    return Upload.from_stream(name, io.BytesIO(png() if data is None else data), MAX)


def details(
    name: str = "Summer sale", channels: tuple[str, ...] = ("social",), **content
) -> creatives.CreativeInput:
    return creatives.CreativeInput(name=name, channels=list(channels), language="en", **content)


def make_banner(
    actor: User,
    program: Program,
    *,
    name: str = "Summer sale",
    channels: tuple[str, ...] = ("social",),
    data: bytes | None = None,
    publish: bool = True,
    **extra,
) -> Creative:
    creative = creatives.create_creative(
        "banner", actor, program, details(name, channels, **extra), upload(data, f"{name}.png")
    )
    if publish:
        creatives.set_creative_status(creative, actor, "publish")
    return creative


def make_text(
    actor: User,
    program: Program,
    *,
    name: str = "Tent review copy",
    channels: tuple[str, ...] = ("seo",),
    body: str = "Our favourite tent this year: {link}",
    publish: bool = True,
    **extra,
) -> Creative:
    creative = creatives.create_creative(
        "text", actor, program, details(name, channels, body=body, headline="Sleep well outside", **extra)
    )
    if publish:
        creatives.set_creative_status(creative, actor, "publish")
    return creative


def make_landing(
    actor: User,
    program: Program,
    *,
    name: str = "Tents page",
    channels: tuple[str, ...] = ("seo",),
    url: str = "https://shop.example/tents",
    publish: bool = True,
) -> Creative:
    creative = creatives.create_creative("landing", actor, program, details(name, channels, url=url))
    if publish:
        creatives.set_creative_status(creative, actor, "publish")
    return creative
