"""Every fragment that refreshes itself on a live event replaces a refresh still in flight.

htmx queues an event that arrives during a refresh on the element itself; a fragment that
swaps itself out whole (``outerHTML``) loses that queue with the old element, so the second
event never refreshes it (the e2e proof, in tests/e2e/test_event_messages_live.py:
``test_a_message_that_lands_while_the_dashboard_refreshes_still_shows``).
``hx-sync="this:replace"`` aborts the stale refresh and asks again; ``hx-disinherit`` keeps the
rule off the forms inside, whose posts must never be aborted by a refresh.
"""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[2] / "portal" / "templates"
_LIVE_TAG = re.compile(r"<[a-z]+\b[^>]*hx-trigger=\"[^\"]*portal:[^\"]*from:body[^\"]*\"[^>]*>", re.S)


def _live_tags() -> list[tuple[str, str]]:
    return [
        (str(path.relative_to(TEMPLATES)), tag)
        for path in sorted(TEMPLATES.rglob("*.html"))
        for tag in _LIVE_TAG.findall(path.read_text(encoding="utf-8"))
    ]


def test_the_templates_have_live_fragments():
    assert len(_live_tags()) >= 19


def test_every_live_fragment_replaces_a_refresh_in_flight_and_keeps_it_to_itself():
    missing = [
        name
        for name, tag in _live_tags()
        if 'hx-sync="this:replace"' not in tag or 'hx-disinherit="hx-sync"' not in tag
    ]
    assert missing == []


def test_every_live_fragment_refreshes_when_a_page_reconnects():
    """A page whose socket dropped missed events: ``portal:resync`` refreshes all its live parts."""
    deaf = [name for name, tag in _live_tags() if "portal:resync from:body" not in tag]
    assert deaf == []
