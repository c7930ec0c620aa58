"""Fill kernels/configs/ with the fastest fused_moe block sizes for one expert shape on this GPU.

    python -m kernels.tune --experts 64 --hidden 2048 --inter 1024 --top-k 8
    python -m kernels.tune --preset olmoe

Times every candidate config with triton.testing.do_bench for each token count M and writes
configs/E={E},N={I},device_name={gpu}.json. Needs CUDA; exits with a message otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import torch

PRESETS = {  # name: (E, k, H, I)
    "mixtral": (8, 2, 4096, 14336),
    "olmoe": (64, 8, 2048, 1024),
    "qwen3-30b-a3b": (128, 8, 2048, 768),
}
DEFAULT_M = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


def candidates() -> list[dict[str, int]]:
    out = []
    for bm, bn, bk, gm, warps, stages in itertools.product(
        [16, 32, 64, 128], [32, 64, 128, 256], [64, 128], [1, 8], [4, 8], [3, 4]
    ):
        if bm * bn > 128 * 128 or (bm >= 128 and bk >= 128):
            continue  # register/shared-memory budget of the two gate_up accumulators
        out.append(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=warps, num_stages=stages))
    return out


def tune(E: int, k: int, H: int, inter: int, ms: list[int], dtype: torch.dtype) -> dict[str, dict]:
    import triton
    import triton.testing

    from .config import device_name
    from .triton_gating import topk_gating_triton
    from .triton_moe import fused_moe_triton

    dev = torch.device("cuda")
    w_gate_up = torch.randn(E, 2 * inter, H, device=dev, dtype=dtype) / H**0.5
    w_down = torch.randn(E, H, inter, device=dev, dtype=dtype) / inter**0.5
    table = {}
    for m in ms:
        x = torch.randn(m, H, device=dev, dtype=dtype)
        w, ids = topk_gating_triton(torch.randn(m, E, device=dev), k, True)
        best = None
        for cfg in candidates():
            if cfg["BLOCK_M"] > max(16, triton.next_power_of_2(m * k)):
                continue  # larger row blocks would be mostly padding
            try:
                t = triton.testing.do_bench(
                    lambda cfg=cfg, x=x, w=w, ids=ids: fused_moe_triton(
                        x, w_gate_up, w_down, w, ids, config=cfg
                    )
                )
            except Exception as exc:  # e.g. out of shared memory for this config on this GPU
                print(f"  skip {cfg}: {type(exc).__name__}", file=sys.stderr)
                continue
            if best is None or t < best[0]:
                best = (t, cfg)
        assert best is not None, "no config compiled"
        print(f"M={m}: {best[0] * 1e3:.1f} us {best[1]}", flush=True)
        table[str(m)] = best[1]
    print(f"device {device_name(dev)}")
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--experts", type=int)
    p.add_argument("--top-k", type=int)
    p.add_argument("--hidden", type=int)
    p.add_argument("--inter", type=int)
    p.add_argument("--m", type=int, nargs="+", default=DEFAULT_M, help="token counts to tune for")
    p.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    p.add_argument("--out", help="output path (default: kernels/configs/E=..,N=..,device_name=...json)")
    args = p.parse_args(argv)
    if args.preset:
        E, k, H, inter = PRESETS[args.preset]
    elif None in (args.experts, args.top_k, args.hidden, args.inter):
        p.error("give --preset or all of --experts --top-k --hidden --inter")
    else:
        E, k, H, inter = args.experts, args.top_k, args.hidden, args.inter
    if not torch.cuda.is_available():
        print("kernels.tune needs a CUDA GPU (torch.cuda.is_available() is False); nothing written.")
        return 2
    from .config import config_path, device_name

    table = tune(E, k, H, inter, args.m, getattr(torch, args.dtype))
    path = args.out or config_path(E, inter, device_name(torch.device("cuda")))
    with open(path, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
