"""Indexes for the console's read paths on support_agents tables (found with EXPLAIN ANALYZE on
10,000 tickets; see docs/benchmarks.md § console).

They live in the console app because only the console's queries use them, and as RunSQL (no
model state) because they are partial / covering / expression indexes the ticket models do not
declare, so `makemigrations --check` stays clean.

- console_runstep_model_cost: the cost dashboard sums model-call steps per agent and per ticket;
  a partial covering index lets PostgreSQL read those columns without touching the step rows,
  which carry the routing JSON (a 10k-ticket table is ~30 MB of heap, the index ~1 MB).
- console_message_agent: first agent draft per ticket for the latency percentiles.
- console_ticket_priority_rank: the inbox's "priority" sort (urgent, high, normal, low, then
  newest) served in index order instead of sorting every ticket for each page. The expression
  must stay identical to webapp.console.selectors.PRIORITY_RANK.
"""

from django.db import migrations

INDEXES = {
    "console_runstep_model_cost": (
        "support_agents_runstep (created_at) INCLUDE (id, run_id, prompt_tokens, completion_tokens, flops, "
        "dense_flops, device_seconds, cost, active_params, total_params) WHERE kind = 'model'"
    ),
    "console_message_agent": "support_agents_message (created_at) INCLUDE (ticket_id) WHERE author_kind = 'agent'",
    "console_ticket_priority_rank": (
        "support_agents_ticket ((CASE WHEN priority = 'urgent' THEN 0 WHEN priority = 'high' THEN 1 "
        "WHEN priority = 'normal' THEN 2 ELSE 3 END), created_at DESC, id DESC)"
    ),
}


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0002_routing_rollup"),
        ("support_agents", "0003_seed_procedures_prices"),
    ]

    operations = [
        migrations.RunSQL(f"CREATE INDEX IF NOT EXISTS {name} ON {definition}", f"DROP INDEX IF EXISTS {name}")
        for name, definition in INDEXES.items()
    ]
