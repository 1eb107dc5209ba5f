"""Operator console forms."""

from __future__ import annotations

from zoneinfo import available_timezones

from babel.numbers import list_currencies
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired, MultipleFileField
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    EmailField,
    IntegerField,
    RadioField,
    SelectField,
    StringField,
)
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange, Optional

from portal.forms import (
    ConfirmForm,
    MultiCheckboxField,
    PercentField,
    TextAreaField,
    as_choices,
    channel_choices,
    language_choices,
)
from portal.i18n import locale_choices

__all__ = [
    "CREATIVE_FORMS",
    "AnnouncementForm",
    "ApiKeyForm",
    "BulkBannerForm",
    "ConfirmForm",
    "ConversionRejectForm",
    "CounterOfferForm",
    "DeclineRequestForm",
    "FailureForm",
    "ManagerForm",
    "NewMessageForm",
    "PaymentForm",
    "RejectForm",
    "ReplaceFileForm",
    "SettingsForm",
    "SlugForm",
    "SuspendForm",
    "TagsForm",
    "TeamMemberForm",
    "TemplateForm",
    "ThreadReplyForm",
]
from portal.models import CommissionType, PayoutSchedule, Program, Role
from portal.money import parse_amount, parse_rate_bp, rate_text, to_decimal_string
from portal.services.program import ProgramSettings

_reason = [
    DataRequired(_l("Say why, so the partner knows.")),
    Length(max=1000, message=_l("At most %(max)d characters.")),
]


class RejectForm(FlaskForm):
    reason = TextAreaField(
        _l("Reason shown to the applicant"),
        validators=[
            DataRequired(_l("Say why, so the applicant knows.")),
            Length(max=1000, message=_l("At most %(max)d characters.")),
        ],
    )


class SuspendForm(FlaskForm):
    reason = TextAreaField(_l("Reason shown to the partner"), validators=_reason)


WEEKDAYS = as_choices(
    [
        (0, _l("Monday")),
        (1, _l("Tuesday")),
        (2, _l("Wednesday")),
        (3, _l("Thursday")),
        (4, _l("Friday")),
        (5, _l("Saturday")),
        (6, _l("Sunday")),
    ]
)


class SettingsForm(FlaskForm):
    name = StringField(
        _l("Program name"),
        validators=[
            DataRequired(_l("Name the program.")),
            Length(max=120, message=_l("At most %(max)d characters.")),
        ],
    )
    currency = SelectField(_l("Currency"), validators=[DataRequired()])
    timezone = SelectField(
        _l("Time zone"),
        validators=[DataRequired()],
        description=_l("Days, months and payout dates follow this zone."),
    )
    default_locale = SelectField(
        _l("Default language"),
        validators=[Optional()],  # not sent: unchanged
        description=_l(
            "For visitors whose browser asks for no language the portal speaks, and for messages and "
            "e-mails to partners who have not chosen one."
        ),
    )
    cookie_window_days = IntegerField(
        _l("Cookie window (days)"),
        validators=[
            InputRequired(_l("Enter a number of days.")),
            NumberRange(1, 365, _l("From %(min)s to %(max)s days.")),
        ],
        description=_l("How long after a click a signup or sale still counts for the partner."),
    )
    hold_period_days = IntegerField(
        _l("Hold period (days)"),
        validators=[
            InputRequired(_l("Enter a number of days (0 for none).")),
            NumberRange(0, 365, _l("From %(min)s to %(max)s days.")),
        ],
        description=_l("Commissions stay pending this long (your refund window) before they are confirmed."),
    )
    allowed_domains = TextAreaField(
        _l("Allowed landing domains"),
        validators=[DataRequired(_l("List at least one domain.")), Length(max=5000)],
        description=_l(
            "One per line. A domain also allows its subdomains: example.com allows shop.example.com."
        ),
    )
    default_landing_url = StringField(
        _l("Default landing page"),
        validators=[DataRequired(_l("Enter the page shoppers land on.")), Length(max=2000)],
    )
    minimum_payout = StringField(
        _l("Minimum payout"),
        validators=[DataRequired(_l("Enter an amount, e.g. 50.00.")), Length(max=20)],
        description=_l("Smaller balances carry over to the next payout."),
    )
    payout_schedule = SelectField(
        _l("Payout schedule"),
        choices=as_choices(
            [
                (PayoutSchedule.MONTHLY.value, _l("Monthly")),
                (PayoutSchedule.BIWEEKLY.value, _l("Every two weeks")),
                (PayoutSchedule.WEEKLY.value, _l("Weekly")),
            ]
        ),
    )
    payout_day_of_month = IntegerField(
        _l("Day of the month (monthly)"),
        validators=[Optional(), NumberRange(1, 28, _l("From %(min)s to %(max)s."))],
    )
    payout_weekday = SelectField(_l("Weekday (weekly, every two weeks)"), choices=WEEKDAYS, coerce=int)
    commission_type = RadioField(
        _l("Base commission"),
        choices=as_choices(
            [
                (CommissionType.PERCENT.value, _l("Percent of the sale")),
                (CommissionType.FLAT.value, _l("Fixed amount per sale")),
            ]
        ),
    )
    ref_param = StringField(
        _l("Partner code parameter"),
        validators=[DataRequired(), Length(max=32)],
        description=_l("Added to landing pages as ?ref=CODE."),
    )
    click_id_param = StringField(
        _l("Click id parameter"),
        validators=[DataRequired(), Length(max=32)],
        description=_l("Added to landing pages as ?click_id=ID; send it back in the API."),
    )
    fraud_self_referral = BooleanField(_l("Refuse self-referrals (the partner's own e-mail or address)"))
    fraud_click_flood = BooleanField(_l("Flag click flooding"))
    click_flood_per_minute = IntegerField(
        _l("Clicks per minute from one address on one link before flagging"),
        validators=[
            InputRequired(_l("Enter a number.")),
            NumberRange(1, 10000, _l("From %(min)s to %(max)s.")),
        ],
    )
    fraud_duplicate_order = BooleanField(_l("Hold suspected duplicate orders for review"))
    allow_withdrawals = BooleanField(
        _l("Let partners request their confirmed balance before the payout date")
    )
    duplicate_window_minutes = IntegerField(
        _l("Same customer and amount within (minutes)"),
        validators=[
            InputRequired(_l("Enter a number.")),
            NumberRange(1, 10080, _l("From %(min)s to %(max)s.")),
        ],
    )
    require_team_2fa = BooleanField(
        _l("Two-factor sign-in required for the team"),
        description=_l(
            "Managers and admins set up a code app at their next sign-in before they use the console."
        ),
    )
    commission_percent = StringField(_l("Percent"), validators=[Optional(), Length(max=10)])
    commission_flat = StringField(_l("Fixed amount"), validators=[Optional(), Length(max=20)])
    max_sale = StringField(
        _l("Maximum sale"),
        validators=[DataRequired(_l("Enter an amount, e.g. 1000000.00.")), Length(max=20)],
        description=_l("The API refuses a larger sale (a typo in an integration must not pay millions)."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency.choices = sorted(list_currencies())
        self.timezone.choices = sorted(available_timezones())
        self.default_locale.choices = locale_choices()
        self.minimum_payout_minor: int | None = None
        self.commission_percent_bp: int | None = None
        self.commission_flat_minor: int | None = None
        self.max_sale_minor: int | None = None

    @classmethod
    def from_program(cls, program: Program) -> SettingsForm:
        monthly = program.payout_schedule == PayoutSchedule.MONTHLY
        return cls(
            name=program.name,
            currency=program.currency,
            timezone=program.timezone,
            default_locale=program.default_locale,
            cookie_window_days=program.cookie_window_days,
            hold_period_days=program.hold_period_days,
            allowed_domains="\n".join(program.allowed_domains),
            default_landing_url=program.default_landing_url,
            minimum_payout=to_decimal_string(program.minimum_payout_minor, program.currency),
            payout_schedule=program.payout_schedule,
            payout_day_of_month=program.payout_day if monthly else 15,
            payout_weekday=0 if monthly else program.payout_day,
            commission_type=program.commission_type,
            commission_percent=rate_text(program.commission_percent_bp),
            commission_flat=to_decimal_string(program.commission_flat_minor, program.currency),
            ref_param=program.ref_param,
            click_id_param=program.click_id_param,
            fraud_self_referral=program.fraud_self_referral,
            fraud_click_flood=program.fraud_click_flood,
            click_flood_per_minute=program.click_flood_per_minute,
            fraud_duplicate_order=program.fraud_duplicate_order,
            duplicate_window_minutes=program.duplicate_window_minutes,
            allow_withdrawals=program.allow_withdrawals,
            max_sale=to_decimal_string(program.max_sale_minor, program.currency),
            require_team_2fa=program.require_team_2fa,
        )

    def _amount(self, field, required: bool) -> int | None:
        text = (field.data or "").strip()
        if not text:
            if required:
                field.errors.append(_l("Enter an amount, e.g. 50.00."))
            return None
        try:
            value = parse_amount(text, self.currency.data or "USD")
        except ValueError:
            field.errors.append(_l("Enter a plain amount such as 50.00 (no currency sign)."))
            return None
        if value < 0:
            field.errors.append(_l("The amount cannot be negative."))
            return None
        return value

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        self.minimum_payout_minor = self._amount(self.minimum_payout, required=True)
        self.max_sale_minor = self._amount(self.max_sale, required=True)
        if self.payout_schedule.data == PayoutSchedule.MONTHLY and not self.payout_day_of_month.data:
            self.payout_day_of_month.errors.append(_l("Choose a day from 1 to 28."))
        if self.commission_type.data == CommissionType.PERCENT:
            try:
                self.commission_percent_bp = parse_rate_bp(self.commission_percent.data)
            except ValueError:
                self.commission_percent.errors.append(
                    _l("Enter a percent from 0 to 100, at most two decimals (e.g. 12.5).")
                )
        elif self.commission_type.data == CommissionType.FLAT:
            self.commission_flat_minor = self._amount(self.commission_flat, required=True)
        else:
            self.commission_type.errors.append(_l("Choose how the base commission is counted."))
        return ok and not any(f.errors for f in self)

    def to_settings(self, program: Program) -> ProgramSettings:
        monthly = self.payout_schedule.data == PayoutSchedule.MONTHLY
        percent = self.commission_type.data == CommissionType.PERCENT
        return ProgramSettings(
            name=self.name.data.strip(),
            currency=self.currency.data,
            timezone=self.timezone.data,
            default_locale=self.default_locale.data or program.default_locale,
            cookie_window_days=self.cookie_window_days.data,
            hold_period_days=self.hold_period_days.data,
            allowed_domains=[line for line in self.allowed_domains.data.splitlines() if line.strip()],
            default_landing_url=self.default_landing_url.data.strip(),
            minimum_payout_minor=self.minimum_payout_minor,
            payout_schedule=self.payout_schedule.data,
            payout_day=self.payout_day_of_month.data if monthly else self.payout_weekday.data,
            commission_type=self.commission_type.data,
            commission_percent_bp=self.commission_percent_bp if percent else program.commission_percent_bp,
            commission_flat_minor=program.commission_flat_minor if percent else self.commission_flat_minor,
            ref_param=self.ref_param.data.strip(),
            click_id_param=self.click_id_param.data.strip(),
            fraud_self_referral=self.fraud_self_referral.data,
            fraud_click_flood=self.fraud_click_flood.data,
            click_flood_per_minute=self.click_flood_per_minute.data,
            fraud_duplicate_order=self.fraud_duplicate_order.data,
            duplicate_window_minutes=self.duplicate_window_minutes.data,
            allow_withdrawals=self.allow_withdrawals.data,
            max_sale_minor=self.max_sale_minor,
            require_team_2fa=self.require_team_2fa.data,
        )


class TeamMemberForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[
            DataRequired(_l("Enter a name.")),
            Length(max=120, message=_l("At most %(max)d characters.")),
        ],
    )
    email = EmailField(
        _l("E-mail"),
        validators=[
            DataRequired(_l("Enter an e-mail address.")),
            Length(max=254, message=_l("At most %(max)d characters.")),
            Email(_l("Enter a valid e-mail address."), check_deliverability=False),
        ],
    )
    role = SelectField(
        _l("Role"),
        choices=as_choices(
            [
                (Role.MANAGER.value, _l("Manager — runs the program day to day")),
                (Role.ADMIN.value, _l("Admin — also settings, team and API keys")),
            ]
        ),
    )


class ConversionRejectForm(FlaskForm):
    reason = SelectField(_l("Reason"), validators=[DataRequired(_l("Choose a reason."))])
    note = TextAreaField(
        _l("Note for the partner"),
        validators=[Optional(), Length(max=1000, message=_l("At most %(max)d characters."))],
        description=_l("Required when the reason is “other”."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from portal.models import RejectionReason
        from portal.services.tracking import reason_label

        self.reason.choices = as_choices(
            [("", _l("Choose…"))] + [(r.value, reason_label(r)) for r in RejectionReason]
        )


class ApiKeyForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Name the key, e.g. “shop backend”.")), Length(max=120)],
    )


class SlugForm(FlaskForm):
    slug = StringField(
        _l("Custom code"),
        validators=[
            DataRequired(_l("Enter a code.")),
            Length(max=64, message=_l("At most %(max)d characters.")),
        ],
        description=_l("Lower-case letters, digits and dashes, e.g. summer-sale."),
    )


class PaymentForm(FlaskForm):
    reference = StringField(
        _l("Payment reference"),
        validators=[DataRequired(_l("Enter the payment reference.")), Length(max=128)],
        description=_l("The transfer or PayPal batch id the partner can look up."),
    )
    paid_on = DateField(_l("Paid on"), validators=[DataRequired(_l("Enter the date it was paid."))])


class FailureForm(FlaskForm):
    reason = TextAreaField(
        _l("Why the payment failed"),
        validators=[DataRequired(_l("Say why the payment failed.")), Length(max=1000)],
    )


# --- messaging --------------------------------------------------------------------------------

_message_body = [
    DataRequired(_l("Write a message first.")),
    Length(max=10_000, message=_l("At most %(max)d characters.")),
]
_markdown_help = _l("**bold**, *italics*, [links](https://…), lists and `code` work.")


class ThreadReplyForm(FlaskForm):
    body = TextAreaField(_l("Your answer"), validators=_message_body, description=_markdown_help)


class NewMessageForm(FlaskForm):
    subject = StringField(
        _l("Subject"),
        validators=[
            DataRequired(_l("Give the conversation a subject.")),
            Length(max=200, message=_l("At most %(max)d characters.")),
        ],
    )
    body = TextAreaField(_l("Message"), validators=_message_body, description=_markdown_help)


class TagsForm(FlaskForm):
    tags = StringField(
        _l("Tags"),
        validators=[Length(max=1000, message=_l("At most %(max)d characters."))],
        description=_l("Separated by commas, e.g. youtube, top-50. Use them to target announcements."),
    )


class ManagerForm(FlaskForm):
    manager = SelectField(_l("Manager"), coerce=int)

    def __init__(self, *args, operators=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.manager.choices = as_choices(
            [(0, _l("Nobody in particular"))] + [(u.id, u.name) for u in operators]
        )


class AnnouncementForm(FlaskForm):
    title = StringField(
        _l("Title"),
        validators=[
            DataRequired(_l("Give the announcement a title.")),
            Length(max=200, message=_l("At most %(max)d characters.")),
        ],
    )
    body = TextAreaField(
        _l("Announcement"),
        validators=[
            DataRequired(_l("Write the announcement.")),
            Length(max=20_000, message=_l("At most %(max)d characters.")),
        ],
        description=_markdown_help,
    )
    audience_kind = RadioField(_l("Who gets it"), default="all")
    tags = StringField(
        _l("Tags (for “Partners with a tag”)"),
        validators=[Optional(), Length(max=1000)],
        description=_l("Separated by commas; partners with any of them get it."),
    )
    partners = TextAreaField(
        _l("Partners (for “Named partners”)"),
        validators=[Optional(), Length(max=5000)],
        description=_l("Partner codes or e-mails, separated by commas or one per line."),
    )
    tiers = StringField(
        _l("Tiers (for “Partners in a tier”)"),
        validators=[Optional(), Length(max=1000)],
        description=_l("Tier names separated by commas; partners in any of them get it."),
    )
    pinned = BooleanField(_l("Pin it at the top of partners' dashboards"))
    when = RadioField(
        _l("When"),
        default="now",
        choices=as_choices(
            [("now", _l("Publish now")), ("schedule", _l("At a set time")), ("draft", _l("Keep as a draft"))]
        ),
    )
    publish_at = DateTimeLocalField(
        _l("Publish at"),
        format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
        validators=[Optional()],
        description=_l("In your time zone (%(zone)s)."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from flask_babel import get_timezone

        from portal.services.announcements import AUDIENCES

        self.audience_kind.choices = as_choices((kind, a.label) for kind, a in AUDIENCES.items())
        self.publish_at.description = _l("In your time zone (%(zone)s).", zone=str(get_timezone()))

    def audience_items(self) -> list[str]:
        from portal.services.announcements import split_list

        if self.audience_kind.data == "tags":
            return split_list(self.tags.data)
        if self.audience_kind.data == "partners":
            return split_list(self.partners.data)
        if self.audience_kind.data == "tiers":
            return split_list(self.tiers.data)
        return []

    def publish_at_utc(self):
        """The entered local time as an aware UTC datetime (None if empty)."""
        from datetime import UTC
        from zoneinfo import ZoneInfo

        from flask_babel import get_timezone

        value = self.publish_at.data
        if value is None:
            return None
        # Babel hands out pytz zones; zoneinfo applies the right offset with replace().
        return value.replace(tzinfo=ZoneInfo(str(get_timezone()))).astimezone(UTC)


class TemplateForm(FlaskForm):
    enabled = BooleanField(_l("Send this message automatically"))
    subject = StringField(
        _l("Subject"),
        validators=[
            DataRequired(_l("Write a subject.")),
            Length(max=200, message=_l("At most %(max)d characters.")),
        ],
    )
    body = TextAreaField(
        _l("Message"),
        validators=[
            DataRequired(_l("Write the message.")),
            Length(max=10_000, message=_l("At most %(max)d characters.")),
        ],
        description=_markdown_help,
    )
    quiet_days = IntegerField(
        _l("Days without a click before the wake-up"),
        validators=[Optional(), NumberRange(1, 365, _l("From %(min)s to %(max)s days."))],
    )


# --- creatives ------------------------------------------------------------------------

_at_most = lambda n: Length(max=n, message=_l("At most %(max)d characters."))  # noqa: E731
_LINK_HELP = _l("Write {link} where the partner's own tracking link should go.")


class CreativeForm(FlaskForm):
    """What every kind of creative has."""

    name = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Name the creative.")), _at_most(120)],
        description=_l("Partners see it; it is also the banner's alt text."),
    )
    channels = MultiCheckboxField(
        _l("Channels"),
        choices=channel_choices(),
        validators=[DataRequired(_l("Choose at least one channel."))],
    )
    campaign = StringField(
        _l("Campaign (optional)"),
        validators=[Optional(), _at_most(64)],
        description=_l("A short tag partners can filter by, e.g. summer-sale."),
    )
    language = SelectField(_l("Language"), default="en")
    description = TextAreaField(
        _l("Description (optional)"),
        validators=[Optional(), _at_most(2000)],
        description=_l("When and where to use it; shown to partners."),
    )
    note = StringField(
        _l("Change note (optional)"),
        validators=[Optional(), _at_most(200)],
        description=_l("Kept in the version history."),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.language.choices = language_choices()


class BannerForm(CreativeForm):
    pass


class NewBannerForm(BannerForm):
    file = FileField(
        _l("Banner image"),
        validators=[FileRequired(_l("Choose the banner image to upload."))],
        description=_l("PNG, JPEG, GIF or WebP. The type is read from the file itself, not its name."),
    )


class TextCopyForm(CreativeForm):
    headline = StringField(_l("Headline (optional)"), validators=[Optional(), _at_most(200)])
    body = TextAreaField(
        _l("Text"),
        validators=[DataRequired(_l("Write the text partners will post.")), _at_most(10000)],
        description=_LINK_HELP,
    )
    call_to_action = StringField(
        _l("Call to action (optional)"),
        validators=[Optional(), _at_most(200)],
        description=_l("E.g. “Shop the sale: {link}”."),
    )


class LandingPageForm(CreativeForm):
    url = StringField(
        _l("Landing page address"),
        validators=[DataRequired(_l("Enter the page's address.")), _at_most(2000)],
        description=_l("A page on one of the program's allowed domains."),
    )


class NewLandingPageForm(LandingPageForm):
    file = FileField(
        _l("Screenshot (optional)"),
        description=_l("PNG, JPEG, GIF or WebP. Partners see it as a preview."),
    )


class EmailTemplateForm(CreativeForm):
    subject = StringField(
        _l("Subject line"), validators=[DataRequired(_l("Write the e-mail's subject line.")), _at_most(200)]
    )
    body = TextAreaField(
        _l("E-mail text"),
        validators=[DataRequired(_l("Write the e-mail's text.")), _at_most(50000)],
        description=_LINK_HELP,
    )


class VideoLinkForm(CreativeForm):
    url = StringField(
        _l("Video address"),
        validators=[DataRequired(_l("Enter the video's address.")), _at_most(2000)],
        description=_l("E.g. the video on YouTube or Vimeo."),
    )


# kind: (form for a new creative, form for editing one)
CREATIVE_FORMS = {
    "banner": (NewBannerForm, BannerForm),
    "text": (TextCopyForm, TextCopyForm),
    "landing": (NewLandingPageForm, LandingPageForm),
    "email": (EmailTemplateForm, EmailTemplateForm),
    "video": (VideoLinkForm, VideoLinkForm),
}


class ReplaceFileForm(FlaskForm):
    file = FileField(
        _l("New image"),
        validators=[FileRequired(_l("Choose the new image to upload."))],
        description=_l("PNG, JPEG, GIF or WebP. The current one stays in the version history."),
    )
    note = StringField(_l("Change note (optional)"), validators=[Optional(), _at_most(200)])


class BulkBannerForm(FlaskForm):
    files = MultipleFileField(
        _l("Banner images"),
        validators=[FileRequired(_l("Choose one or more images to upload."))],
        description=_l("Several at once; each becomes a draft banner named after its file."),
    )
    channels = CreativeForm.channels
    campaign = CreativeForm.campaign
    language = SelectField(_l("Language"), default="en")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.language.choices = language_choices()


class CounterOfferForm(FlaskForm):
    """A custom campaign request: offer the partner another rate."""

    rate = PercentField(
        _l("Rate to offer (%)"),
        validators=[DataRequired(_l("Enter a rate in percent, e.g. 12.5."))],
        description=_l("Percent of each sale through the campaign's link."),
    )
    note = TextAreaField(
        _l("Message to the partner (optional)"),
        validators=[Optional(), Length(max=2000, message=_l("At most %(max)d characters."))],
    )


class DeclineRequestForm(FlaskForm):
    reason = TextAreaField(
        _l("Reason shown to the partner"),
        validators=[
            DataRequired(_l("Say why, so the partner knows.")),
            Length(max=2000, message=_l("At most %(max)d characters.")),
        ],
    )
