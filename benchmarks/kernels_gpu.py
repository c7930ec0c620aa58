"""MoE expert layer: our Triton fused_moe vs torch baselines vs transformers, beside the roofline.

GPU (the real benchmark; prints a markdown table for docs/benchmarks.md):
    python benchmarks/kernels_gpu.py                       # all three shapes, T in 1..4096, bf16
    python benchmarks/kernels_gpu.py --models olmoe --tokens 1 64 1024
CPU (what can be measured without a GPU: the torch reference paths on scaled-down shapes):
    python benchmarks/kernels_gpu.py --device cpu
    python benchmarks/kernels_gpu.py --device cpu --dry-run   # tiny shapes, one call each, also
                                                              # runs the Triton kernels under
                                                              # TRITON_INTERPRET=1 and checks them

Columns: ours = kernels.fused_moe (Triton: align + 2 grouped GEMMs + top-k sum, routing given);
loop = per-expert torch loop over active experts (kernels.reference, one host sync);
grouped_mm = the same with torch._grouped_mm; hf-eager / hf-grouped = transformers'
<Model>Experts module with config._experts_implementation "eager" / "grouped_mm", loaded with the
same weights. Roofline = max(bytes of the unique experts touched + activations) / measured HBM
bandwidth, FLOPs / measured dense bf16 matmul rate). Times are medians (triton.testing.do_bench,
L2 flushed between runs) on GPU; the minimum wall time of --reps runs on CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {  # name: (E, k, H, I, transformers module, Experts class, config class, config kwargs)
    "mixtral-8x7b": (8, 2, 4096, 14336, "mixtral", "MixtralExperts", "MixtralConfig", "mixtral"),
    "olmoe": (64, 8, 2048, 1024, "olmoe", "OlmoeExperts", "OlmoeConfig", "mixtral"),
    "qwen3-30b-a3b": (128, 8, 2048, 768, "qwen3_moe", "Qwen3MoeExperts", "Qwen3MoeConfig", "qwen"),
}
GPU_TOKENS = [1, 16, 64, 256, 1024, 4096]


def hf_experts(model: str, E: int, H: int, inter: int, w_gate_up, w_down, impl: str):
    """transformers' own experts module for this model, holding our weights (same layout)."""
    import importlib

    _, _, _, _, mod, cls, cfg_cls, style = MODELS[model]
    m = importlib.import_module(f"transformers.models.{mod}.modeling_{mod}")
    kw = dict(hidden_size=H, hidden_act="silu")
    if style == "qwen":
        kw.update(num_experts=E, moe_intermediate_size=inter)
    else:
        kw.update(num_local_experts=E, intermediate_size=inter)
    cfg = getattr(m, cfg_cls)(**kw)
    cfg._experts_implementation = impl
    experts = getattr(m, cls)(cfg)
    experts.gate_up_proj = torch.nn.Parameter(w_gate_up, requires_grad=False)
    experts.down_proj = torch.nn.Parameter(w_down, requires_grad=False)
    return experts


def time_fn(fn: Callable[[], object], device: str, reps: int) -> float:
    """Milliseconds: median on GPU; on CPU the minimum, because the dev CPU is shared and noisy."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return min(ts)


def measure_peaks(dtype: torch.dtype) -> tuple[float, float]:
    """(HBM bytes/s from a 2 GiB device copy, dense matmul FLOP/s from 8192^3 in dtype)."""
    import triton.testing

    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), return_mode="median")
    bw = 2 * a.numel() / (ms * 1e-3)
    n = 8192
    x = torch.randn(n, n, device="cuda", dtype=dtype)
    y = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = triton.testing.do_bench(lambda: x @ y, return_mode="median")
    return bw, 2 * n**3 / (ms * 1e-3)


def cuda_graph(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(3):  # compile and warm the kernels outside the capture
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_out = fn()

    def replay() -> torch.Tensor:
        graph.replay()
        return static_out

    return replay


def build_methods(
    model, x, w_gate_up, w_down, w, ids, device, dry_run
) -> dict[str, Callable[[], torch.Tensor]]:
    import kernels
    from kernels.reference import fused_moe_naive, fused_moe_ref

    E, H, inter, dtype, T = w_gate_up.shape[0], x.shape[1], w_down.shape[2], x.dtype, x.shape[0]
    methods: dict[str, Callable[[], torch.Tensor]] = {}
    if device == "cuda" or dry_run:
        methods["ours"] = lambda: kernels.fused_moe(x, w_gate_up, w_down, w, ids, backend="triton")
    if device == "cuda":
        # the path never syncs the host, so it can be captured whole; the replay shows the time
        # without Python/launch overhead (what a graph-capturing engine gets at small T)
        try:
            methods["ours-graph"] = cuda_graph(methods["ours"])
        except Exception as exc:  # reported, and the column shows '-'
            print(f"# CUDA graph capture failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    if device == "cpu":  # what the CPU path actually runs (loop or _grouped_mm, chosen per call)
        methods["cpu-path"] = lambda: kernels.fused_moe(x, w_gate_up, w_down, w, ids, backend="torch")
    methods["loop"] = lambda: fused_moe_ref(x, w_gate_up, w_down, w, ids, use_grouped_mm=False)
    if hasattr(torch, "_grouped_mm"):
        methods["grouped_mm"] = lambda: fused_moe_ref(x, w_gate_up, w_down, w, ids, use_grouped_mm=True)
    for impl, name in (("eager", "hf-eager"), ("grouped_mm", "hf-grouped")):
        try:
            ex = hf_experts(model, E, H, inter, w_gate_up, w_down, impl)
        except Exception as exc:  # an older transformers without this module/implementation
            print(f"# {name} unavailable: {exc}", file=sys.stderr)
            continue
        methods[name] = lambda ex=ex: ex(x, ids.long(), w.to(dtype))
    if device == "cpu" and T <= 16:
        methods["naive"] = lambda: fused_moe_naive(x, w_gate_up, w_down, w, ids)
    return methods


def run_shape(model, E, k, H, inter, tokens, device, dtype, peaks, reps, dry_run, check) -> list[str]:
    import kernels
    from kernels.reference import fused_moe_ref

    g = torch.Generator(device="cpu").manual_seed(0)
    w_gate_up = (torch.randn(E, 2 * inter, H, generator=g) / H**0.5).to(device, dtype)
    w_down = (torch.randn(E, H, inter, generator=g) / inter**0.5).to(device, dtype)
    rows = []
    for T in tokens:
        x = torch.randn(T, H, generator=g).to(device, dtype)
        logits = torch.randn(T, E, generator=g).to(device)
        w, ids = kernels.topk_gating(logits, k, renormalize=True, backend="torch")
        methods = build_methods(model, x, w_gate_up, w_down, w, ids, device, dry_run)
        ref = fused_moe_ref(x, w_gate_up, w_down, w, ids).float()
        times, errs = {}, {}
        failed = set()
        for name, fn in methods.items():
            try:
                with torch.no_grad():
                    out = fn()
            except Exception as exc:  # e.g. _grouped_mm alignment/arch limits: reported, not hidden
                print(f"# {model} T={T} {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                failed.add(name)
                continue
            errs[name] = ((out.float() - ref).norm() / ref.norm()).item()
        runnable = {n: f for n, f in methods.items() if n not in failed}
        with torch.no_grad():
            if dry_run:
                times = dict.fromkeys(runnable, float("nan"))
            elif device == "cuda":
                times = {n: time_fn(f, device, reps) for n, f in runnable.items()}
            else:
                # round-robin so that load from other processes on the shared CPU hits all methods
                times = dict.fromkeys(runnable, float("inf"))
                for _ in range(reps):
                    for n, f in runnable.items():
                        times[n] = min(times[n], time_fn(f, device, 1))
        if check:
            bad = {n: e for n, e in errs.items() if e > (1e-2 if dtype == torch.bfloat16 else 1e-3)}
            if bad:
                raise SystemExit(f"{model} T={T}: outputs disagree with the reference: {bad}")
        uniq = int(torch.unique(ids).numel())
        flops = 6 * T * k * H * inter
        nbytes = (uniq * 3 * inter * H + 2 * T * H) * w_gate_up.element_size()
        cells = [model, str(T)]
        if peaks:
            bw, rate = peaks
            roof = max(nbytes / bw, flops / rate) * 1e3
            ours = times.get("ours", float("nan"))
            graph = times.get("ours-graph", float("nan"))
            cells += [f"{roof:.3f}", f"{ours / roof:.2f}x", f"{graph / roof:.2f}x"]
            cells.append(f"{flops / (min(ours, graph) * 1e-3) / rate:.0%}")
        for name in columns(device, dry_run):
            t = times.get(name)
            if t is None:
                cells.append("failed" if name in failed else "-")
            else:
                cells.append("ran" if dry_run else f"{t:.3f}")
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], f"  (rel err vs reference: {', '.join(f'{n} {e:.1e}' for n, e in errs.items())})")
    return rows


def columns(device: str, dry_run: bool) -> list[str]:
    cols = ["loop", "grouped_mm", "hf-eager", "hf-grouped"]
    if device == "cuda":
        return ["ours", "ours-graph", *cols]
    return ["cpu-path", *(["ours"] if dry_run else []), *cols, "naive"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes, each method once, no timing")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    p.add_argument("--tokens", type=int, nargs="+")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--scale", type=int, default=None, help="divide H and I by this (CPU default 16)")
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    p.add_argument("--reps", type=int, default=15, help="CPU repetitions per method")
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("No CUDA device: run with --device cpu (reference paths) or on a GPU machine.")
        return 2
    if device == "cpu" and args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported, so 'ours' can run here
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    if dtype == torch.bfloat16 and device == "cpu" and args.dry_run:
        dtype = torch.float16  # the Triton interpreter computes bf16 wrongly
    scale = args.scale or (1 if device == "cuda" else (64 if args.dry_run else 16))
    tokens = args.tokens or (
        GPU_TOKENS if device == "cuda" else ([1, 7] if args.dry_run else [1, 16, 64, 256])
    )
    if device == "cpu":
        # one intra-op thread: with other jobs on the 2 shared cores, OpenMP barriers make
        # multi-threaded timings swing by 100x; one thread gives stable, comparable numbers
        torch.set_num_threads(args.threads)
    peaks = measure_peaks(dtype) if device == "cuda" else None
    machine = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    )
    print(f"# machine: {machine}; torch {torch.__version__}; dtype {dtype}; H, I divided by {scale}")
    print(
        f"# command: python benchmarks/kernels_gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    if peaks:
        print(f"# measured HBM {peaks[0] / 1e9:.0f} GB/s, dense matmul {peaks[1] / 1e12:.0f} TFLOP/s")
    rows = []
    for model in args.models:
        E, k, H, inter = MODELS[model][:4]
        rows += run_shape(
            model, E, k, H // scale, inter // scale, tokens, device, dtype, peaks, args.reps, args.dry_run,
            check=True,
        )  # fmt: skip
    head = ["model", "T"]
    head += ["roofline ms", "ours/roof", "graph/roof", "ours % matmul"] if peaks else []
    head += [f"{h} ms" for h in columns(device, args.dry_run)]
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
