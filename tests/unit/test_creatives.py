"""The creative library's rules: kinds, checks, versions, publishing, announcements, partner code."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from portal import realtime
from portal.errors import DomainError, InvalidFile, InvalidTransition, StorageUnavailable
from portal.models import AuditEvent, Creative, CreativeVersion, PartnerStatus, Role
from portal.services import creatives
from tests.conftest import make_bucket, s3_settings, stop_moto
from tests.creative_support import details, make_banner, make_landing, make_text, upload
from tests.factories import PartnerFactory, UserFactory
from tests.images import FIFTY_MB, SVG_WITH_SCRIPT, WINDOWS_PROGRAM, png, png_bomb, truncated


@pytest.fixture
def operator(db):
    return UserFactory(role=Role.MANAGER)


@pytest.fixture
def ctx(app, db):
    with app.test_request_context():
        yield


def counts(db) -> tuple[int, int]:
    return (
        db.session.scalar(sa.select(sa.func.count()).select_from(Creative)),
        db.session.scalar(sa.select(sa.func.count()).select_from(CreativeVersion)),
    )


# --- creating each kind -----------------------------------------------------------------


def test_banner_is_stored_with_what_its_bytes_say(store, ctx, db, operator, program):
    data = png((300, 250))
    creative = creatives.create_creative(
        "banner", operator, program, details(campaign="summer"), upload(data, "SUMMER.PNG.exe")
    )
    db.session.commit()
    version = creative.current
    assert (creative.kind, creative.status, creative.current_version) == ("banner", "draft", 1)
    assert (version.file_type, version.width, version.height, version.file_size) == (
        "image/png",
        300,
        250,
        len(data),
    )
    assert version.file_name == "SUMMER.PNG.exe"
    assert version.file_key.startswith(f"creatives/{creative.id}/v1-") and version.file_key.endswith(".png")
    assert store.get(version.file_key) == data
    assert store.keys() == [version.file_key]


def test_text_copy_landing_email_and_video(ctx, db, operator, program):
    text = make_text(operator, program, publish=False)
    landing = make_landing(operator, program, publish=False)
    email = creatives.create_creative(
        "email",
        operator,
        program,
        details("Autumn newsletter", ("email",), subject="New tents", body="<p>See {link}</p>"),
    )
    video = creatives.create_creative(
        "video",
        operator,
        program,
        details("Pitching in 60 s", ("video", "social"), url="https://video.example/watch?v=1"),
    )
    assert text.current.body == "Our favourite tent this year: {link}"
    assert landing.current.url == "https://shop.example/tents"
    assert landing.current.file_key is None
    assert email.current.subject == "New tents"
    assert video.current.url == "https://video.example/watch?v=1"
    assert video.channels == ["social", "video"]  # kept in the one canonical order


def test_landing_page_may_carry_a_screenshot(app, ctx, db, operator, program):
    store = app.extensions["storage"]
    creative = creatives.create_creative(
        "landing", operator, program, details(url="https://shop.example/sale"), upload(png((1280, 800)))
    )
    assert (creative.current.width, creative.current.height) == (1280, 800)
    assert store.exists(creative.current.file_key)


CONTENT_CASES = [
    ("text", {"body": "No link here"}, "body", "Put {link} in the text"),
    ("text", {"body": "Go {lnk}"}, "body", "“{lnk}” would be shown as it is"),
    ("text", {"body": ""}, "body", "Write the text"),
    ("email", {"subject": "Hi", "body": "no placeholder"}, "body", "Put {link} in the e-mail"),
    ("email", {"subject": "", "body": "{link}"}, "subject", "subject line"),
    ("landing", {"url": "https://evil.example/phish"}, "url", "must be on the program's own sites"),
    ("landing", {"url": "javascript:alert(1)"}, "url", "must be on the program's own sites"),
    ("landing", {"url": "https://shop.example.evil.example/"}, "url", "shop.example"),
    ("video", {"url": "ftp://video.example/x"}, "url", "starting with https://"),
    ("video", {"url": "not a url"}, "url", "starting with https://"),
]


def test_content_is_checked_per_kind(ctx, db, operator, program):
    for kind, content, field, message in CONTENT_CASES:
        with pytest.raises(DomainError) as refused:
            creatives.create_creative(kind, operator, program, details(**content))
        assert (refused.value.field, kind) == (field, kind), content
        assert message in refused.value.message, content
    assert counts(db) == (0, 0)


DETAIL_CASES = [
    ({"name": "  "}, "name"),
    ({"name": "x" * 121}, "name"),
    ({"channels": []}, "channels"),
    ({"channels": ["tv"]}, "channels"),
    ({"language": "xx"}, "language"),
    ({"campaign": "<script>"}, "campaign"),
]


def test_details_are_checked(ctx, db, operator, program):
    for overrides, field in DETAIL_CASES:
        data = details(body="Go {link}")
        for key, value in overrides.items():
            setattr(data, key, value)
        with pytest.raises(DomainError) as refused:
            creatives.create_creative("text", operator, program, data)
        assert refused.value.field == field, overrides
    assert counts(db) == (0, 0)


# --- bad files: refused, nothing stored, on either store ---------------------------------


BAD_FILES = [
    (lambda: WINDOWS_PROGRAM, "banner.png", "its content is a Windows program"),
    (lambda: SVG_WITH_SCRIPT, "banner.svg", "SVG files can carry scripts"),
    (lambda: png() + b"\0" * (FIFTY_MB - len(png())), "huge.png", "is 50 MB; an image may be at most 5 MB"),
    (lambda: truncated("JPEG"), "banner.jpg", "damaged or incomplete"),
    (png_bomb, "banner.png", "unpacks to far more pixels"),
]


def test_bad_banner_files_store_nothing(store, ctx, db, operator, program):
    """A renamed program, an SVG with a script, 50 MB, a truncated image, a bomb: refused on each store."""
    for data, name, message in BAD_FILES:
        with pytest.raises(InvalidFile, match=message):
            creatives.create_creative("banner", operator, program, details(), upload(data(), name))
        db.session.rollback()
        assert counts(db) == (0, 0), name
        assert store.keys() == [], name


def test_a_banner_needs_a_file(ctx, db, operator, program):
    with pytest.raises(InvalidFile, match="Choose the banner image"):
        creatives.create_creative("banner", operator, program, details(), None)


# --- the store and the database stay in step ----------------------------------------------


def test_store_down_leaves_no_row_and_no_object(
    app, ctx, db, operator, program, storage_backend, tmp_path, request
):
    """The acceptance case: the store fails during an upload; nothing of it remains anywhere."""
    from portal import storage

    if storage_backend == "s3":
        from moto.server import ThreadedMotoServer

        request.getfixturevalue("aws_credentials")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        app.config.update(s3_settings(endpoint, make_bucket(endpoint)))
        storage.init_app(app)
        stop_moto(server)
    else:
        app.config.update(STORAGE_LOCAL_DIR=str(tmp_path / "media"))
        storage.init_app(app)
        (tmp_path / "media").write_text("the store's folder is unusable")

    with pytest.raises(StorageUnavailable, match="could not be reached, so nothing was saved"):
        creatives.create_creative("banner", operator, program, details(), upload())
    db.session.rollback()
    assert counts(db) == (0, 0)

    if storage_backend == "s3":
        # moto keeps its buckets in the process: a server on a new port shows the bucket as it is.
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            app.config["S3_ENDPOINT_URL"] = f"http://{host}:{port}"
            storage.init_app(app)
            assert app.extensions["storage"].keys() == []
        finally:
            stop_moto(server)
    else:
        assert (tmp_path / "media").read_text() == "the store's folder is unusable"


def test_commit_that_never_happens_takes_the_object_with_it(store, ctx, db, operator, program):
    creative = creatives.create_creative("banner", operator, program, details(), upload())
    key = creative.current.file_key
    assert store.exists(key)
    db.session.rollback()  # e.g. the commit failed, or a later step raised
    assert not store.exists(key)
    assert counts(db) == (0, 0)


# --- versions ---------------------------------------------------------------------------


def test_replacing_a_banner_keeps_history_and_partners_get_the_newest(store, ctx, db, operator, program):
    creative = make_banner(operator, program)
    first_key = creative.current.file_key
    creatives.replace_file(creative, operator, upload(png((728, 90)), "leaderboard.png"), "wider")
    db.session.commit()
    db.session.expire_all()
    creative = db.session.get(Creative, creative.id)
    assert creative.current_version == 2
    assert (creative.current.width, creative.current.height, creative.current.note) == (728, 90, "wider")
    assert [v.number for v in creative.versions] == [2, 1]
    assert store.exists(first_key) and store.exists(creative.current.file_key)
    assert creative.status == "published"


def test_bad_replacement_keeps_the_current_version(app, ctx, db, operator, program):
    store = app.extensions["storage"]
    creative = make_banner(operator, program)
    db.session.commit()
    with pytest.raises(InvalidFile):
        creatives.replace_file(creative, operator, upload(SVG_WITH_SCRIPT, "x.png"))
    db.session.rollback()
    assert creative.current_version == 1
    assert len(store.keys()) == 1


def test_text_edits_become_versions_and_detail_edits_do_not(ctx, db, operator, program):
    creative = make_text(operator, program)
    data = details(
        "Renamed", ("seo", "social"), headline="Sleep well outside", body="Our favourite tent: {link}"
    )
    creatives.update_creative(creative, operator, program, data)
    assert creative.current_version == 2
    assert creative.current.body == "Our favourite tent: {link}"
    assert creative.name == "Renamed"
    assert creative.versions[-1].body == "Our favourite tent this year: {link}"
    creatives.update_creative(
        creative, operator, program, details("Renamed again", ("seo",), **_content(creative))
    )
    assert creative.current_version == 2  # only details changed
    events = db.session.scalars(
        sa.select(AuditEvent.action).where(AuditEvent.subject_type == "creative")
    ).all()
    assert events.count("creative.updated") == 2


def _content(creative):
    return {"headline": creative.current.headline, "body": creative.current.body}


def test_text_edit_of_a_banner_version_shares_the_file(ctx, db, operator, program):
    creative = make_banner(operator, program)
    key = creative.current.file_key
    creatives.update_creative(creative, operator, program, details("New name"))
    assert creative.current_version == 1  # banners have no text content; the name is a detail
    assert creative.current.file_key == key


# --- publishing -------------------------------------------------------------------------------


def test_publish_archive_and_publish_again(ctx, db, operator, program):
    creative = make_text(operator, program, publish=False)
    creatives.set_creative_status(creative, operator, "publish")
    assert creative.status == "published" and creative.published_at is not None
    with pytest.raises(InvalidTransition, match="published cannot be changed"):
        creatives.set_creative_status(creative, operator, "publish")
    creatives.set_creative_status(creative, operator, "archive")
    with pytest.raises(InvalidTransition, match="archived cannot be changed"):
        creatives.set_creative_status(creative, operator, "archive")
    creatives.set_creative_status(creative, operator, "publish")
    assert creative.status == "published"
    actions = db.session.scalars(
        sa.select(AuditEvent.action)
        .where(AuditEvent.subject_type == "creative", AuditEvent.subject_id == creative.id)
        .order_by(AuditEvent.id)
    ).all()
    assert actions == ["creative.created", "creative.publish", "creative.archive", "creative.publish"]


def test_publishing_tells_partners_in_its_channels_only(monkeypatch, ctx, db, operator, program):
    social = PartnerFactory(channels=["social", "seo"])
    PartnerFactory(channels=["email"])  # another channel
    suspended = PartnerFactory(channels=["social"], status=PartnerStatus.SUSPENDED)
    PartnerFactory(channels=["social"], status=PartnerStatus.APPLIED)  # not in the portal yet
    sent = []
    monkeypatch.setattr(realtime, "notify", lambda pid, event, payload: sent.append((pid, event, payload)))
    creative = make_text(operator, program, channels=("social",), publish=False)
    assert sent == []  # drafts are not announced
    creatives.set_creative_status(creative, operator, "publish")
    payload = {"creative": creative.id, "action": "published", "kind": "text", "name": creative.name}
    assert sorted(sent, key=lambda s: s[0]) == [
        (social.id, "creative", payload),
        (suspended.id, "creative", payload),
    ]
    sent.clear()
    creatives.update_creative(
        creative, operator, program, details(creative.name, ("social",), body="New {link}")
    )
    assert {s[2]["action"] for s in sent} == {"updated"} and len(sent) == 2


# --- bulk upload ---------------------------------------------------------------------------


def test_bulk_upload_takes_the_good_files_and_explains_the_bad(store, ctx, db, operator, program):
    results = creatives.bulk_upload_banners(
        operator,
        program,
        [
            upload(png((300, 250)), "summer_sale-300x250.png"),
            upload(WINDOWS_PROGRAM, "setup.png"),
            upload(png((728, 90)), "leaderboard.webp"),
        ],
        details("", ("social", "ads"), campaign="summer"),
    )
    db.session.commit()
    assert [r.filename for r in results] == ["summer_sale-300x250.png", "setup.png", "leaderboard.webp"]
    good = [r.creative for r in results if r.creative]
    assert [c.name for c in good] == ["Summer sale 300x250", "Leaderboard"]
    assert all(c.channels == ["social", "ads"] and c.campaign == "summer" for c in good)
    assert "Windows program" in results[1].error
    assert counts(db) == (2, 2)
    assert len(store.keys()) == 2


def test_bulk_upload_limits_and_shared_details(app, ctx, db, operator, program):
    app.config["CREATIVE_BULK_MAX_FILES"] = 2
    with pytest.raises(InvalidFile, match="At most 2 files at once"):
        creatives.bulk_upload_banners(operator, program, [upload()] * 3, details(""))
    with pytest.raises(DomainError, match="channel"):
        creatives.bulk_upload_banners(operator, program, [upload()], details("", ()))
    assert counts(db) == (0, 0)


# --- reading and the partner's code ----------------------------------------------------------


def test_library_shows_published_only_with_filters(ctx, db, operator, program):
    social = make_banner(operator, program, name="Social square", channels=("social",), campaign="summer")
    seo = make_text(operator, program, name="Review copy", channels=("seo",))
    make_text(operator, program, name="Draft copy", channels=("social",), publish=False)
    archived = make_text(operator, program, name="Old copy", channels=("social",))
    creatives.set_creative_status(archived, operator, "archive")
    german = make_text(operator, program, name="Zelt", channels=("seo",), body="Zum Zelt: {link}")
    german.language = "de"
    db.session.flush()

    def names(**filters):
        return [c.name for c in db.session.scalars(creatives.library_query(**filters)).unique()]

    assert sorted(names()) == ["Review copy", "Social square", "Zelt"]
    assert names(channel="social") == ["Social square"]
    assert names(kind="banner") == ["Social square"]
    assert names(campaign="summer") == [social.name]
    assert names(language="de") == ["Zelt"]
    assert names(search="ZUM zelt") == ["Zelt"]
    assert names(search="review") == [seo.name]
    assert creatives.published_creative(archived.id) is None


def test_partner_code_for_each_kind_carries_their_link(ctx, db, operator, program):
    link = "https://portal.example/go/pat?creative=7"
    banner = make_banner(operator, program, name='Big "sale" <now>')
    code = creatives.code_for(banner, link=link, image_url="https://portal.example/media/banners/7")
    assert code.embed_html == (
        '<a href="https://portal.example/go/pat?creative=7" target="_blank" rel="sponsored noopener">'
        '<img src="https://portal.example/media/banners/7" width="300" height="250" '
        'alt="Big &quot;sale&quot; &lt;now&gt;" style="border:0;max-width:100%;height:auto"></a>'
    )
    text = creatives.code_for(make_text(operator, program), link=link)
    assert text.text == "Sleep well outside\n\nOur favourite tent this year: " + link
    email = creatives.create_creative(
        "email", operator, program, details("Mail", ("email",), subject="For {link}", body="Hi!\n{link}\nBye")
    )
    code = creatives.code_for(email, link=link)
    assert (code.subject, code.text) == (f"For {link}", f"Hi!\n{link}\nBye")
    assert creatives.download_name(banner) == "big-sale-now-300x250.png"


def test_names_from_files():
    assert creatives.name_from_filename("summer_sale-300x250.png") == "Summer sale 300x250"
    assert creatives.name_from_filename("banner") == "Banner"


def test_copy_text_fills_in_the_partners_coupon_code(ctx, db, operator, program):
    link = "https://portal.example/go/pat?creative=7"
    text = creatives.create_creative(
        "text",
        operator,
        program,
        details("Podcast", ("social",), headline="Code {coupon}", body="Use {coupon} at {link}"),
    )
    code = creatives.code_for(text, link=link, coupon="PAT10")
    assert code.text == f"Code PAT10\n\nUse PAT10 at {link}"
    assert not code.needs_coupon
    without = creatives.code_for(text, link=link)
    assert without.text == f"Code {{coupon}}\n\nUse {{coupon}} at {link}"
    assert without.needs_coupon
    email = creatives.create_creative(
        "email", operator, program, details("Mail", ("email",), subject="{coupon} inside", body="{link}")
    )
    assert creatives.code_for(email, link=link, coupon="PAT10").subject == "PAT10 inside"
    plain = creatives.code_for(make_text(operator, program), link=link)
    assert not plain.needs_coupon
