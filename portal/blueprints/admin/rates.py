"""Operator console: exchange rates (typed one at a time, or the ECB's CSV uploaded), and the
sales in another currency waiting for one."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import DateField, StringField
from wtforms.validators import DataRequired

from portal.blueprints.admin import bp
from portal.forms import at_most
from portal.security import operator_required
from portal.services import fx, tracking
from portal.services.program import get_program
from portal.views import committing


class RateForm(FlaskForm):
    base = StringField(
        _l("From currency"),
        validators=[DataRequired(_l("Enter a currency code.")), at_most(3)],
        description=_l("ISO 4217 code, such as EUR."),
    )
    rate = StringField(
        _l("Rate"),
        validators=[DataRequired(_l("Enter the rate.")), at_most(25)],
        description=_l(
            'What one unit of the first currency is worth in the second: a plain decimal, such as "1.0812".'
        ),
    )
    quote = StringField(
        _l("To currency"),
        validators=[DataRequired(_l("Enter a currency code.")), at_most(3)],
        description=_l("ISO 4217 code, such as USD."),
    )
    day = DateField(_l("Day of the rate"), validators=[DataRequired(_l("Enter the day the rate is of."))])


class RatesFileForm(FlaskForm):
    file = FileField(
        _l("The ECB's reference rates"),
        validators=[FileRequired(_l("Choose the CSV or zip file to import."))],
        description=_l(
            "eurofxref.csv (one day) or eurofxref-hist.csv (every day since 1999), or their zip files."
        ),
    )


def _rates_page(rate_form: RateForm, file_form: RatesFileForm, status: int = 200):
    program = get_program()
    currency = (request.args.get("currency") or "").strip().upper()[:3]
    if not rate_form.is_submitted():
        rate_form.quote.data = program.currency
    return (
        render_template(
            "admin/rates.html",
            rate_form=rate_form,
            file_form=file_form,
            rates=fx.recent_rates(currency or None),
            currency=currency,
            program=program,
            waiting=tracking.count_waiting_for_rate(),
            lookback=fx.LOOKBACK_DAYS,
        ),
        status,
    )


def _converted_flash(converted: int) -> None:
    if converted:
        flash(
            ngettext(
                "%(num)d sale that was waiting for a rate is converted.",
                "%(num)d sales that were waiting for a rate are converted.",
                converted,
            ),
            "success",
        )


@bp.get("/rates")
@operator_required
def list_rates():
    return _rates_page(RateForm(formdata=None), RatesFileForm(formdata=None))


@bp.post("/rates")
@operator_required
def add_rate():
    form = RateForm()
    if form.validate_on_submit():
        with committing(form) as done:
            rate = fx.add_rate(form.base.data, form.quote.data, form.day.data, form.rate.data, current_user)
            converted = tracking.convert_waiting(get_program())
        if done:
            flash(
                _(
                    "Saved: 1 %(base)s = %(rate)s %(quote)s on %(day)s.",
                    base=rate.base,
                    rate=rate.rate,
                    quote=rate.quote,
                    day=rate.day.isoformat(),
                ),
                "success",
            )
            _converted_flash(converted)
            return redirect(url_for("admin.list_rates"))
    return _rates_page(form, RatesFileForm(formdata=None), 422)


@bp.post("/rates/import")
@operator_required
def import_rates():
    form = RatesFileForm()
    if form.validate_on_submit():
        with committing(form) as done:
            report = fx.import_ecb(form.file.data.read(), current_user)
            converted = tracking.convert_waiting(get_program())
        if done:
            flash(
                _(
                    "Imported %(rates)d rates for %(days)d days, %(first)s to %(last)s.",
                    rates=report.rates,
                    days=report.days,
                    first=report.first_day.isoformat(),
                    last=report.last_day.isoformat(),
                ),
                "success",
            )
            _converted_flash(converted)
            return redirect(url_for("admin.list_rates"))
    return _rates_page(RateForm(formdata=None), form, 422)
