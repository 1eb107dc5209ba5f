"""The one check of an address the portal sends people to (no open redirect).

Every destination a partner, a merchant or an operator may set — link destinations,
campaign requests, landing-page creatives, reward campaigns, the program's default
landing page — goes through ``clean_destination``; the click redirect re-checks the
stored address with ``is_allowed_destination`` when it caches a link, so an address
that got into the database some other way is never answered. The sign-in ``next=``
goes through ``safe_next``.

Python's ``urllib.parse`` and a browser (the WHATWG URL standard) read some addresses
differently; the check refuses every address where they could disagree instead of
guessing what a browser does:

* a backslash anywhere (a browser reads ``\\`` as ``/`` in http(s) addresses:
  ``https://evil.example\\.shop.example/`` is ``evil.example`` to Chromium and
  ``evil.example\\.shop.example`` — a "subdomain" of the shop — to urllib);
* control characters, spaces and invisible format characters anywhere (a browser drops
  tabs and newlines, so ``evil.example\\t.shop.example`` would join up);
* user info (``https://shop.example@evil.example/``), a missing ``//`` (``https:evil.example``
  is ``https://evil.example/`` to a browser), any scheme but http and https;
* a host that is not plain letters, digits, hyphens and dots once IDNA-encoded (so no
  percent-escapes, full-width dots, IP literals or empty labels);
* a host off the program's allowed domains. A domain allows itself and its subdomains
  (``shop.example`` allows ``www.shop.example``), as the settings page says.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit, urlunsplit

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
MAX_LENGTH = 2000


class UnsafeUrl(ValueError):
    """The address is refused; ``reason`` says why in a word (for logs and tests)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _has_hidden_characters(text: str) -> bool:
    # Cc: C0/C1 controls and DEL; Cf: zero-width and bidi marks; Z*: every kind of space.
    return any(unicodedata.category(ch)[0] == "Z" or unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def _ascii_host(host: str) -> str:
    """The host as a browser would send it in DNS: lower case, IDNA (punycode)."""
    if host.isascii():
        return host.lower()
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError as error:
        raise UnsafeUrl("host") from error


def host_is_allowed(host: str | None, domains) -> bool:
    """A host is allowed when it is one of the domains or a subdomain of one."""
    if not host:
        return False
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def clean_destination(raw: str | None, domains) -> str:
    """``raw`` checked and normalised (scheme and host in lower case, host IDNA-encoded,
    surrounding spaces gone); raises ``UnsafeUrl`` for anything refused (see the module).
    ``domains=None`` accepts any well-formed public host (a partner's own website)."""
    if not isinstance(raw, str):
        raise UnsafeUrl("empty")
    text = raw.strip()
    if not text:
        raise UnsafeUrl("empty")
    if len(text) > MAX_LENGTH:
        raise UnsafeUrl("length")
    if "\\" in text:
        raise UnsafeUrl("backslash")
    if _has_hidden_characters(text):
        raise UnsafeUrl("control")
    scheme, sep, _rest = text.partition(":")
    if not sep or scheme.lower() not in ("http", "https"):
        raise UnsafeUrl("scheme")
    if not _rest.startswith("//"):
        raise UnsafeUrl("authority")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:  # a malformed port or IPv6 literal, a host that NFKC breaks up
        raise UnsafeUrl("malformed") from error
    if "@" in parts.netloc:
        raise UnsafeUrl("userinfo")
    host = _ascii_host(parts.hostname or "")
    if not _HOST.match(host.rstrip(".")):
        raise UnsafeUrl("host")
    if domains is not None and not host_is_allowed(host, domains):
        raise UnsafeUrl("domain")
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, parts.fragment))


def is_allowed_destination(url: str | None, domains) -> bool:
    """True when ``clean_destination`` accepts the address."""
    try:
        clean_destination(url, domains)
    except UnsafeUrl:
        return False
    return True


def checked_destination(url: str | None, domains) -> str | None:
    """The normalised address to send someone to, or None when it is refused."""
    try:
        return clean_destination(url, domains)
    except UnsafeUrl:
        return None


def safe_next(target: str | None) -> str | None:
    """A ``next=`` to follow after sign-in: a path on this site only, else None.

    ``/partner/links?x=1`` is kept; ``//evil.example``, ``/\\evil.example``, ``https://…``,
    anything with a control character (CR/LF would split the Location header) is not.
    """
    if not target or len(target) > MAX_LENGTH:
        return None
    if "\\" in target or _has_hidden_characters(target):
        return None
    if not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target
