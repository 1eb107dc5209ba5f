"""Settings for every environment. This module is the only reader of ``os.environ``.

Pick the class with ``PORTAL_ENV`` (development, testing, production); every
setting below can be overridden by the environment variable of the same name
documented in the README.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import ClassVar, NamedTuple
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = Path(os.environ.get("PORTAL_INSTANCE_DIR", BASE_DIR / "instance"))


# The look-up cache's defaults (see TRACKING_CACHE_SECONDS below); the benchmarks read them here.
DEFAULT_TRACKING_CACHE_SECONDS = 300.0
DEFAULT_TRACKING_CACHE_CHECK_SECONDS = 2.0


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _str(name: str, default: str | None = None) -> str | None:
    raw = os.environ.get(name)
    return raw if raw not in (None, "") else default


def _list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


# What `make run` prints (HOST and PORT, see the Makefile): the development default of PORTAL_BASE_URL.
DEVELOPMENT_BASE_URL = f"http://{_str('HOST', '127.0.0.1')}:{_int('PORT', 5000)}"


class Config:
    ENV_NAME = "base"
    SECRET_KEY = _str("SECRET_KEY")
    SECRET_KEY_GENERATED = False

    SQLALCHEMY_DATABASE_URI = _str("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'portal.db'}")
    SQLALCHEMY_ENGINE_OPTIONS: ClassVar[dict] = {"pool_pre_ping": True}
    SQLITE_POOL_SIZE = _int("SQLITE_POOL_SIZE", 4)
    # PostgreSQL: seconds to wait for a new connection before the request answers 503.
    DATABASE_CONNECT_TIMEOUT = _int("DATABASE_CONNECT_TIMEOUT", 5)

    REDIS_URL = _str("REDIS_URL")
    # Flask-Limiter keeps its counters here; Redis when configured so that
    # every worker shares one count.
    RATELIMIT_STORAGE_URI = _str("RATELIMIT_STORAGE_URI", _str("REDIS_URL", "memory://"))
    RATELIMIT_ENABLED = _bool("RATELIMIT_ENABLED", True)
    RATELIMIT_HEADERS_ENABLED = True
    # Redis is optional at run time: while it is unreachable each process counts in its
    # own memory (said once in the log) and goes back to Redis when it answers again.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = _bool("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    # Requests already counting against Redis when another thread switched to memory fail with
    # the storage's error; let them through (logged) rather than answer 500 (seen: one sale of 60).
    RATELIMIT_SWALLOW_ERRORS = _bool("RATELIMIT_SWALLOW_ERRORS", True)
    RATELIMIT_STORAGE_OPTIONS: ClassVar[dict] = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
    LOGIN_RATE_LIMIT = _str("LOGIN_RATE_LIMIT", "10 per minute;50 per hour")
    PASSWORD_RESET_RATE_LIMIT = _str("PASSWORD_RESET_RATE_LIMIT", "5 per 15 minutes")
    APPLY_RATE_LIMIT = _str("APPLY_RATE_LIMIT", "10 per hour")

    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE

    # Number of reverse proxies in front of the app whose X-Forwarded-For and
    # X-Forwarded-Proto are trusted (rate limits and click IPs depend on it).
    # X-Forwarded-Host is never read: addresses come from PORTAL_BASE_URL.
    PROXY_FIX_HOPS = _int("PROXY_FIX_HOPS", 0)

    # The portal's one public origin: every absolute address (e-mails, automatic
    # messages, the OpenAPI servers, embed codes, partner links) is built on it,
    # never on the request's Host. Required in production.
    PORTAL_BASE_URL = _str("PORTAL_BASE_URL", DEVELOPMENT_BASE_URL)
    # Host names a request may carry (Flask's TRUSTED_HOSTS); others get 400.
    # Unset: any in development, PORTAL_BASE_URL's host plus localhost in production.
    TRUSTED_HOSTS = _list("TRUSTED_HOSTS")

    # Security headers (portal/security.py): HSTS in production only; CSP
    # violations logged through POST /csp-report in development.
    HSTS_ENABLED = False
    HSTS_MAX_AGE = _int("HSTS_MAX_AGE", 365 * 86400)
    CSP_REPORTS = _bool("CSP_REPORTS", False)

    MAIL_SERVER = _str("MAIL_SERVER")
    MAIL_PORT = _int("MAIL_PORT", 25)
    MAIL_USERNAME = _str("MAIL_USERNAME")
    MAIL_PASSWORD = _str("MAIL_PASSWORD")
    MAIL_USE_TLS = _bool("MAIL_USE_TLS", False)
    MAIL_USE_SSL = _bool("MAIL_USE_SSL", False)
    MAIL_DEFAULT_SENDER = _str("MAIL_DEFAULT_SENDER", "Partner Portal <partners@localhost>")
    # Seconds each SMTP step (connect, greeting, each command) may take before the attempt
    # fails and is retried later; MAIL_TIMEOUT is the older name.
    MAIL_TIMEOUT = _int("MAIL_TIMEOUT_SECONDS", _int("MAIL_TIMEOUT", 10))
    # "background": e-mails a request committed go out from a thread of the process, so no
    # page waits on SMTP; "inline": at the end of the request (the tests' deterministic mode).
    MAIL_SEND_MODE = _str("MAIL_SEND_MODE", "background")
    # A failed e-mail is tried again after MAIL_RETRY_FIRST_SECONDS, then twice as long each
    # time up to MAIL_RETRY_MAX_SECONDS, and given up MAIL_GIVE_UP_HOURS after it was written.
    MAIL_RETRY_FIRST_SECONDS = _int("MAIL_RETRY_FIRST_SECONDS", 60)
    MAIL_RETRY_MAX_SECONDS = _int("MAIL_RETRY_MAX_SECONDS", 4 * 3600)
    MAIL_GIVE_UP_HOURS = _int("MAIL_GIVE_UP_HOURS", 48)

    # The event outbox: "background" hands what a request committed to a dispatcher thread of
    # the process; "process": a dispatcher process of its own, started by gunicorn's master
    # (gunicorn.conf.py; needs REDIS_URL); "inline" dispatches at the end of the request (the
    # tests); "off" leaves it all to `flask portal run-triggers`.
    OUTBOX_DISPATCH_MODE = _str("OUTBOX_DISPATCH_MODE", "background")
    # The background dispatcher waits this long after a commit's wake-up before it runs, so
    # one pass hands a whole burst of events on instead of one pass per request.
    OUTBOX_DISPATCH_DELAY_MS = _int("OUTBOX_DISPATCH_DELAY_MS", 250)
    # Outgoing webhooks: retried for WEBHOOK_RETRY_HOURS (then given up; an endpoint failing
    # that long is switched off), after WEBHOOK_RETRY_FIRST_SECONDS, doubling, at most _MAX_.
    WEBHOOK_RETRY_HOURS = _int("WEBHOOK_RETRY_HOURS", 72)
    WEBHOOK_RETRY_FIRST_SECONDS = _int("WEBHOOK_RETRY_FIRST_SECONDS", 30)
    WEBHOOK_RETRY_MAX_SECONDS = _int("WEBHOOK_RETRY_MAX_SECONDS", 6 * 3600)
    # Kinds of address a webhook may go to besides public ones: loopback, private, link_local.
    # None by default (no request to the portal's own network); development and tests allow loopback.
    WEBHOOK_ALLOW_NETWORKS = _list("WEBHOOK_ALLOW_NETWORKS") or []

    PASSWORD_RESET_MAX_AGE = _int("PASSWORD_RESET_MAX_AGE", 3600)
    INVITATION_MAX_AGE = _int("INVITATION_MAX_AGE", 7 * 86400)
    UNSUBSCRIBE_MAX_AGE = _int("UNSUBSCRIBE_MAX_AGE", 365 * 86400)

    BABEL_DEFAULT_LOCALE = "en"
    BABEL_DEFAULT_TIMEZONE = "UTC"
    BABEL_TRANSLATION_DIRECTORIES = str(BASE_DIR / "portal" / "translations")
    # The languages the portal speaks, by their Babel names; each but English has a catalogue
    # under portal/translations/<name>/ (README: Languages). The first is the fallback.
    SUPPORTED_LOCALES = ("en", "zh_Hans_CN")

    # /readyz and /healthz: each dependency gets this long to answer (the probe answers within ~2 s).
    PROBE_TIMEOUT_SECONDS = float(_str("PROBE_TIMEOUT_SECONDS", "1.5"))

    HOST = _str("HOST", "127.0.0.1")
    PORT = _int("PORT", 5000)
    LOG_LEVEL = _str("LOG_LEVEL", "INFO")

    # Socket.IO: "threading" works with the Flask dev server and gunicorn's
    # gthread worker through simple-websocket.
    SOCKETIO_ASYNC_MODE = _str("SOCKETIO_ASYNC_MODE", "threading")
    SOCKETIO_CORS_ORIGINS = _str("SOCKETIO_CORS_ORIGINS")

    # Socket.IO's Redis channel: deployments sharing one Redis need different names.
    SOCKETIO_CHANNEL = _str("SOCKETIO_CHANNEL", "flask-socketio")

    # The in-process scheduler runs `portal run-triggers` in the development server;
    # production runs the command from cron or a timer instead.
    SCHEDULER_ENABLED = _bool("SCHEDULER_ENABLED", False)
    SCHEDULER_INTERVAL_SECONDS = float(_str("SCHEDULER_INTERVAL_SECONDS", "300"))

    MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 16 * 1024 * 1024)

    # Click redirect: "buffered" writes clicks in batches off the request
    # thread; "inline" writes each in the request's transaction.
    CLICK_WRITE_MODE = _str("CLICK_WRITE_MODE", "buffered")
    CLICK_FLUSH_SECONDS = float(_str("CLICK_FLUSH_SECONDS", "0.5"))
    CLICK_BATCH_SIZE = _int("CLICK_BATCH_SIZE", 500)
    # Every answered click is appended here before the redirect answers, and stays until the
    # database has it (portal/clickwriter.py); one directory per machine, shared by its workers.
    CLICK_SPOOL_DIR = _str("CLICK_SPOOL_DIR", str(INSTANCE_DIR / "click-spool"))

    # Conversion API: "batched" writes the sales of concurrent requests many to a transaction
    # from one thread per process (portal/salewriter.py: group commit); "inline" writes each
    # in its request's own transaction. A request waits at most SALE_WRITE_TIMEOUT_SECONDS
    # for its batch (then 503; the client's retry is answered from the stored sale).
    SALE_WRITE_MODE = _str("SALE_WRITE_MODE", "batched")
    SALE_BATCH_SIZE = _int("SALE_BATCH_SIZE", 32)
    SALE_WRITERS = _int("SALE_WRITERS", 1)
    SALE_WRITE_TIMEOUT_SECONDS = float(_str("SALE_WRITE_TIMEOUT_SECONDS", "30"))
    # Under load, a batch waits up to this long for each further sale (twice it in all)
    # before it is written: fuller batches, less CPU a sale. 0: never wait.
    SALE_GATHER_MS = float(_str("SALE_GATHER_MS", "2"))

    # What the click redirect and the API look up on every request (links, the
    # program, API keys) is cached in each process (portal/lookups.py). A change
    # committed anywhere shows in every worker within TRACKING_CACHE_CHECK_SECONDS;
    # TRACKING_CACHE_SECONDS bounds an entry's life whatever happens.
    TRACKING_CACHE_SECONDS = float(_str("TRACKING_CACHE_SECONDS", str(DEFAULT_TRACKING_CACHE_SECONDS)))
    TRACKING_CACHE_CHECK_SECONDS = float(
        _str("TRACKING_CACHE_CHECK_SECONDS", str(DEFAULT_TRACKING_CACHE_CHECK_SECONDS))
    )

    # Tracking API
    API_RATE_LIMIT = _str("API_RATE_LIMIT", "1200 per minute")
    API_AUTH_FAILURE_LIMIT = _str("API_AUTH_FAILURE_LIMIT", "30 per minute")
    API_MAX_BODY_BYTES = _int("API_MAX_BODY_BYTES", 64 * 1024)

    # Creative files. "local": under STORAGE_LOCAL_DIR, served through signed,
    # expiring portal URLs. "s3": any S3-compatible store through boto3, which
    # finds its credentials itself (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
    # AWS_PROFILE, an instance role...).
    STORAGE_BACKEND = _str("STORAGE_BACKEND", "local")
    STORAGE_LOCAL_DIR = _str("STORAGE_LOCAL_DIR", str(INSTANCE_DIR / "media"))
    STORAGE_URL_EXPIRES = _int("STORAGE_URL_EXPIRES", 3600)
    S3_BUCKET = _str("S3_BUCKET")
    S3_PREFIX = _str("S3_PREFIX", "")
    S3_REGION = _str("S3_REGION")
    S3_ENDPOINT_URL = _str("S3_ENDPOINT_URL")
    S3_MAX_ATTEMPTS = _int("S3_MAX_ATTEMPTS", 3)
    S3_TIMEOUT_SECONDS = _int("S3_TIMEOUT_SECONDS", 10)
    # One banner or screenshot may be this large; a bulk upload takes this many at once.
    CREATIVE_MAX_BYTES = _int("CREATIVE_MAX_BYTES", 5 * 1024 * 1024)
    CREATIVE_BULK_MAX_FILES = _int("CREATIVE_BULK_MAX_FILES", 20)
    # Request-size limit of the creative upload pages only (MAX_CONTENT_LENGTH
    # stays small everywhere else): room for a full bulk upload, so that an
    # oversized file reaches the per-file check and gets a clear message.
    CREATIVE_UPLOAD_MAX_BYTES = _int(
        "CREATIVE_UPLOAD_MAX_BYTES", CREATIVE_MAX_BYTES * CREATIVE_BULK_MAX_FILES + 1024 * 1024
    )


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    DEBUG = _bool("FLASK_DEBUG", False)
    SCHEDULER_ENABLED = _bool("SCHEDULER_ENABLED", True)
    CSP_REPORTS = _bool("CSP_REPORTS", True)
    WEBHOOK_ALLOW_NETWORKS = _list("WEBHOOK_ALLOW_NETWORKS") or ["loopback"]


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "testing-secret-key-not-for-production"  # noqa: S105 - tests only
    SQLALCHEMY_DATABASE_URI = "sqlite:///:memory:"
    WTF_CSRF_ENABLED = False
    RATELIMIT_ENABLED = False
    RATELIMIT_STORAGE_URI = "memory://"
    REDIS_URL = None
    MAIL_SERVER = None
    MAIL_SEND_MODE = "inline"
    OUTBOX_DISPATCH_MODE = "inline"
    WEBHOOK_ALLOW_NETWORKS = ("loopback",)
    SERVER_NAME = "portal.test"
    CLICK_WRITE_MODE = "inline"
    SALE_WRITE_MODE = "inline"
    PORTAL_BASE_URL = "http://portal.test"
    TRUSTED_HOSTS = None
    SCHEDULER_ENABLED = False
    # The test harness gives every app its own folder; never the instance folder.
    STORAGE_BACKEND = "local"
    STORAGE_LOCAL_DIR = str(Path(tempfile.gettempdir()) / "portal-test-media")
    CLICK_SPOOL_DIR = str(Path(tempfile.gettempdir()) / f"portal-test-click-spool-{os.getpid()}")


class ProductionConfig(Config):
    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", True)
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    PREFERRED_URL_SCHEME = "https"
    PORTAL_BASE_URL = _str("PORTAL_BASE_URL")
    # Strict-Transport-Security on every response (see portal/security.py).
    HSTS_ENABLED = _bool("HSTS_ENABLED", True)


CONFIGS = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def get_config(name: str | None = None) -> type[Config]:
    """Return the settings class named by ``name`` or ``PORTAL_ENV``."""
    name = name or os.environ.get("PORTAL_ENV", "development")
    try:
        return CONFIGS[name]
    except KeyError:
        raise RuntimeError(f"PORTAL_ENV must be one of {', '.join(CONFIGS)}, not {name!r}") from None


def finalise_secret_key(config: dict) -> None:
    """Refuse to run production without SECRET_KEY; let development make one up."""
    if config.get("SECRET_KEY"):
        return
    if config.get("ENV_NAME") == "production":
        raise RuntimeError("SECRET_KEY must be set in production (see README: Configuration).")
    # Development: keep a generated key in the instance folder so sessions
    # survive a restart; the app logs that it did this.
    key_file = INSTANCE_DIR / "dev-secret-key"
    if key_file.exists():
        config["SECRET_KEY"] = key_file.read_text().strip()
    else:
        INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
        config["SECRET_KEY"] = secrets.token_urlsafe(32)
        key_file.write_text(config["SECRET_KEY"])
        key_file.chmod(0o600)
    config["SECRET_KEY_GENERATED"] = str(key_file)


class BaseURL(NamedTuple):
    """PORTAL_BASE_URL taken apart: ``https``, ``partners.example[:port]``, ``/portal`` or ``""``."""

    scheme: str
    netloc: str
    path: str

    @property
    def hostname(self) -> str:
        return urlsplit(f"//{self.netloc}").hostname or ""


def parse_base_url(value: str) -> BaseURL:
    """Check PORTAL_BASE_URL's shape: http(s), a host, no user, query or fragment."""
    parts = urlsplit(value.strip())
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "must start with https:// (or http:// in development)"
    elif not parts.hostname:
        problem = "must name a host"
    elif parts.username is not None or parts.password is not None:
        problem = "must not carry a user name or password"
    elif parts.query or parts.fragment:
        problem = "must not carry a query or fragment"
    if problem:
        raise RuntimeError(f"PORTAL_BASE_URL {problem} (got {value!r}; see README: Configuration).")
    return BaseURL(parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"))


def finalise_base_url(config: dict) -> None:
    """Refuse to run production without PORTAL_BASE_URL; trust only its host there."""
    value = config.get("PORTAL_BASE_URL")
    if not value:
        if config.get("ENV_NAME") == "production":
            raise RuntimeError(
                "PORTAL_BASE_URL must be set in production, e.g. https://partners.example.com "
                "(see README: Configuration)."
            )
        config["PORTAL_BASE_URL"] = value = DEVELOPMENT_BASE_URL
    base = parse_base_url(value)
    if config.get("ENV_NAME") == "production" and config.get("TRUSTED_HOSTS") is None:
        # localhost: a health check run on the machine itself (curl 127.0.0.1:8000/healthz).
        config["TRUSTED_HOSTS"] = [base.hostname, "localhost", "127.0.0.1"]
