"""Small helpers shared by the views."""

from __future__ import annotations

from flask import render_template, request


def render_page_or_partial(page: str, partial: str, **context) -> str:
    """Full page for a normal request; just the fragment for an htmx swap.

    The page includes the partial, so both answers share one piece of markup.
    """
    if request.htmx and not request.htmx.boosted:
        return render_template(partial, **context)
    return render_template(page, **context)
