"""Sending e-mail: SMTP when MAIL_SERVER is set, otherwise the message goes to the log."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import make_msgid

from flask import current_app


class MailError(RuntimeError):
    """The mail server could not be reached or refused the message."""


# Headers whose value is a list of <URL>s that mail clients parse as they are (RFC 2369,
# RFC 8058): never folded and never RFC 2047-encoded, which the default policy does to a
# long unbreakable token. Their values are ASCII; RFC 5322 allows 998 characters a line.
_VERBATIM_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


class PortalMailPolicy(EmailPolicy):
    """The standard policy, except that the ``List-Unsubscribe*`` headers go out verbatim."""

    def fold(self, name, value):
        if name.lower() in _VERBATIM_HEADERS:
            return f"{name}: {value}{self.linesep}"
        return super().fold(name, value)

    def fold_binary(self, name, value):
        if name.lower() in _VERBATIM_HEADERS:
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


MAIL_POLICY = PortalMailPolicy()


def build_message(to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    config = current_app.config
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = config["MAIL_DEFAULT_SENDER"]
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="partner-portal")
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


def send_mail(to: str, subject: str, text: str, html: str | None = None) -> None:
    """Send one message now. Raises MailError when SMTP is configured and fails."""
    send_message(build_message(to, subject, text, html))


def send_message(message: EmailMessage) -> None:
    """Send a built message now. Raises MailError when SMTP is configured and fails."""
    config = current_app.config
    to = message["To"]
    if not config.get("MAIL_SERVER"):
        current_app.logger.info("E-mail not sent (MAIL_SERVER unset):\n%s", message.as_string())
        return
    try:
        smtp_class = smtplib.SMTP_SSL if config["MAIL_USE_SSL"] else smtplib.SMTP
        with smtp_class(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=config["MAIL_TIMEOUT"]) as smtp:
            if config["MAIL_USE_TLS"] and not config["MAIL_USE_SSL"]:
                smtp.starttls(context=ssl.create_default_context())
            if config.get("MAIL_USERNAME"):
                smtp.login(config["MAIL_USERNAME"], config.get("MAIL_PASSWORD") or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        current_app.logger.error("Sending e-mail to %s failed: %s", to, exc)
        raise MailError(str(exc)) from exc
