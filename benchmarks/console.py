"""Console speed with 10,000 tickets: page times and commit -> websocket event delay in a browser.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/moedesk_bench_console REDIS_URL=redis://127.0.0.1:6379/5 \
        nice -n 10 .venv/bin/python benchmarks/console.py [--tickets 10000] [--requests 60] [--events 100]

The database should be a scratch one: it is migrated and filled with synthetic tickets (each with a
customer message, triage audit records, an agent run with a model call carrying routing data, a
handoff) until it holds --tickets tickets. A real uvicorn server is started on it; page times are
measured from a client on the same host (loopback, so they bound the server time from above).
The event delay is measured in Debian's Chromium on the inbox page: the benchmark creates tickets
through `ticket_create`, notes the time just before COMMIT, and the page records when the
`ticket.created` event arrives over the websocket (same machine, same clock).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
os.environ.setdefault("DJANGO_DEBUG", "1")
# Shared with the server: the session this script creates must verify there.
os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only-secret-not-for-production")
# Playwright's sync API keeps an event loop in this thread; our ORM calls are plain sync code.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

PAGES = {
    "inbox (open, page 1)": "/console/",
    "inbox rows: queue+priority filter": "/console/inbox/rows/?status=open&queue=billing&priority=high",
    "inbox rows: text search": "/console/inbox/rows/?status=&q=refund",
    "inbox rows: page 50, priority sort": "/console/inbox/rows/?status=&sort=priority&page=50",
    "ticket workspace": "/console/tickets/{ticket}/",
    "dashboard (24 h)": "/console/dashboard/?range=24h",
    # The all-time figures are reused while no row was added; "after a change" appends an audit
    # row before each request (as every live event does), so each of those requests recomputes.
    "dashboard (all 10k), after a change": "/console/dashboard/?range=all",
    "dashboard (all 10k), unchanged data": "/console/dashboard/?range=all",
    "routing overview (all)": "/console/routing/?range=all",
}
CHANGE_BEFORE = {"dashboard (all 10k), after a change"}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def routing_record(rng: random.Random, layers: int = 4, experts: int = 8, tokens: int = 32) -> dict:
    ids = [[rng.sample(range(experts), 2) for _ in range(layers)] for _ in range(tokens)]
    counts = [[0] * experts for _ in range(layers)]
    for tok in ids:
        for layer, pair in enumerate(tok):
            for e in pair:
                counts[layer][e] += 1
    return {"layers": layers, "experts": experts, "tokens_total": tokens, "expert_counts": counts, "ids": ids,
            "tokens": [f"t{i}" for i in range(tokens)]}


def seed(n: int) -> None:
    from decimal import Decimal

    from django.db import connection, transaction

    from support_agents.models import AgentProfile, AgentRun, Customer, Handoff, Message, RunStep, Ticket
    from support_agents.seed_data import agent_profiles_ensure

    have = Ticket.objects.count()
    if have >= n:
        print(f"database already holds {have} tickets")
        return
    rng = random.Random(7)
    agents = {p.slug: p for p in agent_profiles_ensure()}
    intents = json.loads((ROOT / "data" / "banking77" / "queues.json").read_text())
    intent_names = sorted(intents)
    customers = Customer.objects.bulk_create(
        [Customer(email=f"bench{i}@example.com", name=f"Bench Customer {i}") for i in range(500)],
        ignore_conflicts=True)
    customers = list(Customer.objects.filter(email__startswith="bench"))
    statuses = ["queued"] * 2 + ["in_progress", "awaiting_approval", "draft_ready", "replied", "escalated",
                                 "needs_triage"] + ["resolved"] * 4
    words = ["refund", "card", "declined", "transfer", "fee", "limit", "pin", "blocked", "currency", "account"]
    t0 = time.perf_counter()
    batch = 2000
    for start in range(have, n, batch):
        tickets = []
        for i in range(start, min(n, start + batch)):
            intent = rng.choice(intent_names)
            text = f"Ticket {i}: my {rng.choice(words)} and {rng.choice(words)} question"
            tickets.append(Ticket(subject=text[:60], body=text, customer=rng.choice(customers),
                                  status=rng.choice(statuses), queue=intents[intent], intent=intent,
                                  priority=rng.choice(["low", "normal", "normal", "high", "urgent"]),
                                  confidence=round(rng.uniform(0.3, 0.99), 3),
                                  assigned_agent=agents[intents[intent]]))
        with transaction.atomic():
            tickets = Ticket.objects.bulk_create(tickets)
            Message.objects.bulk_create([Message(ticket=t, author_kind="customer", body=t.body) for t in tickets])
            Message.objects.bulk_create([Message(ticket=t, author_kind="agent", body="Draft reply", is_draft=True)
                                         for t in tickets if t.status in ("draft_ready", "replied", "resolved")])
            runs = AgentRun.objects.bulk_create([AgentRun(ticket=t, agent=t.assigned_agent, intent=t.intent,
                                                          status="completed", state={"n": 3}) for t in tickets])
            steps = []
            for run in runs:
                steps.append(RunStep(run=run, index=0, kind="model", name="extract_arguments",
                                     prompt_tokens=rng.randint(40, 120), completion_tokens=rng.randint(8, 40),
                                     latency_ms=rng.uniform(80, 400), device_seconds=rng.uniform(0.05, 0.4),
                                     device="cpu", cost=Decimal("0.00000300"), flops=2.0e8, dense_flops=6.0e8,
                                     active_params=51_000, total_params=57_000, routing=routing_record(rng)))
                steps.append(RunStep(run=run, index=1, kind="tool", name="lookup_transactions",
                                     input={"merchant": "Tesco"}, output={"count": 2}))
                steps.append(RunStep(run=run, index=2, kind="reply", name="write_reply"))
            RunStep.objects.bulk_create(steps)
            handoffs = [Handoff(ticket=t, from_label="router", to_agent=t.assigned_agent,
                                to_label=t.assigned_agent.slug, reason="routed by triage") for t in tickets]
            handoffs += [Handoff(ticket=t, from_label=t.assigned_agent.slug, to_agent=agents["technical"],
                                 to_label="technical", reason="handoff") for t in tickets[::20]]
            Handoff.objects.bulk_create(handoffs)
    with connection.cursor() as cur:
        # Spread creation over a week; audit rows are append-only, so they are inserted with their times.
        cur.execute("UPDATE support_agents_ticket SET created_at = now() - random() * interval '7 days' "
                    "WHERE customer_id IN (SELECT id FROM support_agents_customer WHERE email LIKE 'bench%%')")
        cur.execute("""INSERT INTO support_agents_auditevent (at, actor, verb, ticket_id, data)
                       SELECT created_at + random() * interval '2 seconds', 'system', 'ticket.status_changed', id,
                              '{"to": "queued"}'::jsonb FROM support_agents_ticket WHERE id > %s""", [0])
        cur.execute("""INSERT INTO support_agents_auditevent (at, actor, verb, ticket_id, data)
                       SELECT created_at + random() * interval '2 hours', 'system', 'ticket.status_changed', id,
                              jsonb_build_object('to', status) FROM support_agents_ticket
                       WHERE status IN ('resolved', 'escalated')""")
        cur.execute("UPDATE support_agents_runstep SET created_at = t.created_at FROM support_agents_agentrun r "
                    "JOIN support_agents_ticket t ON t.id = r.ticket_id WHERE r.id = support_agents_runstep.run_id")
    print(f"seeded {Ticket.objects.count()} tickets in {time.perf_counter() - t0:.1f} s")
    _ = AgentProfile


def _touch() -> None:
    """Append one audit row: what any live event does to the dashboard's data watermark."""
    from support_agents.models import AuditEvent

    AuditEvent.objects.create(actor="system:benchmark", verb="benchmark.touch", data={})


def measure_pages(base: str, cookies: dict, ticket_id: int, requests: int) -> dict[str, dict]:
    """Round-robin over the pages (one request each per round), so every page sees the same mix
    of the shared machine's load instead of one page drawing a quiet minute and another a busy one."""
    import httpx

    times: dict[str, list[float]] = {name: [] for name in PAGES}
    with httpx.Client(base_url=base, cookies=cookies, timeout=30) as client:
        for path in PAGES.values():  # warm-up
            r = client.get(path.format(ticket=ticket_id))
            assert r.status_code == 200, (path, r.status_code, r.text[:500])
        for _ in range(requests):
            for name, path in PAGES.items():
                if name in CHANGE_BEFORE:
                    _touch()
                t = time.perf_counter()
                r = client.get(path.format(ticket=ticket_id))
                times[name].append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200
    out = {}
    for name, ts in times.items():
        out[name] = {"p50": statistics.median(ts), "p95": pct(ts, 0.95), "max": max(ts), "n": len(ts)}
        print(f"  {name:40s} p50 {out[name]['p50']:7.1f} ms  p95 {out[name]['p95']:7.1f} ms")
    return out


def measure_events(base: str, cookies: dict, events: int) -> dict:
    from django.db import transaction
    from playwright.sync_api import sync_playwright

    from support_agents.models import Customer
    from support_agents.services.tickets import ticket_create

    chromium = "/usr/bin/chromium"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    customer = Customer.objects.filter(email__startswith="bench").first()
    sent: dict[int, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        ctx = browser.new_context(base_url=base)
        ctx.add_cookies([{"name": k, "value": v, "url": base} for k, v in cookies.items()])
        page = ctx.new_page()
        page.goto("/console/")
        page.wait_for_function("window.__moedeskSocketOpen === true")
        for i in range(events):
            with transaction.atomic():
                ticket = ticket_create(customer=customer, subject=f"event bench {i}", body="latency probe")
                sent[ticket.pk] = time.time() * 1000  # just before COMMIT; the event is sent after it
            time.sleep(0.05)
        page.wait_for_function(f"window.__moedeskEvents.filter(e => e.kind === 'ticket.created').length >= {events}",
                               timeout=60_000)
        got = page.evaluate("window.__moedeskEvents.filter(e => e.kind === 'ticket.created')"
                            ".map(e => [e.ticket_id, e.at])")
        browser.close()
    delays = [at - sent[tid] for tid, at in got if tid in sent]
    res = {"p50": statistics.median(delays), "p95": pct(delays, 0.95), "max": max(delays), "n": len(delays)}
    print(f"  commit -> websocket event in browser    p50 {res['p50']:7.1f} ms  p95 {res['p95']:7.1f} ms "
          f"(n={res['n']})")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tickets", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=60, help="timed requests per page")
    ap.add_argument("--events", type=int, default=100)
    args = ap.parse_args()
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        sys.exit("set DATABASE_URL (a scratch database) and REDIS_URL")

    import django

    django.setup()
    import logging

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command
    from django.test import Client

    from support_agents.models import Ticket
    from support_agents.permissions import OPERATORS
    from tests.console.live import service_env, start_server

    logging.getLogger("httpx").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)
    seed(args.tickets)
    from webapp.console.rollups import rebuild

    rebuild()  # bulk-loaded steps bypass the post-commit hook that keeps routing rollups current
    from django.db import connection

    with connection.cursor() as cur:
        # After a bulk load: fresh statistics and the visibility map (index-only scans need it),
        # which autovacuum would provide on a running system a little later.
        cur.execute("VACUUM ANALYZE")
    user, _ = get_user_model().objects.get_or_create(username="bench-operator")
    user.groups.add(Group.objects.get_or_create(name=OPERATORS)[0])
    client = Client()
    client.force_login(user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    ticket_id = Ticket.objects.order_by("-id").values_list("id", flat=True)[500]

    # The server runs as run.sh starts it: production settings (DEBUG off: no query logging), a psycopg
    # connection pool, plain http cookies.
    env = service_env(DJANGO_DEBUG="0", DJANGO_SECURE_COOKIES="0", DATABASE_POOL="1")
    env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    server, base = start_server(env)
    try:
        print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"{Ticket.objects.count()} tickets; server: uvicorn (1 process)")
        load_before = os.getloadavg()
        pages = measure_pages(base, cookies, ticket_id, args.requests)
        events = measure_events(base, cookies, args.events)
        load_after = os.getloadavg()
    finally:
        server.stop()
    print(f"load average (1/5/15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(json.dumps({"pages_ms": pages, "event_delay_ms": events,
                      "load_average": {"before": load_before, "after": load_after}}, indent=1))


if __name__ == "__main__":
    main()
