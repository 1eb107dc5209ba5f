"""Operator console forms for the rewards rules. They check shape; the rules service checks the rest."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    DateTimeLocalField,
    IntegerField,
    RadioField,
    SelectField,
    StringField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from portal.forms import (
    MultiCheckboxField,
    TextAreaField,
    amount_field,
    amount_of,
    as_choices,
    channel_choices,
)
from portal.models import CampaignAudience, CampaignReward, RateType, RecurringMode, TierMetric, TierPeriod
from portal.money import RateOverLimit, parse_rate_bp, rate_text, to_decimal_string
from portal.services.reward_rules import RateInput

_DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]


class _Money:
    """Amount fields typed as decimals, kept as minor units of the program's currency."""

    currency = "USD"

    def amount(self, field, required: bool) -> int | None:
        return amount_of(field, self.currency, required)


class _RateFields(_Money):
    """``rate_type`` + ``rate_percent`` + ``rate_flat``: a percent of the sale or a fixed amount."""

    def rate_input(self) -> RateInput | None:
        kind = self.rate_type.data
        if kind == RateType.PERCENT:
            text = (self.rate_percent.data or "").strip()
            if not text:
                self.rate_percent.errors.append(_l("Enter the percent, e.g. 12.5."))
                return None
            try:
                return RateInput(RateType.PERCENT, parse_rate_bp(text), 0)
            except RateOverLimit:
                self.rate_percent.errors.append(_l("A rate cannot be over 100 %."))
                return None
            except ValueError:
                self.rate_percent.errors.append(_l("Enter a percent such as 12.5 (at most two decimals)."))
                return None
        if kind == RateType.FLAT:
            flat = self.amount(self.rate_flat, required=True)
            return RateInput(RateType.FLAT, 0, flat) if flat is not None else None
        self.rate_type.errors.append(_l("Choose a percent of the sale or a fixed amount."))
        return None

    def fill_rate(self, rule) -> None:
        self.rate_type.data = rule.rate_type
        self.rate_percent.data = rate_text(rule.rate_percent_bp or 0)
        self.rate_flat.data = to_decimal_string(rule.rate_flat_minor or 0, self.currency)


def _rate_type_field(label=None) -> RadioField:
    return RadioField(
        label or _l("Rate"),
        default=RateType.PERCENT.value,
        choices=as_choices(
            [
                (RateType.PERCENT.value, _l("Percent of the sale")),
                (RateType.FLAT.value, _l("Fixed amount per sale")),
            ]
        ),
    )


def _percent_field() -> StringField:
    return StringField(
        _l("Percent"), validators=[Optional(), Length(max=12)], description=_l("e.g. 12.5 for 12.5 %")
    )


def _flat_field() -> StringField:
    return amount_field(_l("Fixed amount"), description=_l("e.g. 5.00"))


def _products_field(label=None) -> TextAreaField:
    return TextAreaField(
        label or _l("Products"),
        validators=[Optional(), Length(max=5000)],
        description=_l(
            "Product ids as your shop sends them, separated by commas; empty means every product."
        ),
    )


def split_items(text: str | None) -> list[str]:
    from portal.services.announcements import split_list

    return split_list(text)


class PlanForm(FlaskForm, _RateFields):
    rate_type = _rate_type_field(_l("Base commission"))
    rate_percent = _percent_field()
    rate_flat = _flat_field()
    recurring_mode = RadioField(
        _l("Renewals (a later purchase of a customer the partner brought)"),
        default=RecurringMode.FOREVER.value,
        choices=as_choices(
            [
                (RecurringMode.FOREVER.value, _l("Earn on every renewal, for as long as the customer stays")),
                (RecurringMode.MONTHS.value, _l("Earn for a number of months after the first purchase")),
                (RecurringMode.NONE.value, _l("Earn on the first purchase only")),
            ]
        ),
    )
    recurring_months = IntegerField(
        _l("Months renewals earn for"),
        validators=[Optional(), NumberRange(1, 120, _l("From %(min)s to %(max)s months."))],
    )
    top_partner_tag = StringField(
        _l("Top-partner tag"),
        validators=[Optional(), Length(max=40)],
        description=_l(
            "Partners with this tag may ask for custom campaign links (as may tiers that allow it)."
        ),
    )

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        self.rate = self.rate_input()
        if self.recurring_mode.data == RecurringMode.MONTHS and not self.recurring_months.data:
            self.recurring_months.errors = [*self.recurring_months.errors, _l("Enter the number of months.")]
        return ok and not any(f.errors for f in self)


class ProductRateForm(FlaskForm, _RateFields):
    product_id = StringField(
        _l("Product id"),
        validators=[DataRequired(_l("Enter the product id your shop sends.")), Length(max=128)],
    )
    label = StringField(_l("Label (optional)"), validators=[Optional(), Length(max=120)])
    rate_type = _rate_type_field()
    rate_percent = _percent_field()
    rate_flat = _flat_field()

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        self.rate = self.rate_input()
        return ok and not any(f.errors for f in self)


class TierForm(FlaskForm, _RateFields):
    name = StringField(
        _l("Name"), validators=[DataRequired(_l("Name the tier, e.g. Silver.")), Length(max=60)]
    )
    rank = IntegerField(
        _l("Level"),
        validators=[InputRequired(_l("Enter the level: 1 is the lowest.")), NumberRange(1, 100)],
        description=_l("1 is the lowest; higher levels need higher thresholds."),
    )
    rate_type = _rate_type_field()
    rate_percent = _percent_field()
    rate_flat = _flat_field()
    threshold_metric = SelectField(
        _l("Threshold counts"),
        choices=as_choices(
            [
                (TierMetric.REVENUE.value, _l("Revenue (net of refunds)")),
                (TierMetric.CONVERSIONS.value, _l("Conversions")),
            ]
        ),
    )
    threshold = StringField(
        _l("Threshold"),
        validators=[DataRequired(_l("Enter the threshold.")), Length(max=20)],
        description=_l("An amount for revenue (e.g. 5000.00), a whole number for conversions."),
    )
    period = SelectField(
        _l("Counted over"),
        choices=as_choices(
            [
                (TierPeriod.PREVIOUS_MONTH.value, _l("A calendar month")),
                (TierPeriod.ROLLING_30.value, _l("The last 30 days")),
                (TierPeriod.ROLLING_90.value, _l("The last 90 days")),
            ]
        ),
    )
    can_request_campaigns = BooleanField(_l("Partners in this tier may ask for custom campaign links"))

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        self.rate = self.rate_input()
        self.threshold_value = None
        if self.threshold.data:
            if self.threshold_metric.data == TierMetric.REVENUE:
                self.threshold_value = self.amount(self.threshold, required=True)
            else:
                text = self.threshold.data.strip()
                if text.isdigit():
                    self.threshold_value = int(text)
                else:
                    self.threshold.errors.append(_l("Enter a whole number of conversions."))
        return ok and not any(f.errors for f in self)

    def fill(self, tier) -> None:
        self.name.data = tier.name
        self.rank.data = tier.rank
        self.fill_rate(tier)
        self.threshold_metric.data = tier.threshold_metric
        self.threshold.data = (
            to_decimal_string(tier.threshold_value, self.currency)
            if tier.threshold_metric == TierMetric.REVENUE
            else str(tier.threshold_value)
        )
        self.period.data = tier.period
        self.can_request_campaigns.data = tier.can_request_campaigns


class CampaignForm(FlaskForm, _RateFields):
    name = StringField(_l("Name"), validators=[DataRequired(_l("Name the campaign.")), Length(max=120)])
    description = TextAreaField(
        _l("What partners should know (optional)"), validators=[Optional(), Length(max=2000)]
    )
    starts_at = DateTimeLocalField(
        _l("Starts"),
        format=_DATETIME_FORMATS,
        validators=[InputRequired(_l("Enter when the campaign starts."))],
    )
    ends_at = DateTimeLocalField(
        _l("Ends"),
        format=_DATETIME_FORMATS,
        validators=[InputRequired(_l("Enter when the campaign ends."))],
    )
    products = _products_field()
    reward = RadioField(
        _l("What it gives"),
        default=CampaignReward.RATE.value,
        choices=as_choices(
            [
                (CampaignReward.RATE.value, _l("Its own rate (replaces the partner's rate)")),
                (CampaignReward.BONUS.value, _l("A fixed bonus per conversion, on top of the rate")),
            ]
        ),
    )
    rate_type = _rate_type_field(_l("Campaign rate"))
    rate_percent = _percent_field()
    rate_flat = _flat_field()
    bonus = amount_field(_l("Bonus per conversion"))
    audience = RadioField(
        _l("Who it is for"),
        default=CampaignAudience.EVERYONE.value,
        choices=as_choices(
            [
                (CampaignAudience.EVERYONE.value, _l("Every partner")),
                (CampaignAudience.TIERS.value, _l("Partners in some tiers")),
                (CampaignAudience.TAG.value, _l("Partners with a tag")),
                (CampaignAudience.PARTNERS.value, _l("Named partners (private)")),
            ]
        ),
    )
    tiers = MultiCheckboxField(_l("Tiers"), coerce=int, validators=[Optional()])
    tag = StringField(_l("Tag"), validators=[Optional(), Length(max=40)])
    partners = TextAreaField(
        _l("Partners"),
        validators=[Optional(), Length(max=5000)],
        description=_l("Partner codes or e-mails, separated by commas or one per line."),
    )
    links_only = BooleanField(_l("Only sales through the campaign's own links earn it"))
    landing_url = StringField(
        _l("Landing page of its links (optional)"),
        validators=[Optional(), Length(max=2000)],
        description=_l("On one of the program's allowed domains; empty means the default landing page."),
    )

    def __init__(self, *args, tier_choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.tiers.choices = list(tier_choices)

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        self.rate = None
        self.bonus_minor = None
        if self.reward.data == CampaignReward.BONUS:
            self.bonus_minor = self.amount(self.bonus, required=True)
        else:
            self.rate = self.rate_input()
        return ok and not any(f.errors for f in self)


class CampaignLinkForm(FlaskForm):
    partner = StringField(
        _l("Partner"),
        validators=[DataRequired(_l("Enter the partner's code or e-mail.")), Length(max=254)],
        description=_l("Partner code or e-mail; the campaign must be open to them."),
    )
    label = StringField(_l("Label (optional)"), validators=[Optional(), Length(max=120)])
    channel = SelectField(_l("Channel"), default="other")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.channel.choices = channel_choices()


class LadderStepForm(FlaskForm, _Money):
    threshold_conversions = IntegerField(
        _l("Conversions in the month"),
        validators=[InputRequired(_l("Enter a number of conversions.")), NumberRange(1, 1_000_000)],
    )
    bonus = amount_field(_l("Bonus"), required=_l("Enter the bonus, e.g. 50.00."))

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        self.bonus_minor = self.amount(self.bonus, required=True)
        return ok and not any(f.errors for f in self)


class DealForm(FlaskForm, _RateFields):
    partner = StringField(
        _l("Partner"),
        validators=[DataRequired(_l("Enter the partner's code or e-mail.")), Length(max=254)],
        description=_l("Partner code or e-mail."),
    )
    rate_type = _rate_type_field(_l("Their rate"))
    rate_percent = _percent_field()
    rate_flat = _flat_field()
    products = _products_field(_l("Only these products (optional)"))
    starts_on = DateField(_l("From (optional)"), validators=[Optional()])
    ends_on = DateField(_l("Until, inclusive (optional)"), validators=[Optional()])
    note = TextAreaField(_l("Note (the partner sees it)"), validators=[Optional(), Length(max=2000)])

    def validate(self, extra_validators=None) -> bool:
        ok = super().validate(extra_validators)
        self.rate = self.rate_input()
        return ok and not any(f.errors for f in self)


class PartnerTierForm(FlaskForm):
    tier = SelectField(_l("Tier"), coerce=int)
    note = StringField(_l("Why (shown in the timeline)"), validators=[Optional(), Length(max=500)])

    def __init__(self, *args, tiers=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.tier.choices = [(0, _l("No tier (base rate)")), *((t.id, t.name) for t in tiers)]
