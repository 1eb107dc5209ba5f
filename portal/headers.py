"""Security headers on every response: a nonce-based Content-Security-Policy and its companions.

The policy allows scripts from the portal itself and inline ones carrying this request's
nonce (``{{ csp_nonce() }}`` in templates) — never ``unsafe-inline`` or ``unsafe-eval``
(htmx runs with ``allowEval`` off, see base.html). Styles come from the portal's own
stylesheet only. Sockets may reach the portal's own origin. A route that sets one of these
headers itself keeps it: the click redirect its ``Referrer-Policy``, stored files their
sandboxing CSP.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlsplit

from flask import Flask, current_app, g, request
from werkzeug.wrappers import Response

from portal.urls import base_url

REPORT_PATH = "/csp-report"
_REPORT_MAX_BYTES = 16 * 1024


def csp_nonce() -> str:
    """This request's nonce for inline ``<script nonce=...>`` (made on first use)."""
    nonce = g.get("csp_nonce")
    if nonce is None:
        nonce = g.csp_nonce = secrets.token_urlsafe(18)
    return nonce


def _image_sources(config) -> str:
    sources = ["'self'", "data:"]
    if config.get("STORAGE_BACKEND") == "s3":
        # Banners are shown from presigned S3 addresses.
        endpoint = config.get("S3_ENDPOINT_URL")
        if endpoint:
            parts = urlsplit(endpoint)
            sources.append(f"{parts.scheme}://{parts.netloc}")
            sources.append(f"{parts.scheme}://*.{parts.netloc}")  # virtual-hosted buckets
        else:
            sources.append("https://*.amazonaws.com")
    return " ".join(sources)


def content_security_policy(config, nonce: str | None) -> str:
    """The policy for one response; ``nonce`` is None when the page used none."""
    base = base_url(config)
    socket_scheme = "wss" if base.scheme == "https" else "ws"
    scripts = "'self'" + (f" 'nonce-{nonce}'" if nonce else "")
    directives = [
        "default-src 'self'",
        f"script-src {scripts}",
        "style-src 'self'",
        f"img-src {_image_sources(config)}",
        "font-src 'self'",
        # 'self' covers ws(s) of the page's own host in current browsers; the base URL's
        # socket origin is named for the others.
        f"connect-src 'self' {socket_scheme}://{base.netloc}",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    if config.get("CSP_REPORTS"):
        directives.append(f"report-uri {REPORT_PATH}")
        directives.append("report-to csp")
    return "; ".join(directives)


def security_header_items(config, nonce: str | None = None) -> list[tuple[str, str]]:
    """Every security header of a response whose page used ``nonce`` (None: no inline script)."""
    if nonce is None:
        # Most responses (the API, redirects, files): the same headers for the same settings,
        # made once from the config itself. Every setting they read belongs in the key below.
        settings = tuple(config.get(key) for key in _SETTINGS_READ)
        items = _WITHOUT_NONCE.get(settings)
        if items is None:
            if len(_WITHOUT_NONCE) >= 8:  # a few apps (tests) at most: never grows unbounded
                _WITHOUT_NONCE.clear()
            items = _WITHOUT_NONCE[settings] = tuple(_header_items(config, None))
        return list(items)
    return _header_items(config, nonce)


# Every setting the headers are made of (the policy's, HSTS's).
_SETTINGS_READ = (
    "PORTAL_BASE_URL",
    "STORAGE_BACKEND",
    "S3_ENDPOINT_URL",
    "CSP_REPORTS",
    "HSTS_ENABLED",
    "HSTS_MAX_AGE",
)

_WITHOUT_NONCE: dict[tuple, tuple[tuple[str, str], ...]] = {}


def _header_items(config, nonce: str | None) -> list[tuple[str, str]]:
    items = [("Content-Security-Policy", content_security_policy(config, nonce))]
    if config.get("CSP_REPORTS"):
        items.append(("Reporting-Endpoints", f'csp="{REPORT_PATH}"'))
    items += [
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ]
    if config.get("HSTS_ENABLED"):
        items.append(("Strict-Transport-Security", f"max-age={config['HSTS_MAX_AGE']}; includeSubDomains"))
    return items


_POLICY_HEADERS = ("content-security-policy", "reporting-endpoints")


def set_security_headers(response: Response) -> Response:
    """Each security header the response does not set itself; a response with its own policy
    keeps it (and gets no reporting endpoint for ours)."""
    headers = response.headers
    present = {name.lower() for name, _value in headers.items()}  # one pass, not one per header
    own_policy = "content-security-policy" in present
    for name, value in security_header_items(current_app.config, g.get("csp_nonce")):
        lower = name.lower()
        if lower in _POLICY_HEADERS:
            if own_policy:
                continue
            if lower in present:
                headers[name] = value
                continue
        elif lower in present:
            continue
        headers.add(name, value)
    return response


def csp_report():
    """Log a browser's CSP violation report (development): ``report-uri`` and Reporting API bodies."""
    raw = request.get_data(cache=False)[:_REPORT_MAX_BYTES]
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        body = None
    reports = body if isinstance(body, list) else [body]
    for report in reports:
        if not isinstance(report, dict):
            continue
        details = report.get("csp-report") or report.get("body") or {}
        if not isinstance(details, dict):
            continue
        current_app.logger.warning(
            "CSP violation: %s blocked %s on %s (%s:%s)",
            details.get("violated-directive") or details.get("effectiveDirective"),
            details.get("blocked-uri") or details.get("blockedURL"),
            details.get("document-uri") or details.get("documentURL"),
            details.get("source-file") or details.get("sourceFile"),
            details.get("line-number") or details.get("lineNumber"),
        )
    return "", 204


def init_app(app: Flask) -> None:
    app.add_template_global(csp_nonce)
    app.after_request(set_security_headers)  # the click redirect adds them itself (track.routes)
    if app.config.get("CSP_REPORTS"):
        # Development only, so no route matrix row: it exists only where reports are on.
        from portal.extensions import csrf

        app.add_url_rule(REPORT_PATH, "csp_report", csrf.exempt(csp_report), methods=["POST"])
