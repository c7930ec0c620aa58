"""Figure builders: correct numbers in, schema-valid Plotly JSON out (validated by plotly itself)."""

import json

import plotly.graph_objects as go
import pytest

from webapp.console import figures


def _valid(fig: dict) -> go.Figure:
    # graph_objects raises ValueError on any property Plotly does not know or a wrong value type.
    json.dumps(fig)
    return go.Figure(fig)


def test_expert_counts_counts_every_topk_choice():
    ids = [  # 2 layers, 3 tokens, top-2
        [[0, 1], [1, 2], [1, 3]],
        [[3, 2], [3, 0], [3, 1]],
    ]
    assert figures.expert_counts(ids, 4) == [[1, 3, 1, 1], [1, 1, 1, 3]]


def test_expert_counts_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="expert id 9"):
        figures.expert_counts([[[9]]], 4)


def test_routing_heatmap_shape_and_labels():
    fig = figures.routing_heatmap([[1, 2, 3], [4, 5, 6]])
    trace = _valid(fig).data[0]
    assert trace.type == "heatmap"
    assert [list(r) for r in trace.z] == [[1, 2, 3], [4, 5, 6]]
    assert list(trace.x) == ["E0", "E1", "E2"]
    assert list(trace.y) == ["layer 0", "layer 1"]
    assert "routing" in fig["layout"]["title"]["text"].lower()
    assert "topic" not in json.dumps(fig).lower()


def test_token_routing_view_colours_by_top1_and_hovers_token_text():
    ids = [[[2, 0], [1, 3]], [[0, 1], [3, 2]]]
    fig = figures.token_routing_view(ids, ["Hel", "lo"], 4)
    trace = _valid(fig).data[0]
    assert [list(r) for r in trace.z] == [[2, 1], [0, 3]]
    assert trace.text[0][0] == "'Hel' → E2, E0"
    assert trace.text[1][1] == "'lo' → E3, E2"
    assert list(fig["layout"]["xaxis"]["ticktext"]) == ["Hel", "lo"]
    # Discrete scale: each expert gets one colour band.
    assert len(trace.colorscale) == 8


def test_token_routing_view_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="expected 3"):
        figures.token_routing_view([[[0], [1]]], ["a", "b", "c"], 2)


def test_routing_usage_figure_shares_sum_to_one_per_layer():
    fig = figures.routing_usage_figure([[1, 3], [0, 0]], title="Routing usage: billing")
    trace = _valid(fig).data[0]
    assert list(trace.z[0]) == [0.25, 0.75]
    assert list(trace.z[1]) == [0.0, 0.0]


def test_balance_cost_latency_sankey_are_valid():
    _valid(figures.routing_balance_figure({"balancedness": [0.5, 0.9], "cv": [0.3, 0.1], "entropy": [0.8, 0.95]}))
    _valid(figures.cost_by_agent_figure([
        {"agent": "billing", "flops": 1e9, "dense_flops": 4e9, "money": 0.01},
        {"agent": "sales", "flops": 2e9, "dense_flops": 8e9, "money": 0.02},
    ]))
    lat = _valid(figures.latency_figure({"triage": {"p50": 0.2, "p90": 0.5, "p99": 0.9},
                                         "first draft": {"p50": 1.0, "p90": None, "p99": None}}))
    assert [t.name for t in lat.data] == ["p50", "p90", "p99"]
    sk = _valid(figures.sankey_figure([("router", "billing", 5), ("billing", "technical", 1),
                                       ("billing", "resolved", 4), ("technical", "escalated", 0)]))
    node = sk.data[0].node
    assert list(node.label) == ["router", "billing", "technical", "resolved", "escalated"]
    assert list(sk.data[0].link.value) == [5, 1, 4]  # zero-count flows are dropped
