"""The tracking service's attribution notes are stored as written and shown in the reader's language."""

from __future__ import annotations

import pytest
from flask_babel import force_locale

from portal.templating import attribution_note

ZH = "zh_Hans_CN"


@pytest.mark.parametrize(
    ("stored", "english", "chinese"),
    [
        ("unknown click id; unknown ref",
         "unknown click id; unknown partner code", "未知的点击 ID；未知的推广代码"),
        ("click older than the cookie window",
         "click older than the cookie window", "点击早于 Cookie 有效期"),
        ("self-referral: the customer's e-mail is the partner's",
         "self-referral: the customer's e-mail is the partner's", "自我推荐：顾客的邮箱就是推广伙伴的邮箱"),
        ("partner ab12 is suspended; not attributed", "partner ab12 is suspended; not attributed",
         "推广伙伴 ab12 的状态为已暂停；未归属"),
        ("a note from elsewhere", "a note from elsewhere", "a note from elsewhere"),
        (None, "", ""),
    ],
)  # fmt: skip
def test_attribution_notes_read_in_the_readers_language(app, stored, english, chinese):
    with app.test_request_context():
        with force_locale("en"):
            assert attribution_note(stored) == english
        with force_locale(ZH):
            assert attribution_note(stored) == chinese


def test_the_notes_it_knows_are_the_ones_tracking_writes():
    """A note the tracking service writes and this list lacks would show in English."""
    import inspect

    from portal.services import tracking

    source = inspect.getsource(tracking)
    for written in ("unknown click id", "unknown ref", "click older than the cookie window",
                    "self-referral: the customer's e-mail is the partner's", "; not attributed"):  # fmt: skip
        assert written in source, written
