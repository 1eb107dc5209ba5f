"""Public pages: home, sign-in, application, application status, password reset."""

from __future__ import annotations

import flask_babel
from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user

from portal.blueprints.auth import bp
from portal.blueprints.auth.forms import (
    AccountForm,
    ApplyForm,
    ForgotPasswordForm,
    LanguageForm,
    LoginForm,
    ResetPasswordForm,
)
from portal.errors import DomainError
from portal.extensions import csrf, db, limiter
from portal.forms import ConfirmForm, put_error_on_form
from portal.i18n import LOCALE_COOKIE, LOCALE_COOKIE_MAX_AGE, set_reading_preferences
from portal.mail import MailError
from portal.models import PartnerStatus, Role
from portal.security import home_url_for, safe_next_url
from portal.services import accounts, delivery
from portal.services.program import get_program, program_timezone


def _limit(name: str):
    return lambda: current_app.config[name]


@bp.get("/")
def index():
    if current_user.is_authenticated:
        return redirect(home_url_for(current_user))
    return render_template("auth/index.html", program=get_program())


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_limit("LOGIN_RATE_LIMIT"), methods=["POST"])
def login():
    if current_user.is_authenticated:
        return redirect(home_url_for(current_user))
    form = LoginForm()
    if form.validate_on_submit():
        user = accounts.authenticate(form.email.data, form.password.data, ip=request.remote_addr)
        if user is None:
            form.form_errors.append(_("That e-mail and password do not match an active account."))
        else:
            db.session.commit()
            login_user(user, remember=form.remember.data)
            return redirect(safe_next_url(request.args.get("next")) or home_url_for(user))
    return render_template("auth/login.html", form=form), 200 if request.method == "GET" else 422


@bp.post("/logout")
def logout():
    logout_user()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/apply", methods=["GET", "POST"])
@limiter.limit(_limit("APPLY_RATE_LIMIT"), methods=["POST"])
def apply():
    if current_user.is_authenticated:
        return redirect(home_url_for(current_user))
    form = ApplyForm()
    if form.validate_on_submit():
        application = accounts.Application(
            name=form.name.data,
            email=form.email.data,
            password=form.password.data,
            country=form.country.data,
            channels=form.channels.data,
            promotion_description=form.promotion_description.data,
            website=form.website.data,
            social_profiles=form.social_profiles.data,
        )
        try:
            partner = accounts.apply_as_partner(application)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            login_user(partner.user)
            flash(_("Thank you! Your application is in; we will review it soon."), "success")
            return redirect(url_for("auth.application_status"))
    status = 200 if request.method == "GET" else 422
    return render_template("auth/apply.html", form=form, program=get_program()), status


@bp.get("/status")
@login_required
def application_status():
    if current_user.role != Role.PARTNER or current_user.partner is None:
        return redirect(home_url_for(current_user))
    partner = current_user.partner
    if partner.status == PartnerStatus.APPROVED:
        return redirect(url_for("partner.dashboard"))
    return render_template("auth/status.html", partner=partner, program=get_program())


@bp.route("/password/forgot", methods=["GET", "POST"])
@limiter.limit(_limit("PASSWORD_RESET_RATE_LIMIT"), methods=["POST"])
def forgot_password():
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        try:
            accounts.send_password_reset(
                form.email.data,
                lambda token: url_for("auth.reset_password", token=token, _external=True),
            )
        except MailError:
            db.session.rollback()
            form.form_errors.append(_("We could not send e-mail just now. Try again in a few minutes."))
            return render_template("auth/forgot.html", form=form), 503
        db.session.commit()
        return render_template("auth/forgot_sent.html", email=form.email.data)
    status = 200 if request.method == "GET" else 422
    return render_template("auth/forgot.html", form=form), status


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    try:
        user = accounts.user_for_reset_token(token)
    except DomainError as error:
        return render_template("auth/reset_invalid.html", message=error.message), 400
    form = ResetPasswordForm()
    if form.validate_on_submit():
        try:
            accounts.reset_password(token, form.password.data)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            logout_user()
            flash(_("Your password is changed. Sign in with the new one."), "success")
            return redirect(url_for("auth.login"))
    status = 200 if request.method == "GET" else 422
    return render_template("auth/reset.html", form=form, user=user, token=token), status


# --- one-click unsubscribe (the link in every partner e-mail) ----------------------------------


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058: mail clients POST "List-Unsubscribe=One-Click" without a form token
def unsubscribe(token: str):
    """Opening the link (or the mail client's one-click POST) switches that kind of e-mail off."""
    try:
        _partner, kind = delivery.unsubscribe(token)
    except DomainError as error:
        db.session.rollback()
        return _invalid_link(error)
    db.session.commit()
    return render_template(
        "auth/unsubscribed.html",
        kind_label=delivery.email_kind_label(kind),
        token=token,
        form=ConfirmForm(formdata=None),
        subscribed=False,
    )


@bp.post("/unsubscribe/<token>/undo")
def resubscribe(token: str):
    form = ConfirmForm()
    try:
        _partner, kind = delivery.read_unsubscribe_token(token)
    except DomainError as error:
        return _invalid_link(error)
    if form.validate_on_submit():
        delivery.resubscribe(token)
        db.session.commit()
    return render_template(
        "auth/unsubscribed.html",
        kind_label=delivery.email_kind_label(kind),
        token=token,
        form=form,
        subscribed=form.validate_on_submit(),
    )


def _invalid_link(error: DomainError):
    return render_template(
        "errors/error.html", code=400, title=_("Link not valid"), message=error.message
    ), 400


# --- language and time zone ----------------------------------------------------------------------


@bp.post("/language")
def set_language():
    """The switch in the header: the signed-in person's setting, and a cookie for everyone."""
    form = LanguageForm()
    back = safe_next_url(form.next.data) or url_for("auth.index")
    if not form.validate_on_submit():
        return redirect(back)
    if current_user.is_authenticated:
        set_reading_preferences(current_user, form.locale.data, current_user.timezone)
        db.session.commit()
    response = redirect(back)
    response.set_cookie(
        LOCALE_COOKIE,
        form.locale.data,
        max_age=LOCALE_COOKIE_MAX_AGE,
        samesite="Lax",
        secure=current_app.config["SESSION_COOKIE_SECURE"],
        httponly=True,
    )
    return response


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    """Everyone's own settings: the language and time zone pages, messages and e-mails use."""
    zone = program_timezone()
    form = AccountForm(program_zone=zone)
    if request.method == "GET":
        form.locale.data = current_user.locale or ""
        form.timezone.data = current_user.timezone or ""
    elif form.validate_on_submit():
        try:
            set_reading_preferences(current_user, form.locale.data or None, form.timezone.data or None)
        except DomainError as error:
            db.session.rollback()
            put_error_on_form(form, error)
        else:
            db.session.commit()
            flask_babel.refresh()  # the confirmation already in the new language
            flash(_("Your language and time zone are saved."), "success")
            return redirect(url_for("auth.account"))
    status = 200 if request.method == "GET" else 422
    return render_template("auth/account.html", form=form, program_zone=zone), status
