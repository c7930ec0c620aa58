"""Cost and performance aggregates for the dashboard, computed in PostgreSQL.

Money and FLOPs come from the model-call steps the pipeline records (each step stores measured
device seconds, cost at the price then in force, FLOPs spent and the dense-equivalent FLOPs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection, connections, transaction
from django.db.models import Count, F, FloatField, Max, Q, Sum
from django.db.models.functions import Coalesce

from support_agents.models import RunStep, Ticket


@contextmanager
def analytics_transaction() -> Iterator[None]:
    """Read-only dashboard queries: PostgreSQL's JIT would spend ~0.5 s compiling these
    aggregates over a few thousand rows, many times what executing them costs."""
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL jit = off")
        yield


_analytics_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="analytics")


def gather(*calls: Callable[[], Any]) -> list[Any]:
    """Results of independent read-only aggregates, computed at the same time on their own
    connections, so that PostgreSQL runs them on different cores (each in `analytics_transaction`).

    Inside an open transaction they run one after another on this connection instead: other
    connections could not see what this transaction has written (tests run that way).
    """
    if connection.in_atomic_block or len(calls) < 2:
        with analytics_transaction():
            return [call() for call in calls]
    futures = [_analytics_threads.submit(_run_on_own_connection, call) for call in calls]
    return [f.result() for f in futures]


def _run_on_own_connection(call: Callable[[], Any]) -> Any:
    try:
        with analytics_transaction():
            return call()
    finally:
        # A pooled connection goes back to the pool; otherwise Django's CONN_MAX_AGE rule applies.
        for conn in connections.all(initialized_only=True):
            if conn.pool is not None:
                conn.close()
            else:
                conn.close_if_unusable_or_obsolete()


def _window(qs, field: str, since: datetime | None):
    return qs.filter(**{f"{field}__gte": since}) if since else qs


def _saving(flops: float, dense: float) -> float | None:
    return None if not dense else 1.0 - flops / dense


def cost_per_agent(since: datetime | None) -> list[dict]:
    qs = _window(RunStep.objects.filter(kind=RunStep.Kind.MODEL), "created_at", since)
    rows = (qs.values(agent=F("run__agent__slug"))
            .annotate(calls=Count("id"), tokens_in=Coalesce(Sum("prompt_tokens"), 0),
                      tokens_out=Coalesce(Sum("completion_tokens"), 0),
                      flops=Coalesce(Sum("flops"), 0.0, output_field=FloatField()),
                      dense_flops=Coalesce(Sum("dense_flops"), 0.0, output_field=FloatField()),
                      device_seconds=Coalesce(Sum("device_seconds"), 0.0, output_field=FloatField()),
                      money=Coalesce(Sum("cost"), Decimal(0)),
                      active_params=Max("active_params"), total_params=Max("total_params"),
                      tickets=Count("run__ticket", distinct=True))
            .order_by("agent"))
    out = []
    for r in rows:
        r["money"] = float(r["money"])
        r["saving"] = _saving(r["flops"], r["dense_flops"])
        # Device time scales with FLOPs on a compute-bound path: the dense model would have cost
        # money * dense/flops. An estimate, labelled as such in the UI.
        r["dense_money"] = r["money"] * r["dense_flops"] / r["flops"] if r["flops"] else None
        out.append(r)
    return out


def cost_per_ticket(since: datetime | None, *, limit: int | None = 20) -> list[dict]:
    qs = _window(RunStep.objects.filter(kind=RunStep.Kind.MODEL), "run__ticket__created_at", since)
    rows = (qs.values(ticket_id=F("run__ticket_id"))
            .annotate(calls=Count("id"), tokens_in=Coalesce(Sum("prompt_tokens"), 0),
                      tokens_out=Coalesce(Sum("completion_tokens"), 0),
                      flops=Coalesce(Sum("flops"), 0.0, output_field=FloatField()),
                      dense_flops=Coalesce(Sum("dense_flops"), 0.0, output_field=FloatField()),
                      device_seconds=Coalesce(Sum("device_seconds"), 0.0, output_field=FloatField()),
                      money=Coalesce(Sum("cost"), Decimal(0)),
                      active_params=Max("active_params"), total_params=Max("total_params"))
            .order_by("-money", "-ticket_id"))
    if limit:
        rows = rows[:limit]
    rows = list(rows)
    refs = dict(Ticket.objects.filter(pk__in=[r["ticket_id"] for r in rows]).values_list("pk", "subject"))
    for r in rows:
        r["money"] = float(r["money"])
        r["reference"] = f"TCK-{r['ticket_id']:06d}"
        r["subject"] = refs.get(r["ticket_id"], "")
        r["saving"] = _saving(r["flops"], r["dense_flops"])
    return rows


_LATENCY_SQL = """
WITH firsts AS (
    -- Only the transitions the figures need; a ticket's events are never older than the ticket,
    -- so the time window also bounds the events (and the `at` index serves short windows).
    SELECT a.ticket_id,
           MIN(a.at) FILTER (WHERE a.data->>'to' IN ('queued', 'needs_triage')) AS triaged_at,
           MIN(a.at) FILTER (WHERE a.data->>'to' = 'resolved') AS resolved_at,
           BOOL_OR(a.data->>'to' = 'escalated') AS escalated
    FROM support_agents_auditevent a
    WHERE a.verb = 'ticket.status_changed' AND a.ticket_id IS NOT NULL
      AND a.data->>'to' IN ('queued', 'needs_triage', 'resolved', 'escalated')
      AND (%(since)s::timestamptz IS NULL OR a.at >= %(since)s)
    GROUP BY a.ticket_id
),
drafts AS (
    SELECT m.ticket_id, MIN(m.created_at) AS drafted_at
    FROM support_agents_message m
    WHERE m.author_kind = 'agent' AND (%(since)s::timestamptz IS NULL OR m.created_at >= %(since)s)
    GROUP BY m.ticket_id
),
d AS (
    SELECT EXTRACT(EPOCH FROM f.triaged_at - t.created_at) AS triage,
           EXTRACT(EPOCH FROM dr.drafted_at - t.created_at) AS draft,
           EXTRACT(EPOCH FROM f.resolved_at - t.created_at) AS resolution,
           f.resolved_at IS NOT NULL AS resolved, COALESCE(f.escalated, false) AS escalated
    FROM support_agents_ticket t
    LEFT JOIN firsts f ON f.ticket_id = t.id LEFT JOIN drafts dr ON dr.ticket_id = t.id
    WHERE (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s)
)
SELECT COUNT(*),
       COUNT(*) FILTER (WHERE resolved), COUNT(*) FILTER (WHERE escalated),
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY triage),
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY draft),
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY resolution),
       COUNT(triage), COUNT(draft), COUNT(resolution)
FROM d
"""


def latency_and_rates(since: datetime | None) -> dict:
    """Percentiles (s) from ticket creation to triage, first agent draft and resolution, plus rates.
    percentile_cont ignores NULLs, so unfinished tickets do not count as zero."""
    with connection.cursor() as cur:
        cur.execute(_LATENCY_SQL, {"since": since})
        total, resolved, escalated, tri, dra, res, n_tri, n_dra, n_res = cur.fetchone()

    def pct(values):
        values = values or [None, None, None]
        return {q: (float(v) if v is not None else None) for q, v in zip(("p50", "p90", "p99"), values, strict=True)}

    return {
        "tickets": total,
        "resolved": resolved,
        "escalated": escalated,
        "resolution_rate": resolved / total if total else None,
        "escalation_rate": escalated / total if total else None,
        "latency": {"triage": pct(tri), "first draft": pct(dra), "resolution": pct(res)},
        "samples": {"triage": n_tri, "first draft": n_dra, "resolution": n_res},
    }


_SANKEY_SQL = """
-- One pass over the handoffs (one sort for all three window functions, the ticket's status carried
-- along instead of a second join); edges and outcomes are assembled in Python from the groups.
SELECT COALESCE(prev_to, from_label), hop, to_label, last,
       CASE WHEN status = 'resolved' THEN 'resolved'
            WHEN status = 'escalated' OR to_label = 'human' THEN 'escalated'
            ELSE 'open' END,
       COUNT(*)
FROM (
    SELECT h.from_label, h.to_label, t.status,
           ROW_NUMBER() OVER w AS hop,
           LAG(h.to_label) OVER w AS prev_to,
           LEAD(h.id) OVER w IS NULL AS last
    FROM support_agents_handoff h JOIN support_agents_ticket t ON t.id = h.ticket_id
    WHERE (%(since)s::timestamptz IS NULL OR t.created_at >= %(since)s)
    WINDOW w AS (PARTITION BY h.ticket_id ORDER BY h.at, h.id)
) hops
GROUP BY 1, 2, 3, 4, 5
"""


def handoff_flows(since: datetime | None) -> list[tuple[str, str, int]]:
    """(source, target, count) for the Sankey: router -> agent -> (handoffs) -> outcome. Nodes are
    labelled by hop ("billing#1" = first stop) so a later hop back to an agent stays acyclic. A hop
    starts where the previous one ended, so an operator's reassignment continues the same path."""
    with connection.cursor() as cur:
        cur.execute(_SANKEY_SQL, {"since": since})
        rows = cur.fetchall()

    def label(name: str, hop: int) -> str:
        if name == "router" or hop == 0:
            return name
        return name if hop == 1 else f"{name} (hop {hop})"

    edges: dict[tuple[str, str], int] = {}
    ends: dict[tuple[str, str], int] = {}
    for src, hop, dst, last, outcome, n in rows:
        key = (label(src, hop - 1), label(dst, hop))
        edges[key] = edges.get(key, 0) + int(n)
        if last:
            end = (label(dst, hop), outcome)
            ends[end] = ends.get(end, 0) + int(n)
    return [(a, b, n) for (a, b), n in edges.items()] + [(a, b, n) for (a, b), n in ends.items()]


_WATERMARK_SQL = """
SELECT (SELECT MAX(id) FROM support_agents_ticket), (SELECT MAX(id) FROM support_agents_auditevent),
       (SELECT MAX(id) FROM support_agents_runstep), (SELECT MAX(id) FROM support_agents_handoff),
       (SELECT MAX(id) FROM support_agents_message), (SELECT MAX(id) FROM support_agents_agentrun)
"""


def data_watermark() -> tuple:
    """The newest id of every table the dashboard aggregates (six primary-key lookups).

    These tables only grow while a ticket moves: a status change writes an audit row, a model call a
    step, a handoff a row, a draft a message. So an unchanged watermark means unchanged all-time
    figures (rows edited in place without any new row, e.g. by hand in SQL, are not noticed)."""
    with connection.cursor() as cur:
        cur.execute(_WATERMARK_SQL)
        return tuple(cur.fetchone())


class WatermarkCache:
    """One computed value per process, reused while the data watermark is unchanged. Per process
    (not Redis) so that a recreated database whose ids start again can never be served another
    database's figures; each web process recomputes at most once per change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mark: tuple | None = None
        self._value: Any = None

    def get(self, mark: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if self._mark == mark:
                return self._value
        value = compute()
        with self._lock:
            self._mark, self._value = mark, value
        return value

    def clear(self) -> None:
        with self._lock:
            self._mark, self._value = None, None


all_time_cache = WatermarkCache()


def ticket_counts(since: datetime | None) -> dict[str, int]:
    qs = _window(Ticket.objects.all(), "created_at", since)
    return qs.aggregate(total=Count("id"), open=Count("id", filter=~Q(status="resolved")))
