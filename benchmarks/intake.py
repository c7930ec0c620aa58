"""Intake webhook load test: signed tickets against a running uvicorn server, from other processes.

    python benchmarks/intake.py --duration 30 --concurrency 16 --web-workers 2

Starts the web server as run.sh does (`python -m webapp.serve`: uvicorn, a listener per worker;
`--shared-socket` for uvicorn's own `--workers`) unless --url is given, creates a fresh intake source,
posts unique signed tickets for --duration seconds from --procs load processes with --concurrency
requests in flight each, then counts rows: every 202 must be exactly one Ticket + one accepted
InboundEvent + one first Message + one `ticket.created` audit record (zero lost). Prints a JSON summary.

The load generator speaks plain HTTP/1.1 over keep-alive sockets (asyncio + uvloop) instead of httpx:
on a 2-core machine the client shares the cores with the server, and httpx cost more CPU per request
than the server does. CPU is accounted per part (web server, load generator, PostgreSQL backends of
this database, Redis) so the cost per ticket can be read independently of what else the cores run.
Uses DATABASE_URL / REDIS_URL like the app.
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _django():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()


class _Conn:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for Content-Length responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode("latin-1") + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ConnectionError("chunked responses are not expected from the intake endpoint")
        payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(url: str, secret: str, duration: float, concurrency: int, proc: int) -> dict:
    from support_agents.services.webhooks import sign

    parts = urlsplit(url)
    latencies: list[float] = []
    codes: dict[int, int] = {}
    refs: list[str] = []
    deadline = time.perf_counter() + duration

    async def worker(w: int) -> None:
        conn = _Conn(parts.hostname, parts.port)
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
                code, payload = await conn.post(parts.path, headers, body)
                if code == 202:
                    refs.append(json.loads(payload)["ticket"])
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                code = -1
                conn.close()
            latencies.append(time.perf_counter() - t0)
            codes[code] = codes.get(code, 0) + 1
        conn.close()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return {"latencies": latencies, "codes": codes, "refs": refs}


def _load_proc(args: tuple) -> dict:
    import uvloop

    cpu0 = time.process_time()
    out = uvloop.run(_load(*args))
    out["cpu_s"] = time.process_time() - cpu0
    return out


def _pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


def _cpu_of(pids: list[int]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def _tree(pid: int) -> list[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return []


def _redis_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("redis-server")]


def _pg_backend_pids() -> list[int]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        return [r[0] for r in cur.fetchall()]


class _LoadSampler(threading.Thread):
    """The 1-minute load average, sampled every second while the benchmark runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=16, help="in-flight requests per load process")
    ap.add_argument("--procs", type=int, default=1, help="load-generating processes")
    ap.add_argument("--web-workers", type=int, default=2, help="uvicorn worker processes (when started here)")
    ap.add_argument("--intake-threads", type=int, help="INTAKE_THREADS for the server started here")
    ap.add_argument(
        "--django-path",
        action="store_true",
        help="serve intake through Django's handler (INTAKE_FAST_PATH=0)",
    )
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--shared-socket", action="store_true",
                    help="start uvicorn --workers N (one listener shared by all workers) instead of webapp.serve")
    ap.add_argument("--url", help="base URL of an already running server (skip starting uvicorn)")
    args = ap.parse_args()

    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    _django()
    from django.db.models import Count

    from support_agents.models import AuditEvent, InboundEvent, Ticket
    from support_agents.services.intake import intake_source_create

    source, secret = intake_source_create(name=f"bench-{uuid.uuid4().hex[:8]}", actor="bench")
    server = None
    base = args.url
    if base is None:
        base = f"http://127.0.0.1:{args.port}"
        env = {
            **os.environ,
            "DJANGO_LOG_LEVEL": "WARNING",
            "DATABASE_POOL": os.environ.get("DATABASE_POOL", "1"),
        }
        if args.intake_threads:
            env["INTAKE_THREADS"] = str(args.intake_threads)
        if args.django_path:
            env["INTAKE_FAST_PATH"] = "0"
        # webapp.serve as run.sh starts it; --shared-socket: uvicorn's own --workers, for comparison
        server_cmd = (["-m", "uvicorn", "webapp.asgi:application"] if args.shared_socket
                      else ["-m", "webapp.serve"])
        server = subprocess.Popen(
            [sys.executable, *server_cmd, "--port", str(args.port), "--workers", str(args.web_workers),
             "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        import httpx

        for _ in range(300):
            try:
                httpx.get(f"{base}/api/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
    url = f"{base}/api/intake/{source.name}/"
    # Warm every worker process (imports, pool, intake threads) outside the measured window.
    from support_agents.services.webhooks import sign

    target = urlsplit(url)
    for _ in range(4 * args.web_workers):
        body = b'{"customer": {"email": "warmup@example.com"}, "body": "warm up"}'
        msg_id, ts = f"warm_{uuid.uuid4().hex}", int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, msg_id, ts, body),
        }
        asyncio.run(_Conn(target.hostname, target.port).post(target.path, headers, body))
    warm_tickets = Ticket.objects.filter(source=source).count()

    web_pids = _tree(server.pid) if server else []
    pg_pids, redis_pids = _pg_backend_pids(), _redis_pids()
    before = _cpu_of(web_pids + pg_pids + redis_pids)
    sampler = _LoadSampler()
    sampler.start()
    try:
        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(args.procs) as pool:
            parts = pool.map(
                _load_proc, [(url, secret, args.duration, args.concurrency, p) for p in range(args.procs)]
            )
        elapsed = time.perf_counter() - t0
        after = _cpu_of(web_pids + _pg_backend_pids() + redis_pids)
    finally:
        sampler.stop.set()
        if server is not None:
            server.terminate()
            server.wait(30)

    def spent(pids: list[int]) -> float:
        return sum(after.get(p, 0.0) - before.get(p, 0.0) for p in set(pids) if p in after)

    pg_pids_all = [p for p in after if p not in web_pids and p not in redis_pids]
    latencies = sorted(x for p in parts for x in p["latencies"])
    codes: dict[int, int] = {}
    for p in parts:
        for k, v in p["codes"].items():
            codes[k] = codes.get(k, 0) + v
    accepted_refs = [r for p in parts for r in p["refs"]]
    n_acc = len(accepted_refs)
    tickets = Ticket.objects.filter(source=source).count() - warm_tickets
    events = InboundEvent.objects.filter(source=source, outcome="accepted", ticket__isnull=False).count()
    events -= warm_tickets
    one_message = Ticket.objects.filter(source=source).annotate(n=Count("messages")).filter(n=1).count()
    one_message -= warm_tickets
    audits = AuditEvent.objects.filter(ticket__source=source, verb="ticket.created").count() - warm_tickets

    def per_ticket(seconds: float) -> float | None:
        return round(seconds / n_acc * 1000, 2) if n_acc else None

    summary = {
        "machine": f"{platform.node()} {platform.machine()} cpus={os.cpu_count()}",
        "load_avg_during": {
            "mean": round(sum(sampler.samples) / len(sampler.samples), 2) if sampler.samples else None,
            "max": round(max(sampler.samples), 2) if sampler.samples else None,
        },
        "duration_s": round(elapsed, 2),
        "web_workers": None if args.url else args.web_workers,
        "server": None if args.url else ("uvicorn --workers" if args.shared_socket else "webapp.serve"),
        "intake_path": "django" if args.django_path else "fast",
        "load_procs": args.procs,
        "concurrency_per_proc": args.concurrency,
        "requests": len(latencies),
        "status_codes": codes,
        "accepted": n_acc,
        "accepted_per_s": round(n_acc / args.duration, 1),
        "latency_ms": {
            "p50": round(_pct(latencies, 50) * 1000, 1),
            "p90": round(_pct(latencies, 90) * 1000, 1),
            "p99": round(_pct(latencies, 99) * 1000, 1),
            "max": round(latencies[-1] * 1000, 1) if latencies else None,
        },
        "rows": {
            "tickets": tickets,
            "inbound_events": events,
            "tickets_with_one_message": one_message,
            "created_audits": audits,
        },
        # CPU time per accepted ticket, by part: contention-independent costs (the 2 cores are shared).
        "cpu_ms_per_ticket": {
            "web": per_ticket(spent(web_pids)) if server else None,
            "load_generator": per_ticket(sum(p["cpu_s"] for p in parts)),
            "postgres_backends": per_ticket(spent(pg_pids_all)),
            "redis": per_ticket(spent(redis_pids)),
        },
        # how evenly the uvicorn processes shared the work (each is bound by its own GIL)
        "web_cpu_s_by_process": sorted((round(spent([p]), 2) for p in web_pids), reverse=True) if server else None,
        "lost": len(set(accepted_refs)) - tickets,
        "zero_lost": len(set(accepted_refs)) == tickets == events == one_message == audits,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
