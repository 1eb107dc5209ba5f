"""The event catalogue as documented: the README's table and signed example, and the OpenAPI
document's ``webhooks`` section, list every event type of ``events.TYPES``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import time_machine
from standardwebhooks.webhooks import Webhook

from portal.services.events import TYPES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_lists_every_event_type_once_with_its_example():
    rows = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| .* \| `(\{.*\})` \|$", README, flags=re.M)
    assert [event_type for event_type, _ in rows] == list(TYPES)
    for event_type, example in rows:
        assert json.loads(example) == TYPES[event_type][1], event_type


def test_the_readmes_signed_example_verifies_with_the_reference_implementation():
    block = README[README.index("```http\nPOST /hooks/portal") :].split("```")[1]
    head, body = block.split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.splitlines()[3:])
    secret = re.search(r"example secret `(whsec_[A-Za-z0-9+/=]+)`", README).group(1)
    signed_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    with time_machine.travel(signed_at, tick=False):
        payload = Webhook(secret).verify(body.strip(), headers)
    assert payload["type"] == "payout.paid" and payload["data"] == TYPES["payout.paid"][1]
    # One moment: the event's time is the header's, and it was paid by then.
    assert payload["timestamp"] == signed_at.isoformat()
    assert payload["data"]["paid_on"] <= signed_at.date().isoformat()


def test_the_openapi_document_has_a_webhook_per_event_type(client):
    from openapi_spec_validator import validate

    document = client.get("/api/v1/openapi.json").json
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert sorted(document["webhooks"]) == sorted(TYPES)  # the JSON answer sorts its keys
    for event_type, (_description, example) in TYPES.items():
        ref = document["webhooks"][event_type]["post"]["requestBody"]["content"]["application/json"]["schema"]
        schema = document["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
        assert schema["properties"]["type"] == {"const": event_type}
        assert set(schema["properties"]["data"]["properties"]) == set(example)
