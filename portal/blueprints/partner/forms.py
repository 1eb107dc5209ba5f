"""Partner portal forms."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    IntegerField,
    PasswordField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from portal.forms import PercentField, as_choices, at_most, channel_choices, country_choices

_max = at_most(64)


class LinkForm(FlaskForm):
    label = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Name the link so you can find it later.")), Length(max=120)],
        description=_l("For you only, e.g. “Instagram bio” or “Tent review”."),
    )
    channel = SelectField(_l("Channel"), choices=channel_choices())
    destination_url = StringField(
        _l("Page it opens"),
        validators=[Optional(), at_most(2000)],
        description=_l("Leave empty for the shop's home page. Must be a page on the shop's own site."),
    )
    campaign = StringField(_l("Campaign (optional)"), validators=[Optional(), _max])
    sub_id = StringField(
        _l("Sub-ID (optional)"),
        validators=[Optional(), _max],
        description=_l("Your own tag to tell placements apart; you can also add ?sub=… to the link."),
    )


class PayoutDetailsForm(FlaskForm):
    method = RadioField(
        _l("How you want to be paid"),
        choices=as_choices(
            [("paypal", _l("PayPal")), ("bank", _l("Bank transfer (IBAN)")), ("other", _l("Other"))]
        ),
        validators=[DataRequired(_l("Choose how you want to be paid."))],
    )
    paypal_email = StringField(_l("PayPal e-mail"), validators=[Optional(), Length(max=254)])
    account_holder = StringField(_l("Account holder"), validators=[Optional(), Length(max=120)])
    iban = StringField(_l("IBAN"), validators=[Optional(), Length(max=42)])
    bic = StringField(_l("BIC / SWIFT (optional)"), validators=[Optional(), Length(max=14)])
    bank_name = StringField(_l("Bank name (optional)"), validators=[Optional(), Length(max=120)])
    other_instructions = TextAreaField(_l("Payment instructions"), validators=[Optional(), Length(max=1000)])
    tax_id = StringField(_l("Tax or VAT number (optional)"), validators=[Optional(), Length(max=64)])
    tax_country = SelectField(_l("Tax country (optional)"), validators=[Optional()])
    current_password = PasswordField(
        _l("Your current password"),
        # Checked by the service after the details (payouts.change_payout_details).
        validators=[Optional()],
        description=_l("Asked again so that nobody else signed in as you can redirect your payouts."),
    )
    # Shown only to partners with two-factor sign-in on (accounts.confirm_identity asks for it).
    code = StringField(
        _l("Code from your authenticator app"),
        validators=[Optional(), Length(max=32)],
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tax_country.choices = as_choices([("", "—"), *country_choices()])


_body_length = at_most(10_000)


class ReplyForm(FlaskForm):
    body = TextAreaField(
        _l("Your message"),
        validators=[DataRequired(_l("Write a message first.")), _body_length],
        description=_l("**bold**, *italics*, [links](https://…), lists and `code` work."),
    )


class NewThreadForm(ReplyForm):
    subject = StringField(
        _l("Subject"),
        validators=[DataRequired(_l("Give the conversation a subject.")), at_most(200)],
    )


def preferences_form(current: dict[str, bool], formdata=None) -> FlaskForm:
    """One switch per kind of e-mail, ticked when it is on."""
    from portal.services.delivery import email_kind_label

    class PreferencesForm(FlaskForm):
        pass

    for kind in current:
        setattr(PreferencesForm, f"email_{kind}", BooleanField(email_kind_label(kind)))
    if formdata is None:
        return PreferencesForm(formdata=None, data={f"email_{k}": v for k, v in current.items()})
    return PreferencesForm()


class CampaignRequestForm(FlaskForm):
    name = StringField(
        _l("Campaign name"),
        validators=[DataRequired(_l("Name the campaign.")), Length(max=120)],
        description=_l("E.g. “Autumn tent guide on my blog”."),
    )
    landing_url = StringField(
        _l("Landing page"),
        validators=[DataRequired(_l("Give the page the campaign should open.")), at_most(2000)],
        description=_l("A page on the shop's own site."),
    )
    desired_rate = PercentField(
        _l("Rate you ask for (%)"),
        validators=[DataRequired(_l("Enter a rate in percent, e.g. 12.5."))],
        description=_l("Percent of each sale, e.g. 12.5."),
    )
    expected_monthly_conversions = IntegerField(
        _l("Sales you expect a month"),
        validators=[
            InputRequired(_l("Enter how many sales a month you expect (0 or more).")),
            NumberRange(min=0, message=_l("Enter how many sales a month you expect (0 or more).")),
        ],
    )
    note = TextAreaField(
        _l("Note for the team (optional)"),
        validators=[Optional(), at_most(2000)],
        description=_l("Where and how you will promote it."),
    )


class DeclineOfferForm(FlaskForm):
    note = TextAreaField(
        _l("Tell the team why (optional)"),
        validators=[Optional(), at_most(2000)],
    )


class CouponRequestForm(FlaskForm):
    code = StringField(
        _l("Code you would like"),
        validators=[DataRequired(_l("Enter the code you would like.")), at_most(40)],
        description=_l("3-40 letters A-Z, digits, - or _, e.g. ANNA10. Shoppers may type it in any case."),
    )
    note = StringField(
        _l("Where you will use it (optional)"),
        validators=[Optional(), at_most(200)],
        description=_l("E.g. “my podcast, episode 12”: it helps the program team say yes."),
    )
