"""The OpenAPI 3.1 description of the tracking API, served at /api/v1/openapi.json.

Its words for people (title, summaries, descriptions) are in the request's language, built
per request like the API's error messages; what a machine reads (paths, operation ids,
field names, enums, patterns, examples) is the same in every language.
"""

from __future__ import annotations

from flask_babel import gettext as _

from portal.models import ConversionStatus, RejectionReason
from portal.services.payouts import LineState

_ID = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[\\x21-\\x7e]+$"}
_AMOUNT = {"type": "string", "pattern": "^[0-9]{1,15}(\\.[0-9]{1,4})?$", "examples": ["49.90"]}
_TIME = {"type": "string", "format": "date-time", "examples": ["2026-11-24T10:00:00Z"]}
_NULLABLE_STR = {"type": ["string", "null"]}


def _refund_id() -> dict:
    return _ID | {
        "maxLength": 100,
        "description": _(
            "Your own id for this refund. Sending it again with a body that means the same answers "
            "200 with the first answer and refunds nothing more; with other details, 409. A different "
            "refund_id is a new refund."
        ),
        "examples": ["RMA-1042"],
    }


def _sale_amount() -> dict:
    return _AMOUNT | {
        "description": _(
            "ASCII digits, no finer than the currency's minor unit (trailing zeros are fine: 49.900 "
            "is 49.90 USD), and at most the program's maximum sale (a setting; 1000000.00 unless the "
            "operator changed it): a larger amount is a 422."
        )
    }


def _occurred_at() -> dict:
    return _TIME | {
        "description": _(
            "When it happened, with a time zone; defaults to when it was received. A year outside "
            "2000-2100 or more than 24 hours ahead of the portal's clock is a 422. It never shortens "
            "the hold: a commission's confirm_after counts from when the portal received the sale. "
            "A sale dated further back than the program's cookie window is stored rejected "
            "(rejection_reason out_of_window)."
        )
    }


def _coupon() -> dict:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "examples": ["ANNA10"],
        "description": _(
            "The coupon code the shopper used, as typed (any case). A partner's code (3-40 of A-Z 0-9 - _) "
            "attributes the sale or signup to them when no click id does, and beats an older click of "
            "another partner unless the program chose first touch. Any other code (the shop's own, an "
            "unknown or switched-off one) is kept on the record and attributes nothing."
        ),
    }


def _error_response(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _errors() -> dict[str, dict]:
    return {
        "400": _error_response(_("Malformed request: not JSON, or not a JSON object.")),
        "401": _error_response(_("Missing, unknown or revoked API key.")),
        "413": _error_response(_("The body is larger than the API accepts.")),
        "422": _error_response(_("Validation failed; `fields` names each offending field.")),
        "429": _error_response(_("Too many requests for this key; slow down.")),
    }


def openapi_document(server_url: str) -> dict:
    conversion_ref = {"$ref": "#/components/schemas/ConversionEnvelope"}
    errors = _errors()
    occurred_at = _occurred_at()
    coupon = _coupon()
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": _("Partner Portal tracking API"),
            "version": "1.0.0",
            "description": _(
                "Report signups, sales and refunds from the brand's servers. Attribution, in order: a "
                "click id, a partner's coupon code, a ref code, the customer's earlier signup; a coupon "
                "code beats an older click of another partner unless the program chose first touch. "
                "Clicks and signups count inside the program's cookie window. Posting a transaction id "
                "again with a body that means the same (the same fields and values: 49.9 and 49.90 are "
                "one amount, one instant may be written in any time zone) answers 200 with the same "
                "result and creates nothing; with other details, 409. Refunds are the same with an "
                "optional refund_id."
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"apiKey": []}],
        "paths": {
            "/signups": {
                "post": {
                    "operationId": "createSignup",
                    "summary": _("Report a new customer (registration postback)."),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/SignupRequest"}}
                        },
                    },
                    "responses": {
                        "201": {
                            "description": _("Recorded."),
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/SignupEnvelope"}
                                }
                            },
                        },
                        "200": {
                            "description": _("Already recorded with the same details."),
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/SignupEnvelope"}
                                }
                            },
                        },
                        "409": _error_response(_("This customer id was reported with different details.")),
                        **errors,
                    },
                }
            },
            "/conversions": {
                "post": {
                    "operationId": "createConversion",
                    "summary": _("Report a sale (transaction postback)."),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ConversionRequest"}}
                        },
                    },
                    "responses": {
                        "201": {
                            "description": _("Recorded."),
                            "content": {"application/json": {"schema": conversion_ref}},
                        },
                        "200": {
                            "description": _("Already recorded with the same details."),
                            "content": {"application/json": {"schema": conversion_ref}},
                        },
                        "409": _error_response(_("This transaction id was reported with different details.")),
                        **errors,
                        "422": _error_response(
                            _(
                                "Validation failed; `fields` names each offending field: among others an "
                                "amount above the program's maximum sale or not in ASCII digits, an "
                                "occurred_at outside 2000-2100 or more than 24 hours ahead."
                            )
                        ),
                    },
                }
            },
            "/conversions/{transaction_id}": {
                "get": {
                    "operationId": "getConversion",
                    "summary": _("Read a conversion and its commission."),
                    "parameters": [{"name": "transaction_id", "in": "path", "required": True, "schema": _ID}],
                    "responses": {
                        "200": {
                            "description": _("The conversion."),
                            "content": {"application/json": {"schema": conversion_ref}},
                        },
                        "404": _error_response(_("No conversion has this transaction id.")),
                        "401": errors["401"],
                        "429": errors["429"],
                    },
                }
            },
            "/conversions/{transaction_id}/refund": {
                "post": {
                    "operationId": "refundConversion",
                    "summary": _(
                        "Refund all (no amount) or part of a sale; its commission share is reversed."
                    ),
                    "parameters": [{"name": "transaction_id", "in": "path", "required": True, "schema": _ID}],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/RefundRequest"}}
                        },
                    },
                    "description": _(
                        "Refunds sent at once add up exactly. With a refund_id, a retry (the same details) "
                        "is answered 200 with the first answer and refunds nothing more; the same refund_id "
                        "with other details is a 409. Without a refund_id every request is a new "
                        "refund, except that refunding a fully refunded sale (no amount) changes nothing."
                    ),
                    "responses": {
                        "200": {
                            "description": _(
                                "Refund applied; or a retry of a refund_id, answered with the first answer; "
                                "or a full refund of a sale already fully refunded (nothing changes)."
                            ),
                            "content": {"application/json": {"schema": conversion_ref}},
                        },
                        "404": _error_response(_("No conversion has this transaction id.")),
                        "409": _error_response(
                            _(
                                "This refund_id was already reported for this sale with a different body "
                                "(error code `conflict`, field `refund_id`)."
                            )
                        ),
                        **errors,
                        "422": _error_response(
                            _(
                                "Validation failed (`fields` names each offending field): the amount is more "
                                "than is left to refund, zero, or malformed; the refund_id is not 1-100 "
                                "printable characters."
                            )
                        ),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": _("An API key created by an admin."),
                }
            },
            "schemas": {
                "SignupRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["customer_id"],
                    "examples": [{"customer_id": "cus_1002", "coupon": "anna10"}],
                    "properties": {
                        "customer_id": _ID,
                        "click_id": _ID,
                        "coupon": coupon,
                        "ref": _ID,
                        "email": {"type": "string", "format": "email", "maxLength": 254},
                        "occurred_at": occurred_at,
                    },
                },
                "Signup": {
                    "type": "object",
                    "required": ["customer_id", "attributed", "partner_ref", "attributed_by", "occurred_at"],
                    "properties": {
                        "customer_id": {"type": "string"},
                        "attributed": {"type": "boolean"},
                        "partner_ref": _NULLABLE_STR,
                        "attributed_by": {
                            "type": ["string", "null"],
                            "enum": ["click_id", "coupon", "ref", None],
                        },
                        "note": _NULLABLE_STR,
                        "click_id": _NULLABLE_STR,
                        "coupon": _NULLABLE_STR,
                        "occurred_at": _TIME,
                    },
                },
                "SignupEnvelope": {
                    "type": "object",
                    "required": ["signup"],
                    "properties": {"signup": {"$ref": "#/components/schemas/Signup"}},
                },
                "ConversionRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["transaction_id", "amount", "currency"],
                    "examples": [
                        {
                            "transaction_id": "order-5001",
                            "amount": "49.90",
                            "currency": "USD",
                            "customer_id": "cus_1001",
                        },
                        {
                            "transaction_id": "order-5002",
                            "amount": "120.00",
                            "currency": "USD",
                            "coupon": "ANNA10",
                        },
                        {
                            "transaction_id": "order-5003",
                            "amount": "9500",
                            "currency": "JPY",
                            "ref": "anna",
                        },
                    ],
                    "properties": {
                        "transaction_id": _ID,
                        "amount": _sale_amount(),
                        "currency": {
                            "type": "string",
                            "pattern": "^[A-Z]{3}$",
                            "examples": ["USD", "JPY", "KWD"],
                            "description": _(
                                "Any active ISO 4217 code; the amount is no finer than its minor unit "
                                "(JPY 1, USD 0.01, KWD 0.001). A sale in another currency than the "
                                "program's is converted at the rate of its day (the UTC date of "
                                "occurred_at, or the newest rate of the 7 days before); without one it "
                                "is stored held until a rate arrives."
                            ),
                        },
                        "customer_id": _ID,
                        "click_id": _ID,
                        "coupon": coupon,
                        "ref": _ID,
                        "product_id": _ID,
                        "occurred_at": occurred_at,
                    },
                },
                "Commission": {
                    "type": "object",
                    "required": ["amount", "currency", "status", "confirm_after"],
                    "properties": {
                        "amount": _AMOUNT | {"pattern": "^-?[0-9]{1,15}(\\.[0-9]{1,4})?$"},
                        "currency": {"type": "string"},
                        # payouts.LineState: the same words as the partner's ledger and CSV.
                        "status": {"type": "string", "enum": [str(state) for state in LineState]},
                        "confirm_after": _TIME,
                    },
                },
                "Conversion": {
                    "type": "object",
                    "required": ["transaction_id", "status", "rejection_reason", "partner_ref", "commission"],
                    "properties": {
                        "transaction_id": {"type": "string"},
                        "status": {"type": "string", "enum": [s.value for s in ConversionStatus]},
                        "rejection_reason": {
                            "type": ["string", "null"],
                            "enum": [*(r.value for r in RejectionReason), None],
                        },
                        "flagged_reason": _NULLABLE_STR,
                        "partner_ref": _NULLABLE_STR,
                        "attributed_by": {
                            "type": ["string", "null"],
                            "enum": ["click_id", "coupon", "ref", "customer", None],
                        },
                        "coupon": _NULLABLE_STR,
                        "amount": _AMOUNT
                        | {
                            "type": ["string", "null"],
                            "description": _(
                                "In the program's currency; null while a sale in another currency "
                                "waits for its exchange rate (status held)."
                            ),
                        },
                        "refunded_amount": _AMOUNT | {"type": ["string", "null"]},
                        "currency": {"type": "string", "description": _("The program's currency.")},
                        "original": {
                            "description": _("A sale in another currency: what was sent, in its currency."),
                            "oneOf": [
                                {
                                    "type": "object",
                                    "required": ["amount", "refunded_amount", "currency"],
                                    "properties": {
                                        "amount": _AMOUNT,
                                        "refunded_amount": _AMOUNT,
                                        "currency": {"type": "string"},
                                    },
                                },
                                {"type": "null"},
                            ],
                        },
                        "exchange_rate": {
                            "description": _(
                                "The rate the sale was converted at: the program's currency for one unit "
                                "of the sale's, the day it is of, and its source."
                            ),
                            "oneOf": [
                                {
                                    "type": "object",
                                    "required": ["rate", "day", "source"],
                                    "properties": {
                                        "rate": {"type": "string", "examples": ["0.00671"]},
                                        "day": {"type": "string", "format": "date"},
                                        "source": {"type": "string", "examples": ["ecb via EUR"]},
                                    },
                                },
                                {"type": "null"},
                            ],
                        },
                        "customer_id": _NULLABLE_STR,
                        "product_id": _NULLABLE_STR,
                        "occurred_at": _TIME,
                        "commission": {
                            "oneOf": [{"$ref": "#/components/schemas/Commission"}, {"type": "null"}]
                        },
                    },
                },
                "ConversionEnvelope": {
                    "type": "object",
                    "required": ["conversion"],
                    "properties": {"conversion": {"$ref": "#/components/schemas/Conversion"}},
                },
                "RefundRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "amount": _AMOUNT
                        | {
                            "description": _(
                                "Part of the sale to refund, in the sale's own currency (the one it was "
                                "sent in); without it, whatever is left."
                            )
                        },
                        "reason": {"type": "string", "maxLength": 500},
                        "refund_id": _refund_id(),
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "fields"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "fields": {
                                    "type": "object",
                                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                        }
                    },
                },
            },
        },
    }
    document["webhooks"] = _webhooks()
    document["components"]["schemas"].update(_event_schemas())
    return document


def _json_type(value) -> dict:
    """The JSON Schema type of an example value (null stands for "may be absent of meaning")."""
    if value is None:
        return {"type": ["string", "null"]}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, list):
        return {"type": "array", "items": _json_type(value[0]) if value else {}}
    if isinstance(value, dict):
        return {"type": "object"}
    return {"type": "string"}


def _schema_name(event_type: str) -> str:
    return "Event_" + event_type.replace(".", "_")


def _event_schemas() -> dict:
    """One schema per event type: the body ``{type, timestamp, data}`` with its example."""
    from portal.services.events import TYPES

    schemas = {}
    for event_type, (description, example) in TYPES.items():
        schemas[_schema_name(event_type)] = {
            "type": "object",
            "description": description,
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": {"const": event_type},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": {
                    "type": "object",
                    "required": sorted(example),
                    "properties": {key: _json_type(value) for key, value in example.items()},
                },
            },
            "examples": [{"type": event_type, "timestamp": "2026-11-20T09:00:00+00:00", "data": example}],
        }
    return schemas


def _webhooks() -> dict:
    """OpenAPI 3.1 ``webhooks``: what the portal POSTs to each endpoint an operator adds
    (Standard Webhooks signatures: webhook-id, webhook-timestamp, webhook-signature)."""
    from portal.services.events import TYPES

    signed = [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}, "description": text}
        for name, text in (
            ("webhook-id", "msg_<event id>: the same on every retry of one event; ignore a repeat."),
            ("webhook-timestamp", "Unix seconds when this attempt was signed."),
            (
                "webhook-signature",
                'v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"> keyed with the endpoint\'s secret '
                "(whsec_ + base64 of the key).",
            ),
        )
    ]
    return {
        event_type: {
            "post": {
                "operationId": "event_" + event_type.replace(".", "_"),
                "summary": description,
                "parameters": signed,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{_schema_name(event_type)}"}
                        }
                    },
                },
                "responses": {
                    "2XX": {
                        "description": "Received. Anything else (or no answer in 10 s) is retried for 3 days."
                    }
                },
            }
        }
        for event_type, (description, _example) in TYPES.items()
    }
