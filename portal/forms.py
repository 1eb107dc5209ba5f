"""Form helpers shared by every blueprint."""

from __future__ import annotations

from functools import cache

from babel import Locale
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    DateField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    ValidationError,
    widgets,
)
from wtforms import TextAreaField as _WtformsTextAreaField
from wtforms.validators import DataRequired, Length, Optional

from portal.errors import DomainError
from portal.formatting import CHANNEL_LABELS
from portal.models import CHANNELS
from portal.money import RateOverLimit, parse_amount, parse_rate_bp


class TextAreaField(_WtformsTextAreaField):
    """A textarea whose line breaks arrive as ``\n``.

    Browsers send a textarea's line breaks as CRLF; kept as typed, an untouched text
    would differ from the stored one and an unchanged save would rewrite it.
    """

    def process_formdata(self, valuelist):
        super().process_formdata(valuelist)
        if isinstance(self.data, str):
            self.data = self.data.replace("\r\n", "\n").replace("\r", "\n")


class ConfirmForm(FlaskForm):
    """A button-only form: carries the CSRF token."""


class MultiCheckboxField(SelectMultipleField):
    """A group of checkboxes posting a list."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


def as_choices(pairs) -> list[SelectChoice]:
    """``(value, label)`` pairs as WTForms choices."""
    return [SelectChoice(value, label) for value, label in pairs]


def channel_choices() -> list[SelectChoice]:
    return as_choices((c, CHANNEL_LABELS[c]) for c in CHANNELS)


_NOT_COUNTRIES = {"EU", "EZ", "UN", "QO", "ZZ", "XA", "XB"}


def country_choices() -> tuple[tuple[str, str], ...]:
    """ISO 3166-1 alpha-2 codes with their names in the reader's language, sorted by name."""
    return _country_choices(str(get_locale() or "en"))


@cache
def _country_choices(locale: str) -> tuple[tuple[str, str], ...]:
    territories = Locale.parse(locale).territories
    pairs = [
        (code, name)
        for code, name in territories.items()
        if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES
    ]
    return tuple(sorted(pairs, key=lambda p: p[1]))


@cache
def _language_pairs(locale: str) -> tuple[tuple[str, str], ...]:
    from portal.services.creatives import language_names

    names = Locale.parse(locale).languages
    return tuple(
        sorted(((code, names.get(code, name)) for code, name in language_names().items()), key=lambda p: p[1])
    )


def language_choices() -> list[SelectChoice]:
    """ISO 639-1 languages with their names in the reader's language, sorted by name."""
    return as_choices(_language_pairs(str(get_locale() or "en")))


def at_most(n: int) -> Length:
    """A length limit whose message names the limit (the one wording every form uses)."""
    return Length(max=n, message=_l("At most %(max)d characters."))


def amount_field(label, required: str | None = None, description: str = "") -> StringField:
    """An amount typed as a decimal ("50.00"); ``required`` is the message when it is left empty."""
    return StringField(
        label,
        validators=[DataRequired(required) if required else Optional(), Length(max=20)],
        description=description,
    )


def amount_of(field, currency: str, required: bool) -> int | None:
    """The amount typed in ``field`` in minor units of ``currency``; None, with the reason on the
    field when there is one, if it is empty or not a plain amount of zero or more."""
    text = (field.data or "").strip()
    if not text:
        if required:
            field.errors.append(_l("Enter an amount, e.g. 50.00."))
        return None
    try:
        value = parse_amount(text, currency)
    except ValueError:
        field.errors.append(_l("Enter a plain amount such as 50.00 (no currency sign)."))
        return None
    if value < 0:
        field.errors.append(_l("The amount cannot be negative."))
        return None
    return value


def put_error_on_form(form: FlaskForm, error: DomainError) -> None:
    """Show a service's refusal beside the field it concerns, or above the form."""
    field = getattr(form, error.field, None) if error.field else None
    if field is not None:
        field.errors = [*field.errors, error.message]
    else:
        form.form_errors.append(error.message)


class RangeForm(FlaskForm):
    """The period a dashboard shows (a GET form: no CSRF token, nothing changes)."""

    class Meta:
        csrf = False

    range = SelectField(_l("Period"), default="30d")
    start = DateField(_l("From"), validators=[Optional()])
    end = DateField(_l("To"), validators=[Optional()])

    def __init__(self, *args, **kwargs):
        from portal.services.dashboards import RANGES, range_label

        super().__init__(*args, **kwargs)
        self.range.choices = as_choices((value, range_label(value)) for value in RANGES)

    def validate(self, extra_validators=None) -> bool:
        from portal.guards import day_allowed, day_range_message
        from portal.services.dashboards import MAX_RANGE_DAYS

        valid = super().validate(extra_validators)
        for field in (self.start, self.end):
            if field.data is not None and not day_allowed(field.data):
                field.errors.append(day_range_message())
                valid = False
        if not valid or self.range.data != "custom":
            return valid
        if self.start.data is None:
            self.start.errors.append(_l("Choose the first day."))
        if self.end.data is None:
            self.end.errors.append(_l("Choose the last day."))
        if self.start.data and self.end.data:
            if self.end.data < self.start.data:
                self.end.errors.append(_l("The last day cannot be before the first."))
            elif (self.end.data - self.start.data).days >= MAX_RANGE_DAYS:
                self.end.errors.append(_l("Choose at most %(days)d days.", days=MAX_RANGE_DAYS))
        return not (self.start.errors or self.end.errors)


class PercentField(StringField):
    """A rate typed as a percent ("12.5"); ``data_bp`` holds it in hundredths of a percent.

    Parsed by ``portal.money.parse_rate_bp`` (ASCII digits, at most two decimals, 0 to 100 %);
    the services decide which rates are allowed beyond that.
    """

    data_bp: int | None = None

    def pre_validate(self, form):
        self.data_bp = None
        if not (self.data or "").strip():
            return
        try:
            self.data_bp = parse_rate_bp(self.data)
        except RateOverLimit:
            raise ValidationError(_l("A rate cannot be over 100 %.")) from None
        except ValueError:
            raise ValidationError(_l("Enter a percent such as 12.5 (at most two decimals).")) from None
