"""Forms of the public pages: they check shape; services check rules."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import URL, DataRequired, Email, EqualTo, Length, Optional

from portal.forms import MultiCheckboxField, as_choices, at_most, channel_choices, country_choices
from portal.i18n import locale_choices, timezone_choices

_email = [
    DataRequired(_l("Enter your e-mail address.")),
    at_most(254),
    Email(_l("Enter a valid e-mail address."), check_deliverability=False),
]


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=_email)
    password = PasswordField(
        _l("Password"),
        validators=[DataRequired(_l("Enter your password.")), Length(max=200)],
    )
    remember = BooleanField(_l("Keep me signed in on this device"))


class _NewPasswordMixin:
    password = PasswordField(
        _l("Password"),
        validators=[DataRequired(_l("Choose a password.")), at_most(200)],
        description=_l("At least 10 characters; a few words together work well."),
    )
    confirm = PasswordField(
        _l("Repeat the password"),
        validators=[
            DataRequired(_l("Repeat the password.")),
            EqualTo("password", _l("The two passwords differ.")),
        ],
    )


class ApplyForm(_NewPasswordMixin, FlaskForm):
    name = StringField(
        _l("Your name or company"),
        validators=[DataRequired(_l("Tell us who you are.")), at_most(120)],
    )
    email = EmailField(_l("E-mail"), validators=_email)
    website = StringField(
        _l("Website"),
        validators=[
            Optional(),
            at_most(500),
            URL(require_tld=True, message=_l("Enter a full address such as https://example.com.")),
        ],
    )
    social_profiles = TextAreaField(
        _l("Social profiles"),
        validators=[Optional(), at_most(2000)],
        description=_l("One link or handle per line."),
    )
    channels = MultiCheckboxField(
        _l("How you promote"),
        choices=channel_choices(),
        validators=[DataRequired(_l("Pick at least one channel."))],
    )
    promotion_description = TextAreaField(
        _l("Tell us about your audience and how you would promote us"),
        validators=[
            DataRequired(_l("A few sentences help us approve you faster.")),
            Length(min=20, max=2000, message=_l("Between %(min)d and %(max)d characters.")),
        ],
    )
    country = SelectField(
        _l("Country"),
        validators=[DataRequired(_l("Choose your country."))],
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Country names in the reader's language, so they are chosen per request.
        self.country.choices = as_choices([("", _l("Choose…")), *country_choices()])

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        if not (self.website.data or "").strip() and not (self.social_profiles.data or "").strip():
            self.website.errors = [
                *self.website.errors,
                _l("Give a website or at least one social profile."),
            ]
            ok = False
        return ok


class ForgotPasswordForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=_email)


class ResetPasswordForm(_NewPasswordMixin, FlaskForm):
    pass


_code = [DataRequired(_l("Enter the code.")), at_most(40)]


class SecondFactorForm(FlaskForm):
    code = StringField(
        _l("Code"),
        validators=_code,
        description=_l("The 6-digit code from your authenticator app, or one of your recovery codes."),
    )


class ChangePasswordForm(_NewPasswordMixin, FlaskForm):
    current_password = PasswordField(
        _l("Current password"),
        validators=[DataRequired(_l("Enter your current password.")), Length(max=200)],
    )
    password = PasswordField(
        _l("New password"),
        validators=[DataRequired(_l("Choose a password.")), at_most(200)],
        description=_l("At least 10 characters; a few words together work well."),
    )


class TwoFactorCodeForm(FlaskForm):
    code = StringField(
        _l("Code from the app"),
        validators=_code,
        description=_l("The 6-digit code your authenticator app shows now."),
    )


class TwoFactorDisableForm(FlaskForm):
    password = PasswordField(
        _l("Current password"),
        validators=[DataRequired(_l("Enter your current password.")), Length(max=200)],
    )
    code = StringField(
        _l("Code from the app or a recovery code"),
        validators=_code,
    )


class AccountForm(FlaskForm):
    """The signed-in person's own language and time zone (empty: the automatic choice)."""

    locale = SelectField(_l("Language"), validators=[Optional()])
    timezone = SelectField(_l("Time zone"), validators=[Optional()])

    def __init__(self, *args, program_zone: str = "UTC", **kwargs):
        super().__init__(*args, **kwargs)
        self.locale.choices = as_choices([("", _l("As my browser asks")), *locale_choices()])
        self.timezone.choices = as_choices(
            [
                ("", _l("The program's (%(zone)s)", zone=program_zone)),
                *timezone_choices(),
            ]
        )


class LanguageForm(FlaskForm):
    """The language switch in the header."""

    locale = SelectField(validators=[DataRequired()])
    next = StringField(validators=[Optional()])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.locale.choices = locale_choices()
