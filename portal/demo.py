"""The demo program `make run` seeds into an empty database."""

from __future__ import annotations

import io
import random
from datetime import timedelta

from werkzeug.security import generate_password_hash

from portal.extensions import db
from portal.models import Partner, PartnerStatus, Role, User
from portal.models.types import utcnow
from portal.services.audit import record_event
from portal.services.program import ProgramSettings, get_program, update_program_settings

DEMO_PASSWORD = "portal-demo"  # noqa: S105 - published demo credentials, demo data only

_FIRST = [
    "Ava",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Luca",
    "Mei",
    "Nora",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
    "Uma",
    "Vik",
    "Wen",
    "Yara",
]
_SITES = [
    "trailnotes",
    "gearlab",
    "summitdaily",
    "packlight",
    "campfirereviews",
    "peakpicks",
    "wildroutes",
    "basecamptips",
    "riverandridge",
    "outdoorfamily",
    "thrukers",
    "bikepacker",
]
_COUNTRIES = ["US", "GB", "DE", "FR", "CA", "AU", "NL", "SE", "ES", "IT", "JP", "BR"]
_CHANNELS = ["seo", "social", "ads", "email", "video", "other"]
_REJECT_REASONS = [
    "Your site has no content about outdoor gear yet; apply again once it does.",
    "We could not verify the social profiles you listed.",
    "Coupon and cashback sites are outside this program's terms.",
]


def seed_demo(partner_count: int = 36) -> str:
    """Create the demo program, its team and partners in mixed states. Caller commits."""
    rng = random.Random(20261124)
    password_hash = generate_password_hash(DEMO_PASSWORD)

    def user(email: str, name: str, role: Role) -> User:
        account = User(email=email, name=name, role=role, password_hash=password_hash)
        db.session.add(account)
        return account

    admin = user("admin@example.com", "Alex Admin", Role.ADMIN)
    manager = user("manager@example.com", "Morgan Manager", Role.MANAGER)
    db.session.flush()

    program = get_program()
    update_program_settings(
        program,
        admin,
        ProgramSettings(
            name="Northwind Outdoor",
            currency="USD",
            timezone="America/New_York",
            cookie_window_days=30,
            hold_period_days=30,
            allowed_domains=["northwind-outdoor.example"],
            default_landing_url="https://shop.northwind-outdoor.example/",
            minimum_payout_minor=5000,
            payout_schedule="monthly",
            payout_day=15,
            commission_type="percent",
            commission_percent_bp=1000,
            commission_flat_minor=0,
        ),
    )

    now = utcnow()
    demo_partner = Partner(
        user=user("partner@example.com", "Pat Partner", Role.PARTNER),
        ref_code="demo",
        status=PartnerStatus.APPROVED,
        website="https://trail-stories.example",
        channels=["seo", "social"],
        promotion_description="Long-form hiking trip reports with gear lists; 40k monthly readers.",
        country="US",
        applied_at=now - timedelta(days=120),
        status_changed_at=now - timedelta(days=118),
        status_changed_by=manager,
    )
    db.session.add(demo_partner)

    statuses = [PartnerStatus.APPROVED] * 20 + [PartnerStatus.APPLIED] * 8
    statuses += [PartnerStatus.REJECTED] * 5 + [PartnerStatus.SUSPENDED] * 3
    for i in range(partner_count):
        first = _FIRST[i % len(_FIRST)]
        site = _SITES[i % len(_SITES)]
        status = statuses[i % len(statuses)]
        applied = now - timedelta(days=rng.randint(1, 300), hours=rng.randint(0, 23))
        reason = None
        if status == PartnerStatus.REJECTED:
            reason = rng.choice(_REJECT_REASONS)
        elif status == PartnerStatus.SUSPENDED:
            reason = "Bidding on our brand name in search ads, against the program terms."
        partner = Partner(
            user=user(f"{first.lower()}.{site}{i}@example.com", f"{first} — {site.title()}", Role.PARTNER),
            ref_code=f"{site[:6]}{i:02d}",
            status=status,
            website=f"https://{site}.example",
            social_profiles=f"@{site}" if rng.random() < 0.6 else None,
            channels=sorted(rng.sample(_CHANNELS, rng.randint(1, 3))),
            promotion_description=f"{first} runs {site}.example: outdoor gear reviews for a niche audience.",
            country=rng.choice(_COUNTRIES),
            applied_at=applied,
            status_reason=reason,
            status_changed_at=None if status == PartnerStatus.APPLIED else applied + timedelta(days=2),
            status_changed_by=None if status == PartnerStatus.APPLIED else manager,
        )
        db.session.add(partner)
    db.session.flush()
    made = seed_demo_creatives(admin, program)
    rules = seed_demo_rewards(manager, program)
    record_event(admin, "demo.seeded", "program", program.id, partners=partner_count + 1, creatives=made)
    return f"program {program.name!r}, 2 operators, {partner_count + 1} partners, {made} creatives, {rules}"


def seed_demo_rewards(manager: User, program) -> str:
    """Bronze / Silver / Gold tiers, a running product campaign, a monthly ladder and one private deal.

    The demo partner (``demo``) keeps the plain base rate on unlisted products, which the
    browser tests rely on; the campaign covers two products only.
    """
    from datetime import datetime

    import sqlalchemy as sa

    from portal.models import PartnerTier, Tag, TierChange
    from portal.services import reward_rules, rewards
    from portal.services.reward_rules import CampaignInput, DealInput, RateInput, TierInput

    tiers = [
        reward_rules.save_tier(
            program,
            manager,
            TierInput(name, rank, RateInput("percent", bp, 0), "revenue", threshold, "previous_month", top),
        )
        for name, rank, bp, threshold, top in [
            ("Bronze", 1, 1200, 250_000, False),
            ("Silver", 2, 1500, 1_000_000, False),
            ("Gold", 3, 2000, 2_500_000, True),
        ]
    ]
    tz = rewards.zone(program)
    local_now = datetime.now(tz).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    reward_rules.save_campaign(
        program,
        manager,
        CampaignInput(
            name="Stove & pack fortnight",
            description="18 % on the Ember Mini stove and the Ridge 45 pack.",
            starts_local=local_now - timedelta(days=3),
            ends_local=local_now + timedelta(days=25),
            rate=RateInput("percent", 1800, 0),
            product_ids=["stove-ember-mini", "pack-ridge-45"],
            landing_url="https://shop.northwind-outdoor.example/sale/",
        ),
    )
    reward_rules.add_ladder_step(manager, 10, 5_000)
    reward_rules.add_ladder_step(manager, 25, 15_000)

    approved = db.session.scalars(
        sa.select(Partner)
        .where(Partner.status == PartnerStatus.APPROVED, Partner.ref_code != "demo")
        .order_by(Partner.id)
        .limit(3)
    ).all()
    top, silver_partner, bronze_partner = approved
    reward_rules.save_deal(
        program,
        manager,
        DealInput(
            partner_key=top.ref_code,
            rate=RateInput("percent", 2200, 0),
            note="Core partner: 22 % on everything while the partnership runs.",
        ),
    )
    tag = db.session.scalar(sa.select(Tag).where(Tag.name == (program.top_partner_tag or "top-partner")))
    if tag is None:
        tag = Tag(name=program.top_partner_tag or "top-partner")
        db.session.add(tag)
    top.tags.append(tag)
    now = utcnow()
    for partner, tier in ((top, tiers[2]), (silver_partner, tiers[1]), (bronze_partner, tiers[0])):
        db.session.add(PartnerTier(partner_id=partner.id, tier_id=tier.id, since=now))
        db.session.add(
            TierChange(
                partner_id=partner.id,
                to_tier_id=tier.id,
                to_name=tier.name,
                upgrade=True,
                reason="manual",
                actor_id=manager.id,
                note="Demo data",
                created_at=now,
            )
        )
    db.session.flush()
    return "3 tiers, 1 running campaign, a 2-step ladder and 1 private deal"


def seed_demo_activity(now=None) -> str:
    """Clicks, signups, sales, refunds and a paid payout for the demo partners (caller commits)."""
    import sqlalchemy as sa

    from portal.models import Link
    from portal.services import clicks, payouts, tracking
    from portal.services.links import create_link

    now = now or utcnow()
    rng = random.Random(7)
    program = get_program()
    manager = db.session.scalars(sa.select(User).where(User.email == "manager@example.com")).one()
    earners = list(
        db.session.scalars(
            sa.select(Partner).where(Partner.status == PartnerStatus.APPROVED).order_by(Partner.id).limit(8)
        )
    )
    pages = ["", "tents/", "sleeping-bags/", "backpacks/", "sale/"]
    sales = 0
    for index, partner in enumerate(earners):
        payouts.save_payout_account(
            partner,
            payouts.PayoutDetails(method="paypal", paypal_email=partner.user.email),
            partner.user,
        )
        links = [
            create_link(
                partner,
                program,
                label=label,
                channel=channel,
                destination_url=f"https://shop.northwind-outdoor.example/{page}",
            )
            for label, channel, page in [
                ("Blog sidebar", "seo", rng.choice(pages)),
                ("Instagram bio", "social", rng.choice(pages)),
                ("Newsletter", "email", rng.choice(pages)),
            ][: 3 if partner.ref_code == "demo" else 2]
        ]
        click_count = 160 if partner.ref_code == "demo" else rng.randint(20, 90)
        for n in range(click_count):
            link: Link = rng.choice(links)
            when = now - timedelta(days=rng.uniform(0, 150), minutes=rng.randint(0, 600))
            target = clicks.resolve(link.code)
            row = clicks.click_row(
                target,
                clicks.routing(),
                destination=link.destination_url,
                ip=f"198.51.100.{rng.randint(1, 250)}",
                user_agent="Mozilla/5.0 (demo)",
                referrer=None,
                sub=None,
                creative=None,
                seen_before=rng.random() < 0.2,
                now=when,
            )
            clicks.store_clicks(db.session, [row])
            if rng.random() < (0.15 if partner.ref_code == "demo" else 0.08):
                customer = f"demo-cus-{index}-{n}"
                tracking.record_signup(
                    program,
                    tracking.SignupInput(
                        customer_id=customer, click_id=row["id"], occurred_at=when + timedelta(minutes=5)
                    ),
                    {"customer_id": customer, "demo": True},
                )
                amount = rng.choice([3990, 5990, 8900, 12900, 24900])
                conversion, _ = tracking.record_conversion(
                    program,
                    tracking.ConversionInput(
                        transaction_id=f"demo-order-{index}-{n}",
                        amount_minor=amount,
                        currency=program.currency,
                        customer_id=customer,
                        occurred_at=when + timedelta(minutes=20),
                    ),
                    {"transaction_id": f"demo-order-{index}-{n}", "demo": True},
                    received_at=when + timedelta(minutes=20),  # history: received when it happened
                )
                sales += 1
                if rng.random() < 0.1 and conversion.commissions:
                    tracking.refund_conversion(conversion, None, "Customer returned the item")
        db.session.flush()
    # The demo partner's coupon code, and a request waiting in the console's queue.
    from portal.services import coupons

    demo = next((p for p in earners if p.ref_code == "demo"), None)
    if demo is not None:
        coupons.add_coupon(demo, "DEMO10", manager)
        coupons.request_coupon(demo, "DEMO-PODCAST", "Northwind's outdoor podcast, episode 12")
        sales += _demo_foreign_sales(program, demo, manager, now)
    # Last month's payout, already paid; this month's waits for approval.
    last = payouts.settle(
        program, (now - timedelta(days=30)).date(), now=now - timedelta(days=28), actor=manager
    )[0]
    if last is not None:
        last.created_at = now - timedelta(days=28)
        payouts.approve_batch(last, manager)
        last.approved_at = now - timedelta(days=27)
        paid_on = (now - timedelta(days=26)).date()
        # Through the service, so each payment has its audit event (check-ledger asks for it).
        for item in list(last.items):
            if item.status == "pending":
                payouts.mark_item_paid(item, manager, f"PAYPAL-{item.id:05d}", paid_on)
    payouts.settle(program, now.date(), now=now, actor=manager)
    commissions_total = sum(len(c.commissions) for c in db.session.scalars(sa.select(tracking.Conversion)))
    return f"{sales} sales with {commissions_total} commission lines for {len(earners)} partners"


def _demo_foreign_sales(program, partner: Partner, manager: User, now) -> int:
    """Demo exchange rates (typed, not the ECB's) for the last ten days, a sale in yen converted
    at them, and one in Swiss francs that has no rate: held, waiting in the console."""
    from portal.services import fx, tracking

    if program.currency in ("EUR", "JPY", "CHF"):
        return 0
    for back in range(10):
        day = (now - timedelta(days=back)).date()
        fx.add_rate("EUR", program.currency, day, f"1.08{back}", manager)
        fx.add_rate("EUR", "JPY", day, f"162.{40 + back}", manager)
    sales = (("demo-order-jp-1", 18_500, "JPY"), ("demo-order-ch-1", 8_990, "CHF"))
    for transaction_id, amount, currency in sales:
        tracking.record_conversion(
            program,
            tracking.ConversionInput(
                transaction_id=transaction_id,
                amount_minor=amount,
                currency=currency,
                ref=partner.ref_code,
                occurred_at=now - timedelta(days=2),
            ),
            {"transaction_id": transaction_id, "demo": True},
            received_at=now - timedelta(days=2),
        )
    return len(sales)


def _demo_banner(size: tuple[int, int], headline: str, colour: tuple[int, int, int]) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    draw.rectangle((6, 6, size[0] - 7, size[1] - 7), outline=(255, 255, 255), width=3)
    draw.text((18, 18), "Northwind Outdoor", fill=(255, 255, 255))
    draw.text((18, size[1] // 2 - 6), headline, fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def seed_demo_creatives(actor: User, program) -> int:
    """A few published creatives of every kind (files go to the configured store)."""
    from portal.services import creatives
    from portal.services.creative_files import Upload

    def details(name: str, channels: list[str], **content) -> creatives.CreativeInput:
        return creatives.CreativeInput(name=name, channels=channels, language="en", **content)

    def banner(name: str, size: tuple[int, int], colour: tuple[int, int, int], channels: list[str]):
        data = _demo_banner(size, "Autumn sale: up to 30% off tents", colour)
        upload = Upload(f"{name.lower().replace(' ', '-')}.png", len(data), data)
        return creatives.create_creative(
            "banner", actor, program, details(name, channels, campaign="autumn"), upload
        )

    made = [
        banner("Autumn sale square", (300, 250), (36, 83, 214), ["social", "seo"]),
        banner("Autumn sale leaderboard", (728, 90), (23, 112, 58), ["seo", "ads"]),
        creatives.create_creative(
            "text",
            actor,
            program,
            details(
                "Tent review blurb",
                ["seo", "social"],
                headline="The tent that survived a Scottish winter",
                body="Three seasons, two storms, zero leaks. "
                "Our full review of the Northwind Ridge 2: {link}",
                call_to_action="Check today's price: {link}",
            ),
        ),
        creatives.create_creative(
            "landing",
            actor,
            program,
            details(
                "Tents category page",
                ["seo", "ads", "social"],
                description="Every tent in stock, with filters by season and weight.",
                url="https://shop.northwind-outdoor.example/tents",
            ),
        ),
        creatives.create_creative(
            "email",
            actor,
            program,
            details(
                "Newsletter: autumn picks",
                ["email"],
                subject="Our autumn gear picks (and a discount)",
                body="Hi there,\n\nthe nights are getting colder. These are the picks we trust: {link}"
                "\n\nHappy trails!",
            ),
        ),
        creatives.create_creative(
            "video",
            actor,
            program,
            details(
                "Pitching the Ridge 2 in 60 seconds",
                ["video", "social"],
                description="Short how-to, good for reels and shorts.",
                url="https://video.northwind-outdoor.example/ridge-2-pitch",
            ),
        ),
    ]
    for creative in made:
        creatives.set_creative_status(creative, actor, "publish")
    return len(made)
