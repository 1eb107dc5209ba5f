"""WSGI entry point: ``gunicorn wsgi:app``; ``python wsgi.py`` serves for development."""

from portal import create_app
from portal.extensions import socketio

app = create_app()

if __name__ == "__main__":
    from portal.jobs import start_scheduler

    app.extensions["click_writer"].start()  # replay what an earlier run left in the click spool
    start_scheduler(app)  # development only (SCHEDULER_ENABLED); production: cron runs `flask portal ...`
    from portal.heap import freeze_startup_heap

    freeze_startup_heap()  # as every gunicorn worker does (gunicorn.conf.py)
    socketio.run(
        app,
        host=app.config["HOST"],
        port=app.config["PORT"],
        debug=app.config.get("DEBUG", False),
        use_reloader=False,
        allow_unsafe_werkzeug=True,  # development server only; production uses gunicorn
    )
