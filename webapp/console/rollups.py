"""Hourly routing rollups (see models.RoutingRollup)."""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import connection, transaction

log = logging.getLogger("moedesk.console")


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def add_step(step_id: int) -> None:
    """Add one model-call step's expert counts to its hour's rollup (own short transaction)."""
    from support_agents.models import RunStep

    from .models import RoutingRollup

    step = RunStep.objects.filter(pk=step_id, kind=RunStep.Kind.MODEL).select_related("run").first()
    counts = (step.routing or {}).get("expert_counts") if step else None
    if not counts or not isinstance(counts, list) or not counts[0]:
        return
    layers, experts = len(counts), len(counts[0])
    key = {"bucket": _hour(step.created_at), "agent_id": step.run.agent_id, "name": step.name, "layers": layers,
           "experts": experts}
    # Two workers may create the hour's row at once: the unique key makes one insert lose, which
    # then simply updates the row the other created.
    RoutingRollup.objects.bulk_create([RoutingRollup(**key, counts=[[0] * experts for _ in range(layers)])],
                                      ignore_conflicts=True)
    with transaction.atomic():
        row = RoutingRollup.objects.select_for_update().get(**key)
        row.counts = [[a + int(b) for a, b in zip(r1, r2, strict=True)] for r1, r2 in zip(row.counts, counts, strict=True)]
        row.calls += 1
        row.save(update_fields=["counts", "calls"])


_REBUILD_SQL = """
INSERT INTO console_routingrollup (bucket, agent_id, name, layers, experts, calls, counts)
SELECT bucket, agent_id, name, layers, experts, MAX(calls), jsonb_agg(row ORDER BY layer)
FROM (
    SELECT bucket, agent_id, name, layers, experts, layer, MAX(calls) AS calls,
           jsonb_agg(n ORDER BY expert) AS row
    FROM (
        SELECT date_trunc('hour', s.created_at) AS bucket, r.agent_id, s.name,
               jsonb_array_length(s.routing -> 'expert_counts') AS layers,
               jsonb_array_length(s.routing -> 'expert_counts' -> 0) AS experts,
               l.ord - 1 AS layer, e.ord - 1 AS expert, SUM(e.val::numeric)::bigint AS n,
               COUNT(DISTINCT s.id) AS calls
        FROM support_agents_runstep s
        JOIN support_agents_agentrun r ON r.id = s.run_id
        CROSS JOIN LATERAL jsonb_array_elements(s.routing -> 'expert_counts') WITH ORDINALITY AS l(val, ord)
        CROSS JOIN LATERAL jsonb_array_elements_text(l.val) WITH ORDINALITY AS e(val, ord)
        WHERE s.kind = 'model' AND jsonb_typeof(s.routing -> 'expert_counts') = 'array'
        GROUP BY 1, 2, 3, 4, 5, 6, 7
    ) cells
    GROUP BY bucket, agent_id, name, layers, experts, layer
) layers
GROUP BY bucket, agent_id, name, layers, experts
"""


def rebuild() -> int:
    """Recompute every rollup from the stored steps (after bulk loads or to repair)."""
    from .models import RoutingRollup

    with transaction.atomic():
        RoutingRollup.objects.all().delete()
        with connection.cursor() as cur:
            cur.execute("SET LOCAL jit = off")
            cur.execute(_REBUILD_SQL)
            return cur.rowcount
