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
        ("unknown coupon; unknown ref", "unknown coupon code; unknown partner code",
         "未知的优惠码；未知的推广代码"),
        ("coupon PAT10 is disabled", "coupon code PAT10 is switched off", "优惠码 PAT10 已停用"),
        ("coupon PAT10 is requested", "coupon code PAT10 is not approved yet", "优惠码 PAT10 尚未批准"),
        ("coupon PAT10 beat an older click of another partner",
         "coupon code PAT10 beat an older click of another partner",
         "优惠码 PAT10 优先于另一位推广伙伴更早的点击"),
        ("first touch: the click beat coupon PAT10", "first touch: the click beat coupon code PAT10",
         "首次触点：点击优先于优惠码 PAT10"),
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
                    "self-referral: the customer's e-mail is the partner's", "; not attributed",
                    "unknown coupon", "beat an older click of another partner",
                    "first touch: the click beat coupon",
                    'f"coupon {code} is {owner.status}"'):  # fmt: skip
        assert written in source, written
