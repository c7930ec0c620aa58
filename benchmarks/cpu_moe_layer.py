"""Why the compiled CPU decode step is faster: weight-reading speed of the pieces, 1 thread, fp32.

    nice -n 10 .venv/bin/python benchmarks/cpu_moe_layer.py [--hidden 256] [--json out.json]

Weights cycle through 4 layers' worth of 64 experts so they come from memory, not cache, as in a
decode step. Prints one JSON object:
  floor_gbs          w.sum() over 8 experts' gate_up: the memory floor
  mkl_rows_gbs       the same 8 experts as single-row products (x @ w.t()), what eager engines do
  moe_layer          one MoE layer (top-8 of 64) per batch size: eager fused_moe_ref vs
                     fused_moe_gather under torch.compile, microseconds (and GB/s at batch 1)
  lm_head_16_gflops  an 8192 x hidden head for 16 rows through MKL
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.reference import fused_moe_gather, fused_moe_ref  # noqa: E402

E, K, LAYERS = 64, 8, 4


def per_call_us(fn, n: int = 100) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batches", default="1,16,64,128")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    H, inter = a.hidden, a.hidden // 2
    w_gate_up = [torch.randn(E, 2 * inter, H) * 0.05 for _ in range(LAYERS)]
    w_down = [torch.randn(E, H, inter) * 0.05 for _ in range(LAYERS)]
    layer = itertools.cycle(range(LAYERS))
    expert = itertools.cycle(range(E))
    gate_up_bytes = K * 2 * inter * H * 4
    out: dict = {"machine": f"{platform.machine()}, 1 thread, torch {torch.__version__}",
                 "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
                 "hidden": H, "experts": E, "top_k": K}
    with torch.inference_mode():
        x = torch.randn(1, H)
        floor = per_call_us(lambda: [w_gate_up[next(layer)][next(expert)].sum() for _ in range(K)])
        rows = per_call_us(lambda: [x @ w_gate_up[next(layer)][next(expert)].t() for _ in range(K)])
        out["floor_gbs"] = round(gate_up_bytes / floor / 1e3, 1)
        out["mkl_rows_gbs"] = round(gate_up_bytes / rows / 1e3, 1)
        compiled = torch.compile(fused_moe_gather, dynamic=True)
        out["moe_layer"] = []
        for T in (int(b) for b in a.batches.split(",")):
            g = torch.Generator().manual_seed(T)
            xs = torch.randn(T, H, generator=g)
            ids = [torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)]).int() for _ in range(LAYERS)]
            w = torch.softmax(torch.randn(T, K, generator=g), -1)
            l0 = next(layer)
            err = (compiled(xs, w_gate_up[l0], w_down[l0], w, ids[l0])
                   - fused_moe_ref(xs, w_gate_up[l0], w_down[l0], w, ids[l0])).abs().max().item()

            def eager(xs=xs, w=w, ids=ids) -> None:
                i = next(layer)
                fused_moe_ref(xs, w_gate_up[i], w_down[i], w, ids[i])

            def gather(xs=xs, w=w, ids=ids) -> None:
                i = next(layer)
                compiled(xs, w_gate_up[i], w_down[i], w, ids[i])

            row = {"batch": T, "pairs": T * K, "eager_us": round(per_call_us(eager, 30), 1),
                   "compiled_us": round(per_call_us(gather, 30), 1), "max_abs_diff": err}
            if T == 1:
                layer_bytes = K * 3 * inter * H * 4
                row |= {"eager_gbs": round(layer_bytes / row["eager_us"] / 1e3, 1),
                        "compiled_gbs": round(layer_bytes / row["compiled_us"] / 1e3, 1)}
            out["moe_layer"].append(row)
            print(json.dumps(row), flush=True)
        heads = [torch.randn(8192, H) for _ in range(8)]
        head = itertools.cycle(heads)
        x16 = torch.randn(16, H)
        us = per_call_us(lambda: x16 @ next(head).t(), 30)
        out["lm_head_16_gflops"] = round(2 * 16 * 8192 * H / us / 1e3, 1)
    print(json.dumps(out, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
