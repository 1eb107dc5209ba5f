"""The application factory: a table of contents of the portal."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from flask import Flask, Request
from flask.logging import default_handler
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import SecurityError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.utils import cached_property

from config import Config, finalise_base_url, finalise_secret_key, get_config
from portal.extensions import babel, csrf, db, htmx, limiter, login_manager, migrate, socketio

# Endpoints that skip the app-wide request hooks (see PortalFlask).


class CanonicalOriginRequest(Request):
    """A request whose absolute roots are the portal's canonical origin, not its Host header.

    Mixed into whatever request class the extensions leave (htmx-flask sets its own) by
    ``use_canonical_origin``."""

    @cached_property
    def host_url(self) -> str:
        from portal.urls import base_url

        base = base_url()
        return f"{base.scheme}://{base.netloc}/"

    @cached_property
    def root_url(self) -> str:
        from portal.urls import origin_root

        return origin_root()


class PortalFlask(Flask):
    """Flask, except that every URL adapter, in a request or not, builds on
    ``PORTAL_BASE_URL``: its scheme, host and path replace the request's, so
    ``url_for(..., _external=True)`` never follows a client's ``Host`` or
    ``X-Forwarded-Host`` (portal/urls.py). (It overrides no request dispatch: the click
    redirect is routed at the WSGI level, see ``register_realtime``.)"""

    def get_send_file_max_age(self, filename):
        from portal import staticfiles

        return staticfiles.max_age(filename, super().get_send_file_max_age(filename))

    def send_static_file(self, filename):
        from portal import staticfiles

        response = super().send_static_file(filename)
        if response.cache_control.max_age == staticfiles.MAX_AGE:
            response.cache_control.immutable = True  # its address changes with its content
        return response

    def create_url_adapter(self, request):
        from portal.urls import base_url

        base = base_url(self.config)
        try:
            adapter = super().create_url_adapter(request)
        except SecurityError as exc:
            # A Host outside TRUSTED_HOSTS: answer 400, and still let the error page build
            # its links (Flask would leave the request without an adapter).
            request.routing_exception = exc
            return self.url_map.bind(
                base.netloc,
                script_name=base.path or "/",
                url_scheme=base.scheme,
                path_info=request.path,
                default_method=request.method,
            )
        if adapter is None:
            # Outside a request (jobs, the CLI): no SERVER_NAME needed to build addresses.
            return self.url_map.bind(base.netloc, script_name=base.path or "/", url_scheme=base.scheme)
        # Matching does not look at the host (no host or subdomain matching here);
        # building absolute addresses and redirects does, and gets the canonical origin.
        adapter.server_name = base.netloc
        adapter.url_scheme = base.scheme
        if base.path:
            adapter.script_name = base.path + "/"
        return adapter


def create_app(config_class: type[Config] | None = None, **overrides) -> Flask:
    app = PortalFlask(__name__, instance_path=str(_instance_dir()))
    app.config.from_object(config_class or get_config())
    app.config.update(overrides)
    finalise_secret_key(app.config)
    finalise_base_url(app.config)
    app.session_interface = _PortalSessionInterface()
    if (
        app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
        and ":memory:" not in app.config["SQLALCHEMY_DATABASE_URI"]
    ):
        # SQLite has one writer: a few connections queue fairly in the pool instead
        # of many spinning in SQLite's busy handler.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **app.config["SQLALCHEMY_ENGINE_OPTIONS"],
            "pool_size": app.config["SQLITE_POOL_SIZE"],
            "max_overflow": 0,
            "pool_pre_ping": False,
        }
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        # A database host that does not answer fails the request (a 503) in seconds
        # instead of the operating system's minutes of TCP retries.
        options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **options,
            "connect_args": {
                "connect_timeout": app.config["DATABASE_CONNECT_TIMEOUT"],
                **options.get("connect_args", {}),
            },
        }
    configure_logging(app)
    register_extensions(app)
    use_canonical_origin(app)
    register_input_guards(app)
    register_blueprints(app)
    register_realtime(app)
    register_mail_delivery(app)
    register_template_helpers(app)
    register_security_headers(app)
    register_cli(app)
    register_errorhandlers(app)
    if app.config["PROXY_FIX_HOPS"]:
        hops = app.config["PROXY_FIX_HOPS"]
        # X-Forwarded-Host stays unread (x_host=0): a client can send one through many
        # proxies, and addresses come from PORTAL_BASE_URL anyway.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0)
    return app


def _instance_dir():
    from config import INSTANCE_DIR

    return INSTANCE_DIR


class _UnsavedSession(SecureCookieSession):
    """A session that lives for one request under /go/ or /api/ and is never written back."""


# Paths whose requests never use the visitor's session: the click redirect (the hot path)
# and the tracking API (a brand's server, authenticated by its key on every request).
SESSIONLESS_PATHS = ("/go/", "/api/")


class _PortalSessionInterface(SecureCookieSessionInterface):
    """The click redirect and the tracking API read no session cookie: they never use one.

    They get an empty session that is never saved rather than the null one (which refuses
    writes), so that an error page there (``/go/``, ``/go/abc%0a``: 404), which renders a
    CSRF token, works and leaves a signed-in visitor's cookie alone. (The session opens
    before routing, so the path decides, not the endpoint.)"""

    def open_session(self, app, request):
        if request.path.startswith(SESSIONLESS_PATHS):
            return _UnsavedSession()
        return super().open_session(app, request)

    def save_session(self, app, session, response):
        if isinstance(session, _UnsavedSession):
            return
        super().save_session(app, session, response)


class _OneLineStorageErrors(logging.Filter):
    """Flask-Limiter logs a traceback when a request meets a Redis that another request has
    just found dead (it swallows the error and lets the request through): one line is enough.

    It also says "falling back to in-memory storage" once from every request thread that met
    the dead Redis before the first of them marked it dead (it checks, then logs, then marks,
    without a lock): the outage is told once here, until the limiter says the storage has
    recovered (or a new app starts, which has a new outage to tell)."""

    FELL_BACK = "falling back to in-memory storage"
    RECOVERED = "storage recovered"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._fell_back = False

    def restart(self) -> None:
        with self._lock:
            self._fell_back = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        with self._lock:
            if self.FELL_BACK in message:
                if self._fell_back:
                    return False
                self._fell_back = True
            elif self.RECOVERED in message:
                self._fell_back = False
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{message}: {type(error).__name__}: {error}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def configure_logging(app: Flask) -> None:
    app.logger.setLevel(app.config["LOG_LEVEL"])
    # Outages of Redis are told once by these (rate limits in memory, live events on one
    # worker); Flask-Limiter's own logger has only a NullHandler, so give both the app's.
    for name in ("flask-limiter", "portal.realtime"):
        logger = logging.getLogger(name)
        if default_handler not in logger.handlers:
            logger.addHandler(default_handler)
    limiter_logger = logging.getLogger("flask-limiter")
    said_once = next((f for f in limiter_logger.filters if isinstance(f, _OneLineStorageErrors)), None)
    if said_once is None:
        limiter_logger.addFilter(_OneLineStorageErrors())
        # "Rate limit storage recovered" is an INFO record: it must reach the filter.
        limiter_logger.setLevel(logging.INFO)
        logger.setLevel(logging.INFO)
    else:
        said_once.restart()
    generated = app.config.get("SECRET_KEY_GENERATED")
    if generated:
        app.logger.warning(
            "SECRET_KEY is not set; using a development key kept in %s. Set SECRET_KEY in production.",
            generated,
        )


def register_extensions(app: Flask) -> None:
    from portal import models  # noqa: F401 - the metadata must know every table
    from portal.database import configure_engine_events

    db.init_app(app)
    with app.app_context():
        configure_engine_events(db.engine)
    migrate.init_app(app, db, directory=str(Path(app.root_path).parent / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    htmx.init_app(app)
    if app.config["RATELIMIT_STORAGE_URI"].startswith(("redis://", "rediss://")):
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry

        # Fail fast while Redis is down (the limiter then counts in memory) instead of
        # redis-py's default ten retries with back-off in every request. Only a refused or
        # dropped connection is retried (a pooled one left from before a restart); a timeout
        # (Redis frozen) is not, and no CLIENT SETINFO round trip is spent on connecting, so
        # a frozen Redis costs a request one socket timeout, not four.
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            **app.config["RATELIMIT_STORAGE_OPTIONS"],
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "driver_info": None,
        }
    limiter.init_app(app)

    from portal import clickwriter, lookups, salewriter, storage

    lookups.init_app(app)
    clickwriter.init_app(app)
    salewriter.init_app(app)
    storage.init_app(app)

    from portal import i18n

    i18n.init_app(app, babel)

    from portal.security import configure_login

    configure_login(app, login_manager)


def use_canonical_origin(app: Flask) -> None:
    """``request.host_url`` / ``url_root`` answer PORTAL_BASE_URL (URL adapters: PortalFlask)."""
    if not issubclass(app.request_class, CanonicalOriginRequest):
        app.request_class = type("PortalRequest", (CanonicalOriginRequest, app.request_class), {})


def register_input_guards(app: Flask) -> None:
    from portal import guards

    guards.init_app(app)


def register_blueprints(app: Flask) -> None:
    from portal.blueprints.admin import bp as admin_bp
    from portal.blueprints.api import bp as api_bp
    from portal.blueprints.auth import bp as auth_bp
    from portal.blueprints.health import bp as health_bp
    from portal.blueprints.media import bp as media_bp
    from portal.blueprints.partner import bp as partner_bp
    from portal.blueprints.track import bp as track_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(partner_bp, url_prefix="/partner")
    app.register_blueprint(admin_bp, url_prefix="/admin")
    app.register_blueprint(track_bp, url_prefix="/go")
    app.register_blueprint(api_bp, url_prefix="/api/v1")
    app.register_blueprint(health_bp)
    app.register_blueprint(media_bp, url_prefix="/media")


def register_realtime(app: Flask) -> None:
    from portal import realtime

    origins = app.config.get("SOCKETIO_CORS_ORIGINS")
    # Flask-SocketIO keeps the queue manager of an earlier init_app; each app
    # (several exist in the tests) must get the one its own config asks for.
    for option in ("client_manager", "message_queue", "channel"):
        socketio.server_options.pop(option, None)
    queue = {}
    if app.config.get("REDIS_URL"):
        # Redis is optional at run time: see realtime.PortalRedisManager.
        queue["client_manager"] = realtime.PortalRedisManager(
            app.config["REDIS_URL"], app.config["SOCKETIO_CHANNEL"]
        )
    socketio.init_app(
        app,
        async_mode=app.config["SOCKETIO_ASYNC_MODE"],
        **queue,
        manage_session=False,
        cors_allowed_origins=origins.split(",") if origins else None,
        logger=False,
        engineio_logger=False,
    )
    realtime.register_handlers(socketio)
    # Routed by path at the WSGI level: /socket.io/ through the engine.io middleware, the
    # click redirect /go/ and the conversion API's sales answered by lean handlers of their own
    # (portal/blueprints/track/routes.py, portal/blueprints/api/lean.py), every page by Flask;
    # none of the first three pays for the others' per-request work.
    from portal.blueprints.api import lean as lean_api
    from portal.blueprints.track.routes import PREFIX as CLICK_PREFIX
    from portal.blueprints.track.routes import serve as serve_click

    engineio_app = app.wsgi_app
    flask_app = engineio_app.wsgi_app

    def route_by_path(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(CLICK_PREFIX):
            return serve_click(app, environ, start_response, flask_app)
        if path == lean_api.PATH:
            return lean_api.serve(app, environ, start_response, flask_app)
        if path.startswith("/socket.io/"):
            # No per-message compression: live events are a few bytes ("look again"), and a
            # browser's permessage-deflate offer, accepted, cost every open page its own zlib
            # streams (~100 MiB a socket worker at 1,000 pages) and each send ~25% more CPU.
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
            return engineio_app(environ, start_response)
        return flask_app(environ, start_response)

    app.wsgi_app = route_by_path


def register_mail_delivery(app: Flask) -> None:
    from portal.services import delivery, outbox

    delivery.init_app(app)
    outbox.init_app(app)  # after it: its hook runs first, so the e-mails it writes go out in its pass


def register_template_helpers(app: Flask) -> None:
    from portal import staticfiles, templating

    staticfiles.init_app(app)  # static addresses carry their content's version
    templating.init_app(app)


def register_security_headers(app: Flask) -> None:
    from portal import headers

    headers.init_app(app)


def register_cli(app: Flask) -> None:
    from portal.cli import portal_cli

    app.cli.add_command(portal_cli)


def register_errorhandlers(app: Flask) -> None:
    from portal.errorpages import init_app

    init_app(app)


logging.getLogger("engineio.server").setLevel(logging.WARNING)
logging.getLogger("socketio.server").setLevel(logging.WARNING)
