"""The end checks of bench/redirect.py and bench/ingest.py, run in a child process with the
instance's environment once the portal has stopped (``config.py`` reads it at import):

    python bench/_checks.py clicks IDS_FILE        # every click id the portal answered is stored
    python bench/_checks.py conversions IDS_FILE   # every sale answered 201 is stored, with its lines

Both also recount every rollup from the raw rows (``rollups.rebuild``, then rolled back) and
compare it with what the requests kept up to date; ``conversions`` replays every partner's
sales in order from scratch (tiers from the raw conversions, the rules' ``decide``) and
compares each sale's commission lines. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _app():
    sys.path.insert(0, str(ROOT))
    from portal import create_app

    return create_app()


def _grain_rows() -> dict[str, dict[tuple, tuple]]:
    """Every rollup row (all-zero rows left out: a recount never writes them)."""
    import sqlalchemy as sa

    from portal.extensions import db
    from portal.services.rollups import GRAINS, _counters_of

    rows = {}
    for grain in GRAINS:
        counters = _counters_of(grain.table)
        columns = [grain.table.c[name] for name in (*grain.key_columns, *counters)]
        table = {}
        for row in db.session.execute(sa.select(*columns)):
            key, values = tuple(row[: len(grain.key_columns)]), tuple(row[len(grain.key_columns) :])
            if any(values):
                table[key] = values
        rows[grain.table.name] = table
    return rows


def check_rollups() -> dict:
    """Recount every rollup from the raw rows and compare (the recount is rolled back)."""
    from portal.extensions import db
    from portal.services import rollups

    kept = _grain_rows()
    rollups.rebuild(db.session)
    recounted = _grain_rows()
    db.session.rollback()
    differences = {}
    for table, rows in kept.items():
        other = recounted[table]
        wrong = [key for key in set(rows) | set(other) if rows.get(key) != other.get(key)]
        if wrong:
            sample = sorted(wrong, key=str)[:3]
            differences[table] = {
                "rows": len(wrong),
                "e.g.": [(str(key), rows.get(key), other.get(key)) for key in sample],
            }
    return {"rollup_rows": sum(len(rows) for rows in kept.values()), "rollup_differences": differences}


def _answered(path: str) -> set[str]:
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}


def check_clicks(ids_path: str) -> dict:
    import sqlalchemy as sa

    from portal.extensions import db
    from portal.models import Click

    answered = _answered(ids_path)
    stored = set(db.session.scalars(sa.select(Click.id)))
    return {
        "answered": len(answered),
        "stored": len(stored),
        "missing": len(answered - stored),
        "missing_e.g.": sorted(answered - stored)[:3],
        "stored_unanswered": len(stored - answered),
        **check_rollups(),
    }


def _replay(program, conversions, lines_by_conversion) -> tuple[int, list]:
    """Every partner's sales in order, from scratch: the tier each sale should earn (from the
    raw conversions before it, over the engine's windows), the lines ``decide`` gives, compared
    with the stored lines. Returns (sales compared, mismatches)."""
    import sqlalchemy as sa

    from portal.extensions import db
    from portal.models import Campaign, ConversionStatus
    from portal.services import rewards
    from portal.services.rewards import RuleContext, TierRule

    tz = rewards.zone(program)
    tiers = sorted((TierRule.of(t) for t in rewards.all_tiers()), key=lambda t: t.rank, reverse=True)
    campaigns = list(db.session.scalars(sa.select(Campaign)))
    by_partner = defaultdict(list)
    for conversion in conversions:
        if conversion.partner_id is not None:
            by_partner[conversion.partner_id].append(conversion)
    compared, mismatches = 0, []
    for partner_id, sales in by_partner.items():
        tier = None
        counted: list[tuple] = []  # (local day, net sale) of the accepted sales so far
        for conversion in sorted(sales, key=lambda c: c.id):
            stored = sorted(
                (line.kind, line.amount_minor) for line in lines_by_conversion.get(conversion.id, [])
            )
            if conversion.status != ConversionStatus.PENDING:
                expected = []
            else:
                reached = False
                net = conversion.amount_minor - conversion.refunded_minor
                for candidate in tiers:
                    if tier is not None and candidate.rank <= tier.rank:
                        break
                    hit = False
                    for first, last, _label in rewards.live_day_windows(
                        candidate, conversion.occurred_at, tz
                    ):
                        inside = [amount for day, amount in counted if first <= day <= last]
                        value = (
                            len(inside) + 1
                            if candidate.threshold_metric == "conversions"
                            else sum(inside) + net
                        )
                        hit = hit or value >= candidate.threshold_value
                    if hit:
                        tier, reached = candidate, True
                        break
                bonus = [
                    c
                    for c in campaigns
                    if c.reward == "bonus"
                    and c.starts_at <= conversion.occurred_at < c.ends_at
                    and rewards.campaign_open_to(c, partner_id, tier.id if tier else None, set())
                ]
                context = RuleContext(tier=tier, tier_just_reached=reached, bonus_campaigns=bonus)
                expected = sorted(
                    (d.kind, d.amount_minor) for d in rewards.decide(program, conversion, context)
                )
                counted.append((conversion.occurred_at.astimezone(tz).date(), net))
            compared += 1
            if stored != expected:
                mismatches.append(
                    {
                        "transaction_id": conversion.transaction_id,
                        "partner_id": partner_id,
                        "stored": stored,
                        "expected": expected,
                        "created_at": conversion.created_at.isoformat(),
                    }
                )
    return compared, mismatches


def _overlapping(mismatch: dict, conversions_by_partner: dict, seconds: float = 1.0) -> bool:
    """Whether another sale of the same partner was received within ``seconds`` of this one."""
    from datetime import datetime

    at = datetime.fromisoformat(mismatch["created_at"])
    return any(
        other.transaction_id != mismatch["transaction_id"]
        and abs((other.created_at - at).total_seconds()) < seconds
        for other in conversions_by_partner[mismatch["partner_id"]]
    )


def check_conversions(ids_path: str) -> dict:
    import sqlalchemy as sa

    from portal.extensions import db
    from portal.models import Commission, Conversion, ConversionStatus
    from portal.services.program import get_program

    answered = _answered(ids_path)
    conversions = list(db.session.scalars(sa.select(Conversion).order_by(Conversion.id)))
    stored = {c.transaction_id for c in conversions}
    lines = defaultdict(list)
    for line in db.session.scalars(sa.select(Commission).where(Commission.conversion_id.is_not(None))):
        lines[line.conversion_id].append(line)
    earning = [c for c in conversions if c.partner_id is not None and c.status == ConversionStatus.PENDING]
    without_lines = [c.transaction_id for c in earning if not lines.get(c.id)]
    program = get_program()
    compared, mismatches = _replay(program, conversions, lines)
    by_partner = defaultdict(list)
    for conversion in conversions:
        by_partner[conversion.partner_id].append(conversion)
    concurrent = [m for m in mismatches if _overlapping(m, by_partner)]
    rollup = check_rollups()
    return {
        "answered": len(answered),
        "stored": len(stored),
        "missing": len(answered - stored),
        "missing_e.g.": sorted(answered - stored)[:3],
        "stored_unanswered": len(stored - answered),
        "by_ref": sum(1 for c in conversions if c.attribution_method == "ref" and c.partner_id is not None),
        "lines": sum(len(v) for v in lines.values()),
        "without_lines": len(without_lines),
        "replayed": compared,
        "mismatches": len(mismatches),
        "mismatches_between_overlapping_sales": len(concurrent),
        "mismatches_e.g.": mismatches[:3],
        "tier_changes": db.session.scalar(sa.text("SELECT count(*) FROM tier_changes")),
        "dialect": db.session.get_bind().dialect.name,
        **rollup,
        **check_outbox(),
    }


def check_outbox() -> dict:
    """What the outbox dispatcher did with the run's events: the newest event, the lowest
    consumer position (equal once every event was handed on), and the upgrades against the
    tier-upgrade messages sent for them."""
    import sqlalchemy as sa

    from portal.extensions import db

    queries = {
        "newest_event": "SELECT coalesce(max(id), 0) FROM outbox_events",
        "lowest_position": "SELECT coalesce(min(position), 0) FROM outbox_consumers",
        "upgrades": "SELECT count(*) FROM tier_changes WHERE upgrade",
        "upgrade_messages": "SELECT count(*) FROM threads WHERE automatic_kind = 'tier_upgrade'",
    }
    return {name: db.session.scalar(sa.text(sql)) for name, sql in queries.items()}


def main() -> None:
    what, ids_path = sys.argv[1], sys.argv[2]
    app = _app()
    with app.app_context():
        result = check_clicks(ids_path) if what == "clicks" else check_conversions(ids_path)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
