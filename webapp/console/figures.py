"""Plotly figure builders: plain data in, Plotly figure JSON (dicts) out.

Pure functions with no Django or database access, so they are unit-tested on their own and the
views only pass numbers through. Figures are plain dicts rather than plotly.graph_objects objects:
building them costs microseconds instead of the milliseconds graph_objects validation takes, which
matters for the page-time budget. Tests validate the output against plotly's schema.

Wording: the expert views describe *routing* (which expert the router picked), never "topics" —
experts are not semantic categories.
"""

from __future__ import annotations

from collections.abc import Sequence

from .templatetags.console import money

# Qualitative palette wide enough for 64 experts: Plotly's Dark24 + Light24 + Alphabet-ish extras.
_PALETTE = [
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86",
    "#EB663B", "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE",
    "#862A16", "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038",
    "#FD3216", "#00FE35", "#6A76FC", "#FED4C4", "#FE00CE", "#0DF9FF", "#F6F926", "#FF9616",
    "#479B55", "#EEA6FB", "#DC587D", "#D626FF", "#6E899C", "#00B5F7", "#B68E00", "#C9FBE5",
    "#FF0092", "#22FFA7", "#E3EE9E", "#86CE00", "#BC7196", "#7E7DCD", "#FC6955", "#E48F72",
]

_LAYOUT_BASE = {
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"size": 12},
}


def _layout(**extra) -> dict:
    layout = dict(_LAYOUT_BASE)
    layout.update(extra)
    return layout


def expert_color(expert: int) -> str:
    return _PALETTE[expert % len(_PALETTE)]


def expert_counts(ids: Sequence[Sequence[Sequence[int]]], num_experts: int) -> list[list[int]]:
    """Tokens each expert took per layer, from per-token routing ids [layers][tokens][k]."""
    counts = [[0] * num_experts for _ in ids]
    for layer, per_token in enumerate(ids):
        row = counts[layer]
        for choice in per_token:
            for expert in choice:
                if not 0 <= expert < num_experts:
                    raise ValueError(f"expert id {expert} outside 0..{num_experts - 1} (layer {layer})")
                row[expert] += 1
    return counts


def routing_heatmap(counts: Sequence[Sequence[float]], *, title: str = "Routing: tokens per expert",
                    layer_labels: Sequence[str] | None = None) -> dict:
    """Layer x expert heatmap of how many tokens the router sent to each expert."""
    num_layers = len(counts)
    num_experts = len(counts[0]) if num_layers else 0
    y = list(layer_labels) if layer_labels is not None else [f"layer {i}" for i in range(num_layers)]
    return {
        "data": [{
            "type": "heatmap",
            "z": [list(row) for row in counts],
            "x": [f"E{e}" for e in range(num_experts)],
            "y": y,
            "colorscale": "Viridis",
            "colorbar": {"title": {"text": "tokens routed"}},
            "hovertemplate": "%{y} · expert %{x}<br>%{z} tokens routed<extra></extra>",
        }],
        "layout": _layout(
            title={"text": title},
            xaxis={"title": {"text": "expert"}, "type": "category"},
            yaxis={"title": {"text": "layer"}, "autorange": "reversed", "type": "category"},
            height=max(240, 40 + 22 * num_layers),
        ),
    }


def token_routing_view(ids: Sequence[Sequence[Sequence[int]]], tokens: Sequence[str], num_experts: int,
                       *, title: str = "Routing per token (colour = chosen expert)") -> dict:
    """Token x layer grid coloured by each token's top-1 expert; hover shows the token text and
    every expert it was routed to."""
    num_layers = len(ids)
    num_tokens = len(tokens)
    for layer, per_token in enumerate(ids):
        if len(per_token) != num_tokens:
            raise ValueError(f"layer {layer} has {len(per_token)} routed tokens, expected {num_tokens}")
    z = [[choice[0] for choice in per_token] for per_token in ids]
    hover = [
        [f"{tokens[t]!r} → " + ", ".join(f"E{e}" for e in per_token[t]) for t in range(num_tokens)]
        for per_token in ids
    ]
    # A discrete colour scale: expert e occupies the band [e, e+1) / num_experts.
    scale: list[list] = []
    for e in range(num_experts):
        lo, hi = e / num_experts, (e + 1) / num_experts
        scale += [[lo, expert_color(e)], [hi, expert_color(e)]]
    return {
        "data": [{
            "type": "heatmap",
            "z": z,
            "x": list(range(num_tokens)),
            "y": [f"layer {i}" for i in range(num_layers)],
            "text": hover,
            "zmin": -0.5,
            "zmax": num_experts - 0.5,
            "colorscale": scale,
            "showscale": num_experts <= 32,
            "colorbar": {"title": {"text": "top-1 expert"}},
            "hovertemplate": "token %{x} %{text}<br>%{y}<extra></extra>",
            "xgap": 1,
            "ygap": 1,
        }],
        "layout": _layout(
            title={"text": title},
            xaxis={
                "title": {"text": "token"},
                "tickmode": "array",
                "tickvals": list(range(num_tokens)),
                "ticktext": [_short(tok) for tok in tokens],
                "tickangle": -60,
            },
            yaxis={"title": {"text": "layer"}, "autorange": "reversed", "type": "category"},
            height=max(260, 90 + 22 * num_layers),
        ),
    }


def _short(token: str, width: int = 8) -> str:
    token = token.replace("\n", "⏎")
    return token if len(token) <= width else token[: width - 1] + "…"


def routing_usage_figure(counts: Sequence[Sequence[float]], *, title: str) -> dict:
    """Aggregated routing load: each cell is the expert's share of the layer's routed tokens."""
    shares = []
    for row in counts:
        total = float(sum(row))
        shares.append([round(c / total, 4) if total else 0.0 for c in row])
    fig = routing_heatmap(shares, title=title)
    trace = fig["data"][0]
    trace["colorbar"] = {"title": {"text": "share of layer"}}
    trace["customdata"] = [list(row) for row in counts]
    trace["hovertemplate"] = "%{y} · expert %{x}<br>%{z:.1%} of routed tokens (%{customdata})<extra></extra>"
    return fig


def routing_balance_figure(stats: dict[str, Sequence[float]], *, title: str = "Routing balance per layer") -> dict:
    """Per-layer balancedness (mean/max load), coefficient of variation and normalised entropy."""
    names = {"balancedness": "balancedness (mean/max)", "cv": "CV of expert load",
             "entropy": "normalised entropy"}
    data = []
    for key, label in names.items():
        values = list(stats.get(key, []))
        if not values:
            continue
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": label,
            "x": [f"layer {i}" for i in range(len(values))], "y": values,
        })
    return {"data": data, "layout": _layout(
        title={"text": title}, yaxis={"title": {"text": "value"}, "rangemode": "tozero"},
        xaxis={"type": "category"}, legend={"orientation": "h", "y": -0.25}, height=320,
    )}


def cost_by_agent_figure(rows: Sequence[dict], currency: str = "USD") -> dict:
    """Per-agent FLOPs actually spent vs a dense model of the same total size, plus money."""
    agents = [r["agent"] for r in rows]
    return {
        "data": [
            {"type": "bar", "name": "MoE FLOPs (active)", "x": agents, "y": [r["flops"] for r in rows]},
            {"type": "bar", "name": "dense-equivalent FLOPs", "x": agents, "y": [r["dense_flops"] for r in rows]},
            {"type": "scatter", "mode": "markers+text", "name": f"money ({currency})", "x": agents,
             "y": [r["money"] for r in rows], "yaxis": "y2",
             "text": [money(r["money"]) for r in rows], "textposition": "top center",
             "marker": {"size": 12, "symbol": "diamond"}},
        ],
        "layout": _layout(
            title={"text": "Compute and cost per agent"}, barmode="group",
            yaxis={"title": {"text": "FLOPs"}, "type": "log"},
            # Own ticks: plotly 4 puts an overlaying axis's ticks at the log FLOPs grid by default.
            yaxis2={"title": {"text": f"money ({currency})"}, "overlaying": "y", "side": "right",
                    "type": "linear", "tickmode": "auto", "nticks": 6, "rangemode": "tozero",
                    "tickformat": ".2~g", "showgrid": False},
            legend={"orientation": "h", "y": -0.2}, height=360,
            margin={**_LAYOUT_BASE["margin"], "r": 80},  # room for the money axis on the right
        ),
    }


def latency_figure(percentiles: dict[str, dict[str, float | None]]) -> dict:
    """Grouped bars: for each stage (triage, first draft, resolution) its p50/p90/p99 in seconds."""
    stages = list(percentiles)
    data = []
    for q in ("p50", "p90", "p99"):
        data.append({"type": "bar", "name": q, "x": stages,
                     "y": [percentiles[s].get(q) for s in stages],
                     "hovertemplate": "%{x} " + q + ": %{y:.2f} s<extra></extra>"})
    return {"data": data, "layout": _layout(
        title={"text": "Latency percentiles"}, barmode="group",
        yaxis={"title": {"text": "seconds"}, "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.2}, height=320,
    )}


def sankey_figure(flows: Sequence[tuple[str, str, int]], *, title: str = "Ticket flow") -> dict:
    """Sankey from (source, target, count) flows, e.g. router -> agent -> agent -> resolved."""
    labels: list[str] = []
    index: dict[str, int] = {}
    for src, dst, _ in flows:
        for name in (src, dst):
            if name not in index:
                index[name] = len(labels)
                labels.append(name)
    flows = [f for f in flows if f[2] > 0]
    return {
        "data": [{
            "type": "sankey",
            "arrangement": "snap",
            "node": {"label": labels, "pad": 18, "thickness": 16,
                     "color": [expert_color(i) for i in range(len(labels))]},
            "link": {"source": [index[s] for s, _, _ in flows], "target": [index[d] for _, d, _ in flows],
                     "value": [int(v) for _, _, v in flows], "color": "rgba(120,130,150,0.35)"},
        }],
        "layout": _layout(title={"text": title}, height=380),
    }
