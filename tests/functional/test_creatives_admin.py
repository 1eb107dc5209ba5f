"""Operator console for creatives: upload, bad input, edit, replace, publish, archive, bulk, stats."""

from __future__ import annotations

import html
import io
import re

import pytest
import sqlalchemy as sa

from portal.models import Creative, CreativeVersion, Role
from tests.conftest import make_bucket, s3_settings, stop_moto
from tests.creative_support import make_banner, make_text
from tests.images import FIFTY_MB, SVG_WITH_SCRIPT, WINDOWS_PROGRAM, png, png_bomb, truncated


@pytest.fixture
def manager(login_as):
    return login_as(Role.MANAGER)


def banner_form(data: bytes, name: str = "banner.png", **fields) -> dict:
    return {
        "name": "Summer sale square",
        "channels": ["social"],
        "language": "en",
        "campaign": "summer",
        "file": (io.BytesIO(data), name),
        **fields,
    }


def post(client, url: str, **kwargs):
    """POST through the test client, then close the body it spooled to a temporary file
    (Werkzeug's test client leaves large encoded bodies open)."""
    response = client.post(url, **kwargs)
    response.request.environ["wsgi.input"].close()
    return response


def counts(db) -> tuple[int, int]:
    return (
        db.session.scalar(sa.select(sa.func.count()).select_from(Creative)),
        db.session.scalar(sa.select(sa.func.count()).select_from(CreativeVersion)),
    )


def text_of(response) -> str:
    """The page as a reader sees its words: entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(response.get_data(as_text=True)))


def test_upload_a_banner_then_publish_it(store, client, db, program, manager):
    data = png((300, 250))
    response = client.post("/admin/creatives/new/banner", data=banner_form(data))
    assert response.status_code == 302
    creative = db.session.scalars(sa.select(Creative)).one()
    assert response.headers["Location"] == f"/admin/creatives/{creative.id}"
    assert (creative.status, creative.channels, creative.campaign) == ("draft", ["social"], "summer")
    assert store.get(creative.current.file_key) == data

    page = text_of(client.get(f"/admin/creatives/{creative.id}"))
    assert "is saved as a draft" in page
    assert "300×250" in page and "image/png" in page

    response = client.post(f"/admin/creatives/{creative.id}/publish")
    assert response.status_code == 302
    db.session.refresh(creative)
    assert creative.status == "published"
    assert "partners see it now" in text_of(client.get(f"/admin/creatives/{creative.id}"))


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (
            lambda: WINDOWS_PROGRAM,
            "banner.png",
            "“banner.png” is not an image: its content is a Windows program.",
        ),
        (
            lambda: SVG_WITH_SCRIPT,
            "banner.svg",
            "“banner.svg” is an SVG drawing. SVG files can carry scripts",
        ),
        (lambda: b"\0" * FIFTY_MB, "big.png", "“big.png” is 50 MB; an image may be at most 5 MB."),
        (lambda: truncated("PNG"), "cut.png", "“cut.png” is damaged or incomplete"),
        (lambda: png_bomb(), "bomb.png", "“bomb.png” unpacks to far more pixels than a banner has"),
    ],
    ids=["renamed-program", "svg-with-script", "fifty-mb", "truncated", "bomb"],
)
def test_bad_files_are_refused_on_the_form_and_nothing_is_stored(
    app, client, db, program, manager, data, name, message
):
    # Both stores get the same bad files in tests/unit/test_creatives.py; over HTTP the local one does.
    store = app.extensions["storage"]
    response = post(client, "/admin/creatives/new/banner", data=banner_form(data(), name))
    assert response.status_code == 422
    page = text_of(response)
    assert message in page
    assert 'value="Summer sale square"' in page  # what was typed stays
    assert counts(db) == (0, 0)
    assert store.keys() == []


def test_landing_page_off_the_allowed_domains_is_refused(client, db, program, manager):
    response = client.post(
        "/admin/creatives/new/landing",
        data={"name": "Sale", "channels": ["seo"], "language": "en", "url": "https://evil.example/sale"},
    )
    assert response.status_code == 422
    assert "Landing pages must be on the program's own sites: shop.example." in text_of(response)
    assert counts(db) == (0, 0)


def test_store_down_answers_clearly_and_leaves_nothing(app, client, db, program, manager, request):
    from moto.server import ThreadedMotoServer

    from portal import storage

    request.getfixturevalue("aws_credentials")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = make_bucket(endpoint)
    app.config.update(s3_settings(endpoint, bucket))
    storage.init_app(app)
    stop_moto(server)

    response = client.post("/admin/creatives/new/banner", data=banner_form(png()))
    assert response.status_code == 422
    assert (
        "The file store could not be reached, so nothing was saved. Try again in a few minutes."
        in text_of(response)
    )
    assert counts(db) == (0, 0)
    moto_again = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto_again.start()
    try:
        host, port = moto_again.get_host_and_port()
        app.config["S3_ENDPOINT_URL"] = f"http://{host}:{port}"
        storage.init_app(app)
        assert app.extensions["storage"].keys() == []
    finally:
        stop_moto(moto_again)


OTHER_KINDS = [
    (
        "text",
        {"headline": "Sleep well", "body": "Our tent: {link}", "call_to_action": "Shop: {link}"},
        "body",
    ),
    ("landing", {"url": "https://shop.example/tents"}, "url"),
    ("email", {"subject": "Autumn", "body": "Hello {link}"}, "subject"),
    ("video", {"url": "https://video.example/v/1"}, "url"),
]


def test_create_each_other_kind(client, db, program, manager):
    for kind, fields, check in OTHER_KINDS:
        data = {"name": f"A {kind}", "channels": ["seo", "email"], "language": "de", **fields}
        response = client.post(f"/admin/creatives/new/{kind}", data=data)
        assert response.status_code == 302, text_of(response)[:2000]
        creative_id = int(response.headers["Location"].rsplit("/", 1)[1])
        creative = db.session.get(Creative, creative_id)
        assert (creative.kind, creative.language, creative.channels) == (kind, "de", ["seo", "email"])
        assert getattr(creative.current, check) == fields[check]


def test_form_shape_errors(client, db, program, manager):
    response = client.post("/admin/creatives/new/text", data={"name": "", "language": "en", "body": ""})
    page = text_of(response)
    assert response.status_code == 422
    assert "Name the creative." in page
    assert "Choose at least one channel." in page
    assert "Write the text partners will post." in page
    response = client.post(
        "/admin/creatives/new/banner", data={"name": "x", "channels": ["seo"], "language": "en"}
    )
    assert "Choose the banner image to upload." in text_of(response)
    assert client.get("/admin/creatives/new/poster").status_code == 404


def test_edit_text_adds_a_version_and_shows_the_history(client, db, program, manager):
    creative = make_text(manager, program)
    db.session.commit()
    page = client.get(f"/admin/creatives/{creative.id}").get_data(as_text=True)
    assert "Our favourite tent this year: {link}" in page  # the form is filled in
    response = client.post(
        f"/admin/creatives/{creative.id}",
        data={
            "name": "Tent review copy",
            "channels": ["seo"],
            "language": "en",
            "headline": "Sleep well outside",
            "body": "Still our favourite: {link}",
            "note": "new season",
        },
    )
    assert response.status_code == 302
    page = text_of(client.get(f"/admin/creatives/{creative.id}"))
    assert "version 2" in page and "new season" in page
    response = client.post(
        f"/admin/creatives/{creative.id}",
        data={"name": "Tent review copy", "channels": ["seo"], "language": "en", "body": "lost the link"},
    )
    assert response.status_code == 422
    assert "Put {link} in the text or the call to action" in text_of(response)


def test_replace_a_banner(app, client, db, program, manager):
    store = app.extensions["storage"]  # both stores: tests/unit/test_creatives.py
    creative = make_banner(manager, program)
    db.session.commit()
    response = client.post(
        f"/admin/creatives/{creative.id}/replace",
        data={"file": (io.BytesIO(png((728, 90))), "wide.png"), "note": "leaderboard"},
    )
    assert response.status_code == 302
    page = text_of(client.get(f"/admin/creatives/{creative.id}"))
    assert "728×90" in page and "version 2" in page and "leaderboard" in page
    assert len(store.keys()) == 2

    response = client.post(
        f"/admin/creatives/{creative.id}/replace", data={"file": (io.BytesIO(SVG_WITH_SCRIPT), "new.svg")}
    )
    assert response.status_code == 422
    assert "SVG files can carry scripts" in text_of(response)
    assert len(store.keys()) == 2


def test_archive_and_the_rules_of_status(client, db, program, manager):
    creative = make_text(manager, program)
    db.session.commit()
    client.post(f"/admin/creatives/{creative.id}/archive")
    db.session.refresh(creative)
    assert creative.status == "archived"
    response = client.post(f"/admin/creatives/{creative.id}/archive", follow_redirects=True)
    assert "archived cannot be changed this way" in text_of(response)
    assert client.post("/admin/creatives/99999/publish").status_code == 404


def test_list_filters(client, db, program, manager):
    make_banner(manager, program, name="Square for social", channels=("social",))
    make_text(manager, program, name="Copy for seo", channels=("seo",), publish=False)
    db.session.commit()
    page = text_of(client.get("/admin/creatives"))
    assert "Square for social" in page and "Copy for seo" in page
    page = text_of(client.get("/admin/creatives?status=draft"))
    assert "Copy for seo" in page and "Square for social" not in page
    page = text_of(client.get("/admin/creatives?channel=social&kind=banner"))
    assert "Square for social" in page and "Copy for seo" not in page
    assert client.get("/admin/creatives?status=bogus&kind=x&page=99").status_code == 200


# --- bulk upload ---------------------------------------------------------------------------


def test_bulk_upload_several_banners(app, client, db, program, manager):
    store = app.extensions["storage"]  # both stores: tests/unit/test_creatives.py
    response = client.post(
        "/admin/creatives/bulk",
        data={
            "files": [
                (io.BytesIO(png((300, 250))), "square.png"),
                (io.BytesIO(WINDOWS_PROGRAM), "setup.png"),
                (io.BytesIO(png((160, 600))), "skyscraper.png"),
            ],
            "channels": ["social", "ads"],
            "language": "en",
            "campaign": "summer",
        },
    )
    assert response.status_code == 200
    page = text_of(response)
    assert page.count('data-outcome="saved"') == 2
    assert page.count('data-outcome="refused"') == 1
    assert "“setup.png” is not an image" in page
    assert counts(db) == (2, 2)
    assert len(store.keys()) == 2


def test_bulk_upload_answers_the_uploader_script_with_result_lines(client, db, program, manager):
    response = client.post(
        "/admin/creatives/bulk",
        data={"files": [(io.BytesIO(png()), "one.png")], "channels": ["social"], "language": "en"},
        headers={"HX-Request": "true"},
    )
    body = response.get_data(as_text=True).strip()
    assert response.status_code == 200
    assert body.startswith("<li") and "<html" not in body
    assert 'data-outcome="saved"' in body
    response = client.post(
        "/admin/creatives/bulk",
        data={"files": [(io.BytesIO(SVG_WITH_SCRIPT), "x.svg")], "channels": ["social"], "language": "en"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 422
    assert 'data-outcome="refused"' in response.get_data(as_text=True)


def test_bulk_upload_may_be_larger_than_other_requests_but_has_its_own_limit(
    app, client, db, program, manager
):
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, CREATIVE_UPLOAD_MAX_BYTES=512 * 1024)
    files = [(io.BytesIO(png()), f"b{i}.png") for i in range(3)]
    big_enough = [(io.BytesIO(png() + b"\0" * 100_000), f"b{i}.png") for i in range(2)]
    response = post(
        client,
        "/admin/creatives/bulk",
        data={"files": files + big_enough, "channels": ["ads"], "language": "en"},
    )
    assert response.status_code == 200  # ~200 KB: over MAX_CONTENT_LENGTH, within the upload limit
    assert counts(db)[0] == 5
    response = post(
        client,
        "/admin/creatives/bulk",
        data={"files": [(io.BytesIO(b"\0" * 600_000), "huge.png")], "channels": ["ads"], "language": "en"},
    )
    assert response.status_code == 413
    assert "Each image may be at most 5 MB, and at most 20 images go at once. Nothing was saved." in text_of(
        response
    )
    # Everywhere else the small limit still holds, with the usual message.
    creative = db.session.scalars(sa.select(Creative).limit(1)).one()
    response = client.post(f"/admin/creatives/{creative.id}", data={"name": "x" * 70_000})
    assert response.status_code == 413
    assert "What you sent is larger than the portal accepts." in text_of(response)


def test_bulk_upload_limits_the_number_of_files(app, client, db, program, manager):
    app.config["CREATIVE_BULK_MAX_FILES"] = 2
    response = client.post(
        "/admin/creatives/bulk",
        data={
            "files": [(io.BytesIO(png()), f"{i}.png") for i in range(3)],
            "channels": ["ads"],
            "language": "en",
        },
    )
    assert response.status_code == 422
    assert "At most 2 files at once." in text_of(response)
    assert counts(db) == (0, 0)


# --- statistics ----------------------------------------------------------------------------


def test_stats_page_sorts_and_takes_a_date_range(client, db, program, manager):
    from portal.models import Click
    from portal.models.types import utcnow
    from tests.factories import PartnerFactory

    quiet = make_text(manager, program, name="Quiet copy")
    busy = make_banner(manager, program, name="Busy banner")
    partner = PartnerFactory()
    for i in range(3):
        db.session.add(
            Click(
                id=f"stat{i:028d}",
                partner_id=partner.id,
                code=partner.ref_code,
                channel="other",
                creative_id=busy.id,
                destination_url="https://shop.example/",
                ip_hash="x" * 32,
                created_at=utcnow(),
            )
        )
    db.session.commit()
    page = client.get("/admin/creatives/stats").get_data(as_text=True)
    assert page.index("Busy banner") < page.index("Quiet copy")
    assert re.search(rf'data-creative="{busy.id}">.*?data-figure="clicks">3<', page, re.S)
    assert re.search(r'data-channel="social">.*?data-figure="clicks">3<', page, re.S)
    page = client.get("/admin/creatives/stats?sort=clicks&dir=asc").get_data(as_text=True)
    assert page.index("Quiet copy") < page.index("Busy banner")
    assert 'aria-sort="ascending"' in page
    page = client.get("/admin/creatives/stats?from=2020-01-01&to=2020-01-31").get_data(as_text=True)
    assert not re.search(r'data-figure="clicks">3<', page)
    assert client.get("/admin/creatives/stats?from=garbage&to=9999-99-99&sort=x").status_code == 200
    assert quiet.id
