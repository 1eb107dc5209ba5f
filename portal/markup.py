"""The Markdown subset messages, announcements and automatic messages are written in.

Two locks, not one: markdown-it runs with raw HTML off (typed tags come out as
text) and the result then goes through nh3, an allow-list sanitiser, so even a
renderer bug cannot put a script, an event handler or a ``javascript:`` link on
a page.
"""

from __future__ import annotations

import re

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

# Bold, italics, links, lists, quotes, code and line breaks; no headings, images, tables or HTML.
_RULES = ["emphasis", "link", "autolink", "list", "backticks", "blockquote", "fence", "newline", "escape"]
_md = MarkdownIt("zero", {"breaks": True, "html": False, "linkify": False}).enable(_RULES)

ALLOWED_TAGS = {"p", "br", "strong", "em", "a", "ul", "ol", "li", "code", "pre", "blockquote"}
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
_SCHEMES = {"http", "https", "mailto"}


def render_markdown(text: str | None) -> Markup:
    """Markdown source as sanitised HTML, safe to put on any page or in an e-mail."""
    html = _md.render(text or "")
    return Markup(  # noqa: S704 - nh3 has just removed everything not on the allow-list
        nh3.clean(
            html,
            tags=ALLOWED_TAGS,
            attributes=_ATTRIBUTES,
            url_schemes=_SCHEMES,
            link_rel="noopener noreferrer nofollow",
            strip_comments=True,
        )
    )


_TAG = re.compile(r"<[^>]+>")
_LINK = re.compile(r'<a href="([^"]*)"[^>]*>(.*?)</a>')


def markdown_to_text(text: str | None) -> str:
    """A plain-text version for e-mail bodies and previews (markup removed, entities kept literal)."""
    import html

    rendered = str(render_markdown(text))
    rendered = _LINK.sub(
        lambda m: m.group(2) if m.group(2) == m.group(1) else f"{m.group(2)} ({m.group(1)})", rendered
    )
    rendered = rendered.replace("<br />", "\n").replace("</p>", "\n").replace("</li>", "\n")
    rendered = re.sub(r"<li>", "• ", rendered)
    return html.unescape(_TAG.sub("", rendered)).strip()


def preview(text: str | None, length: int = 120) -> str:
    """The first words of a message as plain text, for lists."""
    plain = " ".join(markdown_to_text(text).split())
    return plain if len(plain) <= length else plain[: length - 1].rstrip() + "…"
