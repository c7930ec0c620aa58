"""Pipeline benchmark: tickets through the intake webhook -> triage -> agent -> reply draft.

    python benchmarks/pipeline.py --tickets 200 --workers 2 [--rate 0] [--sequential 20]

Uses DATABASE_URL / REDIS_URL like the app (migrates and runs `demo_seed()` there), starts uvicorn
(`webapp.asgi:application`) and Celery workers for triage,billing,technical,sales with the default
models (checkpoints/router, checkpoints/agent, or MOEDESK_ROUTER_PATH / MOEDESK_AGENT_PATH), then
posts signed tickets whose texts are the held-out Banking77 validation split. Time intake -> draft
runs from just before the POST to the draft Message's commit time.

Phases: `--sequential N` sends N tickets one at a time (unloaded latency); then `--tickets` are
sent open-loop at `--rate` per second (0 = all at once) for throughput and loaded latency.
Prints a JSON summary (machine, command, numbers) for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DONE = ("draft_ready", "replied", "awaiting_approval", "escalated", "needs_triage", "failed")


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    import django

    django.setup()


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def _texts(n: int, seed: int) -> list[str]:
    split = json.loads((ROOT / "data" / "banking77" / "splits.json").read_text())
    texts = [t for _, t in split["validation_texts"]]
    random.Random(seed).shuffle(texts)
    return [texts[i % len(texts)] for i in range(n)]


def _wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} did not start")


def _start(args: argparse.Namespace, logdir: Path) -> list[subprocess.Popen]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    web = subprocess.Popen([sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--port", str(args.port),
                            "--log-level", "warning"], cwd=ROOT, env=env, start_new_session=True,
                           stdout=open(logdir / "web.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    procs.append(web)
    log = logdir / "worker.log"
    w = subprocess.Popen([sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", "triage,billing,technical,sales",
                          "-c", str(args.workers), "-P", args.pool, "--without-gossip", "--without-mingle",
                          "--without-heartbeat", "-l", "warning", "-n", f"bench-{os.getpid()}@%h"],
                         cwd=ROOT, env=env, start_new_session=True, stdout=open(log, "wb"),  # noqa: SIM115
                         stderr=subprocess.STDOUT)
    procs.append(w)
    _wait_http(f"http://127.0.0.1:{args.port}/api/docs")
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def _post(client, url: str, secret: str, email: str, name: str, text: str) -> tuple[int, float]:
    from support_agents.models import Ticket
    from support_agents.services.webhooks import sign

    body = json.dumps({"customer": {"email": email, "name": name}, "body": text, "channel": "web",
                       "metadata": {"bench": "pipeline"}}).encode()
    msg_id, ts = f"pbench_{uuid.uuid4().hex}", int(time.time())
    t0 = time.time()
    r = client.post(url, content=body, headers={"content-type": "application/json", "webhook-id": msg_id,
                                                 "webhook-timestamp": str(ts),
                                                 "webhook-signature": sign(secret, msg_id, ts, body)})
    r.raise_for_status()
    return Ticket.id_from_reference(r.json()["ticket"]), t0


def _collect(sent: dict[int, float], timeout: float) -> dict:
    from django.db.models import Min

    from support_agents.models import Message, Ticket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = Ticket.objects.filter(pk__in=sent, status__in=DONE).count()
        if done == len(sent):
            break
        time.sleep(0.5)
    statuses = dict(Ticket.objects.filter(pk__in=sent).values_list("pk", "status"))
    drafts = dict(Message.objects.filter(ticket_id__in=sent, author_kind="agent").values("ticket_id")
                  .annotate(t=Min("created_at")).values_list("ticket_id", "t"))
    lat = [drafts[t].timestamp() - t0 for t, t0 in sent.items() if t in drafts]
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    # Who wrote each draft: the agent model ("model") or the deterministic fact template ("template").
    sources: dict[str, int] = {}
    for src in Message.objects.filter(ticket_id__in=sent, author_kind="agent").values_list("data__source", flat=True):
        sources[str(src)] = sources.get(str(src), 0) + 1
    last = max(drafts.values()).timestamp() if drafts else None
    return {"sent": len(sent), "drafts": len(lat), "statuses": counts, "draft_sources": sources, "latencies": lat,
            "last_draft": last}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tickets", type=int, default=200)
    ap.add_argument("--sequential", type=int, default=20)
    ap.add_argument("--rate", type=float, default=0.0, help="tickets per second in the load phase (0 = burst)")
    ap.add_argument("--workers", type=int, default=2, help="Celery concurrency")
    ap.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--agent-threshold", type=float, default=None,
                    help="set every agent's confidence threshold first (e.g. 0 to route all tickets to agents)")
    args = ap.parse_args()
    _django()
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    from django.core.management import call_command

    from support_agents.models import Customer, IntakeSource
    from support_agents.services.demo import demo_seed

    call_command("migrate", verbosity=0)
    seed = demo_seed()
    if args.agent_threshold is not None:
        from support_agents.models import AgentProfile
        from support_agents.services.agents import agent_profile_update

        for p in AgentProfile.objects.all():
            agent_profile_update(p, None, confidence_threshold=args.agent_threshold)
    secret = IntakeSource.objects.get(name=seed.source).secrets[0]
    customers = list(Customer.objects.filter(accounts__isnull=False).order_by("pk").values_list("email", "name")[:50])
    from webapp.celery import app

    app.control.purge()
    logdir = Path(os.environ.get("BENCH_LOGDIR", "/tmp/moedesk-pipeline-bench"))
    logdir.mkdir(parents=True, exist_ok=True)
    procs = _start(args, logdir)
    url = f"http://127.0.0.1:{args.port}/api/intake/{seed.source}/"
    texts = _texts(args.sequential + args.tickets + 4, args.seed)
    out: dict = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, torch CPU",
                 "command": "python benchmarks/pipeline.py " + " ".join(sys.argv[1:]),
                 "at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "router": os.environ.get("MOEDESK_ROUTER_PATH", "checkpoints/router"),
                 "agent": os.environ.get("MOEDESK_AGENT_PATH", "checkpoints/agent"),
                 "workers": f"{args.workers} ({args.pool})"}
    try:
        with httpx.Client(timeout=30) as client:
            # warm-up: both worker processes load their models before anything is timed
            warm = dict(_post(client, url, secret, *customers[i % len(customers)], texts[i]) for i in range(4))
            _collect(warm, 300)
            i = 4
            seq_lat: list[float] = []
            for _ in range(args.sequential):
                tid, t0 = _post(client, url, secret, *customers[i % len(customers)], texts[i])
                i += 1
                seq_lat += _collect({tid: t0}, 120)["latencies"]
            out["sequential"] = {"n": args.sequential, "drafts": len(seq_lat),
                                 "p50_s": _pct(seq_lat, 50), "p95_s": _pct(seq_lat, 95)}
            sent: dict[int, float] = {}
            start = time.time()
            for k in range(args.tickets):
                if args.rate > 0:
                    time.sleep(max(0.0, start + k / args.rate - time.time()))
                tid, t0 = _post(client, url, secret, *customers[i % len(customers)], texts[i])
                i += 1
                sent[tid] = t0
            posted = time.time() - start
        res = _collect(sent, args.timeout)
    finally:
        _stop(procs)
    lat = res.pop("latencies")
    span = (res.pop("last_draft") or time.time()) - start
    out["load"] = {**res, "rate": args.rate or "burst", "post_seconds": round(posted, 2),
                   "wall_seconds": round(span, 1),
                   "tickets_per_min": round(res["drafts"] / span * 60, 1) if span > 0 else None,
                   "p50_s": _pct(lat, 50), "p95_s": _pct(lat, 95), "mean_s": statistics.fmean(lat) if lat else None}
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
