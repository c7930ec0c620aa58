"""Intake webhook load test: signed tickets against a running uvicorn server, from another process.

    python benchmarks/intake.py --duration 30 --concurrency 32 --web-workers 2

Starts `uvicorn webapp.asgi:application` (unless --url is given), creates a fresh intake source,
posts unique signed tickets for --duration seconds from --procs load processes, then counts rows:
every 202 must be exactly one Ticket + InboundEvent (zero lost). Prints a JSON summary.
Uses DATABASE_URL / REDIS_URL like the app (run under scripts' services or your own).
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()


async def _load(url: str, secret: str, duration: float, concurrency: int, proc: int) -> dict:
    import httpx

    from support_agents.services.webhooks import sign

    latencies: list[float] = []
    codes: dict[int, int] = {}
    refs: list[str] = []
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(w: int, client: httpx.AsyncClient) -> None:
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            msg_id = f"bench_{proc}_{w}_{n}_{uuid.uuid4().hex[:8]}"
            body = json.dumps({
                "customer": {"email": f"bench{(w * 7919 + n) % 500}@example.com", "name": "Bench User"},
                "subject": "Card payment charged twice",
                "body": f"Hello, my card payment {n} was charged twice yesterday. Please refund the duplicate.",
                "channel": "email",
                "metadata": {"bench": True, "n": n},
            }).encode()  # fmt: skip
            ts = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(secret, msg_id, ts, body),
            }
            t0 = time.perf_counter()
            try:
                resp = await client.post(url, content=body, headers=headers)
                code = resp.status_code
                if code == 202:
                    refs.append(resp.json()["ticket"])
            except httpx.HTTPError:
                code = -1
            latencies.append(time.perf_counter() - t0)
            codes[code] = codes.get(code, 0) + 1

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(w, client) for w in range(concurrency)))
    return {"latencies": latencies, "codes": codes, "refs": refs}


def _load_proc(args: tuple) -> dict:
    return asyncio.run(_load(*args))


def _pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


def _server_cpu(server: subprocess.Popen | None) -> float:
    if server is None:
        return 0.0
    import psutil

    root = psutil.Process(server.pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=32, help="in-flight requests per load process")
    ap.add_argument("--procs", type=int, default=1, help="load-generating processes")
    ap.add_argument("--web-workers", type=int, default=2, help="uvicorn worker processes (when started here)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--url", help="base URL of an already running server (skip starting uvicorn)")
    args = ap.parse_args()

    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    _django()
    from django.db.models import Count

    from support_agents.models import InboundEvent, Ticket
    from support_agents.services.intake import intake_source_create

    source, secret = intake_source_create(name=f"bench-{uuid.uuid4().hex[:8]}", actor="bench")
    server = None
    base = args.url
    if base is None:
        base = f"http://127.0.0.1:{args.port}"
        env = {**os.environ, "DJANGO_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--port", str(args.port),
             "--workers", str(args.web_workers), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        import httpx

        for _ in range(200):
            try:
                httpx.get(f"{base}/api/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
    url = f"{base}/api/intake/{source.name}/"
    cpu_before = _server_cpu(server)
    try:
        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(args.procs) as pool:
            parts = pool.map(
                _load_proc, [(url, secret, args.duration, args.concurrency, p) for p in range(args.procs)]
            )
        elapsed = time.perf_counter() - t0
        cpu_after = _server_cpu(server)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)

    latencies = sorted(x for p in parts for x in p["latencies"])
    codes: dict[int, int] = {}
    for p in parts:
        for k, v in p["codes"].items():
            codes[k] = codes.get(k, 0) + v
    accepted_refs = [r for p in parts for r in p["refs"]]
    tickets = Ticket.objects.filter(source=source).count()
    events = InboundEvent.objects.filter(source=source, outcome="accepted", ticket__isnull=False).count()
    per_ticket_msgs = Ticket.objects.filter(source=source).annotate(n=Count("messages")).filter(n=1).count()
    summary = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()} cpus={os.cpu_count()}",
        "load_avg_after": os.getloadavg(),
        "duration_s": round(elapsed, 2),
        "web_workers": None if args.url else args.web_workers,
        "load_procs": args.procs,
        "concurrency_per_proc": args.concurrency,
        "requests": len(latencies),
        "status_codes": codes,
        "accepted": len(accepted_refs),
        "accepted_per_s": round(len(accepted_refs) / args.duration, 1),
        "latency_ms": {
            "p50": round(_pct(latencies, 50) * 1000, 1),
            "p90": round(_pct(latencies, 90) * 1000, 1),
            "p99": round(_pct(latencies, 99) * 1000, 1),
            "max": round(latencies[-1] * 1000, 1) if latencies else None,
        },
        "rows": {"tickets": tickets, "inbound_events": events, "tickets_with_one_message": per_ticket_msgs},
        # CPU seconds used by the uvicorn processes per accepted ticket (PostgreSQL/Redis not included):
        # a contention-independent cost, since the 2 cores are shared with other jobs.
        "web_cpu_ms_per_ticket": (
            round((cpu_after - cpu_before) / len(accepted_refs) * 1000, 2)
            if server and accepted_refs
            else None
        ),
        "lost": len(set(accepted_refs)) - tickets,
        "zero_lost": len(set(accepted_refs)) == tickets == events == per_ticket_msgs,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
