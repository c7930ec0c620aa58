"""What the router benchmarks share: their command line and a checkpoint's decisions on texts."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moe_engine import load_model  # noqa: E402
from moe_engine.data.router import Decision, decide  # noqa: E402


def checkpoints_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("checkpoints", nargs="+", help="router checkpoint directories")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args()
    torch.set_num_threads(2)
    return a


def router_meta(path: str | Path) -> dict:
    """The checkpoint's decision settings: temperature, human threshold, intent -> queue."""
    return json.loads((Path(path) / "config.json").read_text())["moedesk"]


def router_logits(model, texts: list[str]) -> torch.Tensor:
    return torch.cat([model.classify(texts[i : i + 256]).logits.float() for i in range(0, len(texts), 256)])


def router_decisions(path: str | Path, texts: list[str], **overrides) -> list[Decision]:
    """The checkpoint's own decision rule on ``texts`` (``overrides`` replace its settings)."""
    model = load_model(path)
    return decide(router_logits(model, texts), {**router_meta(path), **overrides}, model.config.id2label)
