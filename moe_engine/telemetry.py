"""Routing telemetry: running per-layer x per-expert counters kept on the device.

Updates are scatter-adds into a device tensor (no host sync on the hot path); only reading a
snapshot copies to the host. Load-balance figures per layer, from counts c_e (e = 1..E):
balancedness = mean(c) / max(c) (1 = perfect), CV = std(c) / mean(c) (0 = perfect),
normalised entropy = H(c / sum c) / log E (1 = perfect).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
from torch import Tensor


def load_balance(counts: Tensor) -> dict[str, Tensor]:
    """counts [L, E] -> balancedness, cv, entropy, each [L] float (layers with no tokens -> nan)."""
    c = counts.double()
    total = c.sum(-1, keepdim=True)
    mean = c.mean(-1)
    p = c / total
    ent = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    E = c.shape[-1]
    nan = torch.full_like(mean, float("nan"))
    empty = total.squeeze(-1) == 0
    return {
        "balancedness": torch.where(empty, nan, mean / c.amax(-1).clamp(min=1e-12)),
        "cv": torch.where(empty, nan, c.std(-1, unbiased=False) / mean.clamp(min=1e-12)),
        "entropy": torch.where(empty, nan, ent / math.log(E) if E > 1 else torch.ones_like(mean)),
    }


@dataclass
class CollapseWarning:
    layer: int  # index among MoE layers
    message: str


def collapse_warnings(
    counts: Tensor, *, min_balancedness: float = 0.2, min_entropy: float = 0.5, min_tokens: int = 64,
    layer_ids: list[int] | None = None,
) -> list[CollapseWarning]:
    """Layers whose routing looks collapsed (a few experts take almost everything)."""
    stats = load_balance(counts)
    out = []
    for i in range(counts.shape[0]):
        n = int(counts[i].sum())
        if n < min_tokens:
            continue
        bal, ent = float(stats["balancedness"][i]), float(stats["entropy"][i])
        if bal < min_balancedness or ent < min_entropy:
            top = int(counts[i].argmax())
            share = float(counts[i, top]) / n
            layer = layer_ids[i] if layer_ids else i
            out.append(CollapseWarning(i, (
                f"layer {layer}: expert collapse suspected (balancedness {bal:.2f}, normalised entropy "
                f"{ent:.2f}; expert {top} takes {share:.0%} of {n} routed slots)")))
    return out


class RoutingStats:
    """Per-model running counters [moe_layers, experts]; thread-safe."""

    def __init__(self, n_layers: int, n_experts: int, device: torch.device | str = "cpu"):
        self.n_layers, self.n_experts = n_layers, n_experts
        self.counts = torch.zeros(n_layers * n_experts, dtype=torch.int64, device=device)
        self.tokens = torch.zeros((), dtype=torch.int64, device=device)
        self._lock = threading.Lock()

    def update(self, expert_ids: list[Tensor], valid: Tensor | None = None) -> None:
        """expert_ids: one [N, k] tensor per MoE layer; valid [N] bool masks out padding tokens."""
        if not expert_ids or self.n_layers == 0:
            return
        ids = torch.stack(expert_ids).to(self.counts.device).long()  # [L, N, k]
        L, N, k = ids.shape
        flat = (ids + torch.arange(L, device=ids.device)[:, None, None] * self.n_experts).reshape(-1)
        if valid is None:
            w = torch.ones_like(flat)
            n = torch.tensor(N, device=flat.device)
        else:
            v = valid.to(flat.device).long()
            w = v[None, :, None].expand(L, N, k).reshape(-1)
            n = v.sum()
        with self._lock:
            self.counts.index_add_(0, flat, w)
            self.tokens += n

    def add(self, counts: Tensor, tokens: int) -> None:
        """Add counts gathered elsewhere (another process's flat [moe_layers * experts] counters)."""
        with self._lock:
            self.counts += counts.to(self.counts.device)
            self.tokens += tokens

    def reset(self) -> None:
        with self._lock:
            self.counts.zero_()
            self.tokens.zero_()

    def matrix(self) -> Tensor:
        """Host copy of the counts [moe_layers, experts]."""
        with self._lock:
            return self.counts.view(self.n_layers, self.n_experts).cpu().clone()

    def snapshot(self) -> dict:
        """JSON-ready: counts, tokens, and per-layer balancedness / cv / entropy."""
        with self._lock:
            counts = self.counts.view(self.n_layers, self.n_experts).cpu().clone()
            tokens = int(self.tokens)
        stats = load_balance(counts) if self.n_layers else {}
        # nan (a layer that saw no tokens yet) becomes None so the snapshot is valid JSON
        clean = {k: [None if math.isnan(x) else x for x in v.tolist()] for k, v in stats.items()}
        return {"tokens": tokens, "counts": counts.tolist(), **clean}

    def warnings(self, **kw) -> list[CollapseWarning]:
        return collapse_warnings(self.matrix(), **kw)
