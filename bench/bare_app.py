"""The baseline: a bare Flask app (no extensions, no database) with the portal's two hot endpoints.

``GET /go/<code>`` answers the same 302 as the portal's click redirect (landing page with
``ref`` and a random ``click_id``, the same headers and cookie); ``POST /api/v1/conversions``
parses the JSON body and answers 201. Served by gunicorn from bench/: ``gunicorn bare_app:app``.
``make bench`` runs every bench/*.py, so run directly this file only says what it is.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

from flask import Flask, jsonify, redirect, request

LANDING = "https://shop.northwind-outdoor.example/"

app = Flask(__name__)


@app.get("/go/<path:code>")
def follow_link(code: str):
    query = urlencode({"ref": code, "click_id": secrets.token_hex(16)})
    response = redirect(f"{LANDING}?{query}", 302)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer-when-downgrade"
    response.set_cookie(
        "pp_seen", "1", max_age=24 * 3600, path=request.path, httponly=True, samesite="Lax", secure=True
    )
    return response


@app.post("/api/v1/conversions")
def create_conversion():
    body = request.get_json()
    if not isinstance(body, dict) or "transaction_id" not in body:
        return jsonify({"error": "bad body"}), 400
    return jsonify({"conversion": {"transaction_id": body["transaction_id"], "status": "pending"}}), 201


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


if __name__ == "__main__":
    print("bare_app.py is the baseline app that redirect.py and ingest.py serve; nothing to measure here.")
