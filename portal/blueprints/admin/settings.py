"""Operator console: program settings, the team, API keys and the integration guide (admins)."""

from __future__ import annotations

from zoneinfo import available_timezones

import sqlalchemy as sa
from babel.numbers import list_currencies
from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, IntegerField, RadioField, SelectField, StringField
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange, Optional

from portal.blueprints.admin import bp
from portal.extensions import db
from portal.forms import ConfirmForm, TextAreaField, amount_field, amount_of, as_choices, at_most
from portal.i18n import locale_choices
from portal.mail import MailError
from portal.models import (
    OPERATOR_ROLES,
    ApiKey,
    CommissionType,
    CouponAttribution,
    Partner,
    PartnerStatus,
    PayoutSchedule,
    Program,
    Role,
    User,
)
from portal.money import parse_rate_bp, rate_text, to_decimal_string
from portal.security import admin_required, operator_required
from portal.services import accounts, api_keys
from portal.services.program import ProgramSettings, get_program, update_program_settings
from portal.views import committing

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
        validators=[DataRequired(_l("Name the program.")), at_most(120)],
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
    minimum_payout = amount_field(
        _l("Minimum payout"),
        required=_l("Enter an amount, e.g. 50.00."),
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
    coupon_attribution = RadioField(
        _l("A sale with one partner's coupon code and another partner's older click"),
        choices=as_choices(
            [
                (CouponAttribution.COUPON.value, _l("goes to the coupon's partner (the code was used last)")),
                (CouponAttribution.FIRST_TOUCH.value, _l("goes to the click's partner (first touch)")),
            ]
        ),
        validators=[Optional()],
    )
    commission_percent = StringField(_l("Percent"), validators=[Optional(), Length(max=10)])
    commission_flat = amount_field(_l("Fixed amount"))
    max_sale = amount_field(
        _l("Maximum sale"),
        required=_l("Enter an amount, e.g. 1000000.00."),
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
            coupon_attribution=program.coupon_attribution,
        )

    def _amount(self, field, required: bool) -> int | None:
        return amount_of(field, self.currency.data or "USD", required)

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
            coupon_attribution=self.coupon_attribution.data or program.coupon_attribution,
        )


class TeamMemberForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Enter a name.")), at_most(120)],
    )
    email = EmailField(
        _l("E-mail"),
        validators=[
            DataRequired(_l("Enter an e-mail address.")),
            at_most(254),
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


class ApiKeyForm(FlaskForm):
    name = StringField(
        _l("Name"),
        validators=[DataRequired(_l("Name the key, e.g. “shop backend”.")), Length(max=120)],
    )


@bp.route("/settings", methods=["GET", "POST"])
@admin_required
def settings():
    program = get_program()
    form = SettingsForm() if request.method == "POST" else SettingsForm.from_program(program)
    if form.validate_on_submit():
        with committing(form) as done:
            update_program_settings(program, current_user, form.to_settings(program))
        if done:
            flash(_("Settings saved."), "success")
            return redirect(url_for("admin.settings"))
    status = 200 if request.method == "GET" else 422
    return render_template("admin/settings.html", form=form, program=program), status


def _team() -> list[User]:
    return list(
        db.session.scalars(
            sa.select(User).where(User.role.in_([r.value for r in OPERATOR_ROLES])).order_by(User.name)
        )
    )


@bp.route("/team", methods=["GET", "POST"])
@admin_required
def team():
    form = TeamMemberForm()
    if form.validate_on_submit():
        try:
            with committing(form) as done:
                user = accounts.invite_operator(
                    current_user,
                    form.email.data,
                    form.name.data,
                    Role(form.role.data),
                    lambda token: url_for("auth.reset_password", token=token, _external=True),
                )
        except MailError:  # rolled back: nobody was added
            form.form_errors.append(
                _("The invitation e-mail could not be sent, so nobody was added. Try again.")
            )
        if done:
            flash(
                _("%(name)s is invited; they will get an e-mail to set a password.", name=user.name),
                "success",
            )
            return redirect(url_for("admin.team"))
    status = 200 if request.method == "GET" else 422
    return render_template(
        "admin/team.html", form=form, team=_team(), confirm_form=ConfirmForm(formdata=None)
    ), status


@bp.post("/team/<int:user_id>/<any(activate, deactivate):action>")
@admin_required
def set_team_member_active(user_id: int, action: str):
    user = db.session.get(User, user_id)
    if user is None or not user.is_operator:
        abort(404)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            accounts.set_user_active(current_user, user, action == "activate")
        if done:
            flash(_("Access updated for %(name)s.", name=user.name), "success")
    return redirect(url_for("admin.team"))


@bp.route("/api-keys", methods=["GET", "POST"])
@admin_required
def api_keys_page():
    form = ApiKeyForm()
    new_key = None
    status = 200
    if form.validate_on_submit():
        with committing(form) as done:
            _key, new_key = api_keys.create_api_key(form.name.data, current_user)
        if done:
            form = ApiKeyForm(formdata=None)
        else:
            status = 422
    elif request.method == "POST":
        status = 422
    return (
        render_template(
            "admin/api_keys.html",
            form=form,
            keys=api_keys.list_api_keys(),
            new_key=new_key,
            confirm_form=ConfirmForm(formdata=None),
        ),
        status,
    )


@bp.post("/api-keys/<int:key_id>/revoke")
@admin_required
def revoke_api_key(key_id: int):
    key = db.get_or_404(ApiKey, key_id)
    if ConfirmForm().validate_on_submit():
        with committing() as done:
            api_keys.revoke_api_key(key, current_user)
        if done:
            flash(_("Key “%(name)s” is revoked; requests with it now get 401.", name=key.name), "success")
    return redirect(url_for("admin.api_keys_page"))


@bp.get("/integration")
@operator_required
def integration_guide():
    program = get_program()
    demo_partner = db.session.scalars(
        sa.select(Partner).where(Partner.status == PartnerStatus.APPROVED).order_by(Partner.id).limit(1)
    ).first()
    return render_template(
        "admin/integration.html",
        program=program,
        api_base=url_for("auth.index", _external=True).rstrip("/") + "/api/v1",
        example_ref=demo_partner.ref_code if demo_partner else "CODE",
        # Unversioned (v=None): shops embed this address, and a versioned one would keep
        # their visitors on the script of that day for a year (portal/staticfiles.py).
        track_js=url_for("static", filename="js/track.js", _external=True, v=None),
    )
