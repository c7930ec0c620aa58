"""Turns stored routing records into figure inputs and balance statistics.

A model-call step stores `routing = {"expert_counts": [L][E], "ids": ..., "tokens": [...]}`;
"ids" are the router's top-k picks per token and layer. Aggregates over many steps are summed in
PostgreSQL (see `routing_usage`), never by loading every step into Python.
"""

from __future__ import annotations

import math
from datetime import datetime

from . import figures


def layer_major_ids(ids: list, num_layers: int) -> list:
    """The pipeline stores ids token-major [tokens][layers][k]; figures want [layers][tokens][k].
    Layer-major input is accepted as is."""
    if not ids:
        return []
    if len(ids[0]) == num_layers:  # token-major (also the tie-break when tokens == layers)
        return [[tok[layer] for tok in ids] for layer in range(num_layers)]
    if len(ids) == num_layers:
        return ids
    raise ValueError(f"routing ids do not have {num_layers} layers")


def step_figures(routing: dict, *, label: str = "") -> dict:
    """Figures for one model call: the layer x expert heatmap and the token x layer view."""
    counts = routing.get("expert_counts") or []
    num_layers = int(routing.get("layers") or len(counts))
    num_experts = int(routing.get("experts") or (len(counts[0]) if counts else 0))
    out: dict = {}
    ids = routing.get("ids") or []
    if ids and num_layers and num_experts:
        ids = layer_major_ids(ids, num_layers)
        n = len(ids[0])
        # Token texts come from re-tokenising prompt + completion; pad or cut so hover labels line up.
        tokens = [str(t) for t in (routing.get("tokens") or [])][:n]
        tokens += [f"#{i}" for i in range(len(tokens), n)]
        if not counts:
            counts = figures.expert_counts(ids, num_experts)
        out["tokens"] = figures.token_routing_view(ids, tokens, num_experts)
    if counts:
        out["heatmap"] = figures.routing_heatmap(
            counts, title=f"Routing: tokens per expert{' · ' + label if label else ''}")
    return out


def balance(counts: list[list[float]], *, min_tokens: int = 64) -> tuple[dict[str, list[float | None]], list[str]]:
    """Per-layer balancedness / CV / normalised entropy and collapse warnings (moe_engine.telemetry)."""
    import torch

    from moe_engine.telemetry import collapse_warnings, load_balance

    if not counts:
        return {"balancedness": [], "cv": [], "entropy": []}, []
    t = torch.tensor(counts, dtype=torch.float64)
    stats = {k: [None if math.isnan(x) else round(x, 4) for x in v.tolist()] for k, v in load_balance(t).items()}
    warnings = [w.message for w in collapse_warnings(t, min_tokens=min_tokens)]
    return stats, warnings


def routing_usage(*, agent_id: int | None, since: datetime | None) -> list[dict]:
    """Summed expert counts per model-call name and shape for an agent in a window, read from the
    hourly rollups (windows are hour-aligned: the current partial hour is included)."""
    from .models import RoutingRollup

    qs = RoutingRollup.objects.all()
    if agent_id is not None:
        qs = qs.filter(agent_id=agent_id)
    if since is not None:
        qs = qs.filter(bucket__gte=since.replace(minute=0, second=0, microsecond=0))
    groups: dict[tuple[str, int, int], dict] = {}
    for name, layers, experts, calls, counts in qs.order_by("name").values_list(
            "name", "layers", "experts", "calls", "counts"):
        g = groups.setdefault((name, layers, experts), {
            "name": name, "calls": 0, "counts": [[0] * experts for _ in range(layers)]})
        g["calls"] += calls
        for total, row in zip(g["counts"], counts, strict=True):
            for e, n in enumerate(row):
                total[e] += n
    return list(groups.values())
