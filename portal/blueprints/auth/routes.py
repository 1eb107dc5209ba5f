"""Public pages: home, sign-in, application, application status, password reset."""

from __future__ import annotations

import time

import flask_babel
import segno
import sqlalchemy as sa
from flask import current_app, flash, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user, login_required, login_user, logout_user
from markupsafe import Markup

from portal.blueprints.auth import bp
from portal.blueprints.auth.forms import (
    AccountForm,
    ApplyForm,
    ChangePasswordForm,
    ForgotPasswordForm,
    LanguageForm,
    LoginForm,
    ResetPasswordForm,
    SecondFactorForm,
    TwoFactorCodeForm,
    TwoFactorDisableForm,
)
from portal.errors import DomainError
from portal.extensions import csrf, db, limiter
from portal.forms import ConfirmForm
from portal.i18n import LOCALE_COOKIE, LOCALE_COOKIE_MAX_AGE, set_reading_preferences
from portal.mail import MailError
from portal.models import PartnerStatus, Role, User
from portal.security import home_url_for, safe_next_url
from portal.services import accounts, delivery, two_factor
from portal.services.program import get_program, program_timezone
from portal.views import committing


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
        with committing():
            user = accounts.authenticate(form.email.data, form.password.data, ip=request.remote_addr)
        if user is None:
            form.form_errors.append(_("That e-mail and password do not match an active account."))
        else:
            next_url = safe_next_url(request.args.get("next"))
            if user.two_factor_enabled:
                _await_second_factor(user, remember=form.remember.data, next_url=next_url)
                return redirect(url_for("auth.login_code"))
            return _sign_in(user, remember=form.remember.data, next_url=next_url)
    return render_template("auth/login.html", form=form), 200 if request.method == "GET" else 422


# --- signing in and out: the session starts afresh each time ----------------------------

# The second step has this long after the password before the password must be typed again.
_PENDING_SECONDS = 300
_PENDING_KEY = "second_factor"


def _fresh_session() -> None:
    """Forget everything the session held, the CSRF token included (no session fixation)."""
    session.clear()
    g.pop("csrf_token", None)  # Flask-WTF caches the token of this request here


def _sign_in(user, *, remember: bool, next_url: str | None):
    _fresh_session()
    login_user(user, remember=remember)
    if two_factor.must_enrol(user, get_program()):
        flash(_("Your program requires two-factor sign-in for the team. Set it up to continue."), "info")
        return redirect(url_for("auth.account"))
    return redirect(next_url or home_url_for(user))


def _await_second_factor(user, *, remember: bool, next_url: str | None) -> None:
    """The password was right: remember who is half-way in, without signing them in."""
    _fresh_session()
    # The session token, not the id: a password change or "sign out everywhere" meanwhile
    # ends the half-finished sign-in too.
    session[_PENDING_KEY] = {
        "token": user.get_id(),
        "remember": bool(remember),
        "next": next_url,
        "until": int(time.time()) + _PENDING_SECONDS,
    }


def _pending_user():
    pending = session.get(_PENDING_KEY)
    if not isinstance(pending, dict) or pending.get("until", 0) < time.time():
        return None, None
    user = db.session.scalars(
        sa.select(User).where(User.session_token == pending.get("token"), User.active.is_(True))
    ).first()
    return (user, pending) if user is not None and user.two_factor_enabled else (None, None)


@bp.route("/login/code", methods=["GET", "POST"])
@limiter.limit(_limit("LOGIN_RATE_LIMIT"), methods=["POST"])
def login_code():
    """The second step of signing in: a code from the app or a recovery code."""
    if current_user.is_authenticated:
        return redirect(home_url_for(current_user))
    user, pending = _pending_user()
    if user is None:
        session.pop(_PENDING_KEY, None)
        flash(_("Sign in again: the sign-in was not finished in time."), "info")
        return redirect(url_for("auth.login"))
    form = SecondFactorForm()
    if form.validate_on_submit():
        # A code is claimed by a write: end the read above and start as a writer (SQLite).
        db.session.rollback()
        with committing(write=True):  # successes and failures are both counted
            result = two_factor.verify(user, form.code.data)
        if result.method is not None:
            response = _sign_in(user, remember=pending["remember"], next_url=pending["next"])
            if result.method == "recovery":
                left = two_factor.recovery_codes_left(user)
                flash(
                    ngettext(
                        "You signed in with a recovery code. %(num)d recovery code is left.",
                        "You signed in with a recovery code. %(num)d recovery codes are left.",
                        left,
                    ),
                    "warning" if left <= 3 else "info",
                )
            return response
        if result.locked:
            session.pop(_PENDING_KEY, None)
            flash(
                _("Too many wrong codes. Wait 15 minutes, then sign in again."),
                "error",
            )
            return redirect(url_for("auth.login"))
        form.code.errors.append(
            ngettext(
                "That code is not right. %(num)d more try before sign-in pauses.",
                "That code is not right. %(num)d more tries before sign-in pauses.",
                result.tries_left,
            )
        )
    status = 200 if request.method == "GET" else 422
    return render_template("auth/login_code.html", form=form), status


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        # Signing out ends every session of this user, remember-me cookies included.
        with committing():
            accounts.end_sessions(current_user)
    _fresh_session()
    logout_user()  # after the clear: it marks the remember-me cookie for deletion
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
        with committing(form) as done:
            user, partner = accounts.apply_or_notify(application)
        if done:
            # A known address gets the same answer and an e-mail instead of an account, so
            # the form does not tell who has one; neither is signed in here.
            links = {
                "login_url": url_for("auth.login", _external=True),
                "reset_url": url_for("auth.forgot_password", _external=True),
            }
            try:
                accounts.send_application_mail(user, partner, links)
            except MailError:
                current_app.logger.warning("the application e-mail could not be sent")
            return render_template("auth/apply_sent.html", email=form.email.data)
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
        # The same answer, as fast, whether the address has an account or not: the e-mail is
        # sent after the response (a mail server that is down shows only in the log).
        with committing():
            accounts.send_password_reset(
                form.email.data,
                lambda token: url_for("auth.reset_password", token=token, _external=True),
            )
        return render_template("auth/forgot_sent.html", email=form.email.data)
    status = 200 if request.method == "GET" else 422
    return render_template("auth/forgot.html", form=form), status


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    with committing(flash_refusal=False) as found:
        user = accounts.user_for_reset_token(token)
    if found.refusal:
        return render_template("auth/reset_invalid.html", message=found.refusal.message), 400
    form = ResetPasswordForm()
    if form.validate_on_submit():
        with committing(form) as done:
            accounts.reset_password(token, form.password.data)
        if done:  # the new password rotated the session token: every session ends
            _fresh_session()
            logout_user()
            flash(_("Your password is changed. Sign in with the new one."), "success")
            return redirect(url_for("auth.login"))
    status = 200 if request.method == "GET" else 422
    return render_template("auth/reset.html", form=form, user=user, token=token), status


# --- one-click unsubscribe (the link in every partner e-mail) ----------------------------------


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058: mail clients POST "List-Unsubscribe=One-Click" without a form token
def unsubscribe(token: str):
    """Opening the link asks; the button (or the mail client's one-click POST) switches that kind
    of e-mail off. A GET never acts: mail scanners open every link they see."""
    if request.method == "GET":
        with committing(flash_refusal=False) as read:
            _partner, kind = delivery.read_unsubscribe_token(token)
        if read.refusal:
            return _invalid_link(read.refusal)
        return render_template(
            "auth/unsubscribe_confirm.html", kind_label=delivery.email_kind_label(kind), token=token
        )
    with committing(flash_refusal=False) as done:
        _partner, kind = delivery.unsubscribe(token)
    if not done:
        return _invalid_link(done.refusal)
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
    with committing(flash_refusal=False) as read:
        _partner, kind = delivery.read_unsubscribe_token(token)
    if read.refusal:
        return _invalid_link(read.refusal)
    if form.validate_on_submit():
        with committing():
            delivery.resubscribe(token)
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


# --- the account page: password, sessions, two-factor sign-in ----------------------------


def _account_page(status: int = 200, **forms):
    user = current_user
    program = get_program()
    return render_template(
        "auth/account.html",
        password_form=forms.get("password_form") or ChangePasswordForm(formdata=None),
        disable_form=forms.get("disable_form") or TwoFactorDisableForm(formdata=None),
        codes_form=forms.get("codes_form") or TwoFactorCodeForm(formdata=None),
        confirm_form=ConfirmForm(formdata=None),
        recovery_codes_left=two_factor.recovery_codes_left(user) if user.two_factor_enabled else 0,
        required=user.is_operator and program.require_team_2fa,
        setup_pending=bool(user.totp_secret) and not user.two_factor_enabled,
        reading_form=forms.get("reading_form") or _reading_form(),
        program_zone=program_timezone(),
    ), status


def _reading_form() -> AccountForm:
    form = AccountForm(formdata=None, program_zone=program_timezone())
    form.locale.data = current_user.locale or ""
    form.timezone.data = current_user.timezone or ""
    return form


@bp.get("/account")
@login_required
def account():
    return _account_page()


@bp.post("/account/password")
@login_required
def change_password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        with committing(form) as done:
            accounts.change_password(current_user, form.current_password.data, form.password.data)
        if done:
            user = current_user._get_current_object()
            # The new token ended every session; this browser carries on with the new one.
            _fresh_session()
            login_user(user)
            flash(_("Your password is changed. You are signed out on every other device."), "success")
            return redirect(url_for("auth.account"))
    return _account_page(422, password_form=form)


@bp.post("/account/sign-out-everywhere")
@login_required
def sign_out_everywhere():
    if ConfirmForm().validate_on_submit():
        with committing():
            accounts.sign_out_everywhere(current_user)
        _fresh_session()
        logout_user()
        flash(_("You are signed out on every device, this one too."), "info")
        return redirect(url_for("auth.login"))
    return redirect(url_for("auth.account"))


@bp.post("/account/two-factor/start")
@login_required
def start_two_factor():
    if ConfirmForm().validate_on_submit() and not current_user.two_factor_enabled:
        with committing():
            two_factor.start_enrolment(current_user)
        return redirect(url_for("auth.setup_two_factor"))
    return redirect(url_for("auth.account"))


@bp.route("/account/two-factor/setup", methods=["GET", "POST"])
@login_required
@limiter.limit(_limit("LOGIN_RATE_LIMIT"), methods=["POST"])
def setup_two_factor():
    user = current_user
    if user.two_factor_enabled or not user.totp_secret:
        return redirect(url_for("auth.account"))
    form = TwoFactorCodeForm()
    if form.validate_on_submit():
        with committing(form) as done:
            codes = two_factor.confirm_enrolment(user, form.code.data)
        if done:
            return render_template("auth/recovery_codes.html", codes=codes, first=True)
    uri = two_factor.provisioning_uri(user, get_program().name)
    status = 200 if request.method == "GET" else 422
    return render_template(
        "auth/two_factor_setup.html", form=form, qr_svg=_qr_svg(uri), secret=user.totp_secret, uri=uri
    ), status


@bp.post("/account/two-factor/disable")
@login_required
@limiter.limit(_limit("LOGIN_RATE_LIMIT"))
def disable_two_factor():
    form = TwoFactorDisableForm()
    if form.validate_on_submit():
        # A wrong code is counted like one at sign-in, so a refusal commits too.
        with committing(form, keep_refused=True) as done:
            two_factor.disable(current_user, form.password.data, form.code.data)
        if done:
            flash(_("Two-factor sign-in is off."), "info")
            return redirect(url_for("auth.account"))
    return _account_page(422, disable_form=form)


@bp.post("/account/two-factor/recovery-codes")
@login_required
@limiter.limit(_limit("LOGIN_RATE_LIMIT"))
def regenerate_recovery_codes():
    form = TwoFactorCodeForm()
    if form.validate_on_submit():
        # A wrong code is counted like one at sign-in, so a refusal commits too.
        with committing(form, keep_refused=True) as done:
            codes = two_factor.regenerate_recovery_codes(current_user, form.code.data)
        if done:
            return render_template("auth/recovery_codes.html", codes=codes, first=False)
    return _account_page(422, codes_form=form)


def _qr_svg(uri: str) -> Markup:
    """The otpauth:// address as an inline SVG QR code, drawn on the server (no script, no CDN)."""
    svg = segno.make(uri, error="m").svg_inline(
        scale=4, dark="#111", light="#fff", title=_("QR code to scan with your authenticator app")
    )
    return Markup(svg)  # noqa: S704 - segno's own SVG; the URI inside is XML-escaped by segno


# --- language and time zone ----------------------------------------------------------------------


@bp.post("/language")
def set_language():
    """The switch in the header: the signed-in person's setting, and a cookie for everyone."""
    form = LanguageForm()
    back = safe_next_url(form.next.data) or url_for("auth.index")
    if not form.validate_on_submit():
        return redirect(back)
    if current_user.is_authenticated:
        with committing():
            set_reading_preferences(current_user, form.locale.data, current_user.timezone)

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


@bp.post("/account/reading")
@login_required
def save_reading_preferences():
    """The language and time zone that pages, messages and e-mails to this person use."""
    form = AccountForm(program_zone=program_timezone())
    if form.validate_on_submit():
        with committing(form) as done:
            set_reading_preferences(current_user, form.locale.data or None, form.timezone.data or None)
        if done:
            flask_babel.refresh()  # the confirmation already in the new language
            flash(_("Your language and time zone are saved."), "success")
            return redirect(url_for("auth.account"))
    return _account_page(422, reading_form=form)
