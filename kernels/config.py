"""Block sizes for the grouped GEMMs: a small JSON table per (E, N, device), else a default.

File name: ``configs/E={E},N={N},device_name={device}.json`` where N is the expert intermediate
size I and device is torch.cuda.get_device_name() with spaces as underscores (vLLM's scheme).
Content: {"<M>": {"BLOCK_M": .., "BLOCK_N": .., "BLOCK_K": .., "GROUP_M": .., "num_warps": ..,
"num_stages": ..}, ...} keyed by token count M; the entry with the nearest M is used. Tables are
written by ``python -m kernels.tune`` on a GPU; nothing is tuned at import or call time.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

CONFIG_DIR = Path(__file__).parent / "configs"
KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace(" ", "_")
    return "cpu"


def config_path(E: int, N: int, device: str) -> Path:
    return CONFIG_DIR / f"E={E},N={N},device_name={device}.json"


@functools.lru_cache(maxsize=64)
def _load(path: Path) -> dict[int, dict[str, int]] | None:
    if not path.exists():
        return None
    with path.open() as f:
        raw = json.load(f)
    return {int(m): {k: int(v[k]) for k in KEYS} for m, v in raw.items()}


def default_config(M: int, E: int, top_k: int, device: torch.device) -> dict[str, int]:
    if device.type != "cuda":
        # interpreter: every program instance costs Python time, so fewer, larger blocks
        return dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, GROUP_M=1, num_warps=4, num_stages=1)
    if M * top_k <= E * 4:
        # decode: few tokens per expert, the GEMMs are weight-bandwidth bound
        return dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, GROUP_M=1, num_warps=4, num_stages=4)
    return dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4)


def get_config(M: int, E: int, N: int, top_k: int, device: torch.device) -> dict[str, int]:
    table = _load(config_path(E, N, device_name(device)))
    if not table:
        return default_config(M, E, top_k, device)
    return table[min(table, key=lambda m: abs(m - M))]
