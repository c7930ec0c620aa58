"""GPU decode throughput and HBM-roofline fraction: our engine vs transformers, same random weights.

    .venv/bin/python benchmarks/engine_gpu.py                       # OLMoE-1B-7B + Qwen3-30B-A3B shapes, 4 layers
    .venv/bin/python benchmarks/engine_gpu.py --shapes olmoe --layers 2 --batches 1,8
    .venv/bin/python benchmarks/engine_gpu.py --smoke               # tiny shapes on CPU: checks the script only

Weights are random bf16 (no download). Roofline fraction per decode step = bytes that step must read
from HBM (the distinct experts it routed to, attention + router + norm weights of every layer, the
KV cache it attends over, the lm_head) / step time / peak HBM bandwidth (--peak-gbs, or looked up
from the device name).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moe_engine import build_model, save_checkpoint  # noqa: E402
from moe_engine.bench import bench_engine, bench_transformers  # noqa: E402
from moe_engine.config import ModelArgs  # noqa: E402
from moe_engine.cost import param_counts  # noqa: E402

SHAPES = {
    # allenai/OLMoE-1B-7B-0924 config.json (layers cut with --layers)
    "olmoe": {"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "vocab_size": 50304,
              "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 16,
              "intermediate_size": 1024, "num_experts": 64, "num_experts_per_tok": 8, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 4096, "rope_theta": 10000.0, "pad_token_id": 1, "eos_token_id": None},
    # Qwen/Qwen3-30B-A3B config.json
    "qwen3": {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "vocab_size": 151936,
              "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
              "head_dim": 128, "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128,
              "num_experts_per_tok": 8, "norm_topk_prob": True, "rms_norm_eps": 1e-6, "decoder_sparse_step": 1,
              "mlp_only_layers": [], "max_position_embeddings": 40960, "rope_theta": 1e6, "eos_token_id": None},
}
SMOKE = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16, "vocab_size": 512,
         "intermediate_size": 64, "moe_intermediate_size": 32}
PEAK_GBS = {"H100 SXM": 3350, "H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100 NVL": 3900, "H200": 4800,
            "A100-SXM4-80GB": 2039, "A100-SXM4-40GB": 1555, "A100-PCIE": 1555}


def peak_gbs(name: str) -> float | None:
    for k, v in PEAK_GBS.items():
        if k.lower() in name.lower():
            return v
    if "h100" in name.lower():
        return 3350
    return None


def step_bytes(args: ModelArgs, batch: int, ctx: int, unique_experts: float, elem: int) -> float:
    """Bytes one decode step reads: distinct experts + attention/router/norms + KV cache + lm_head."""
    h, d = args.hidden_size, args.head_dim
    attn = h * d * (2 * args.n_heads + 2 * args.n_kv_heads)
    per_layer = attn + h * args.num_experts + 4 * h  # + router + norms
    expert = 3 * h * args.moe_intermediate_size
    kv = batch * ctx * args.n_kv_heads * d * 2 * args.n_layers
    head = args.vocab_size * h + batch * h  # lm_head + the embedding rows
    return elem * (args.n_layers * per_layer + unique_experts * expert + kv + head)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="olmoe,qwen3")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batches", default="1,8,64")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--peak-gbs", type=float, default=None)
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (fp32): exercises the script only")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    cuda = torch.cuda.is_available() and not a.smoke
    if not cuda and not a.smoke:
        sys.exit("no CUDA device: run with --smoke to check the script on CPU")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    peak = a.peak_gbs or (peak_gbs(name) if cuda else None)
    if a.smoke:
        a.batches, a.prompt_len, a.new_tokens = "1,2", 8, 4
    print(json.dumps({"device": name, "peak_gbs": peak, "torch": torch.__version__}), flush=True)
    rows = []
    for shape in a.shapes.split(","):
        cfg = dict(SHAPES[shape], num_hidden_layers=a.layers, initializer_range=0.02)
        if a.smoke:
            cfg |= SMOKE
        model = build_model(cfg, seed=0, dtype=dtype, device=device)
        hf = None
        if not a.skip_hf:
            import transformers as tf

            with tempfile.TemporaryDirectory() as d:
                save_checkpoint(model, d, layout="fused")
                hf = tf.AutoModelForCausalLM.from_pretrained(d, dtype=dtype).to(device).eval()
        pc = param_counts(model.args)
        for b in (int(x) for x in a.batches.split(",")):
            e = bench_engine(model, batch=b, prompt_len=a.prompt_len, new_tokens=a.new_tokens)
            ctx = a.prompt_len + a.new_tokens // 2
            nbytes = step_bytes(model.args, b, ctx, e["unique_experts_per_step"], torch.finfo(dtype).bits // 8)
            row = {"shape": shape, "layers": a.layers, "batch": b, "active_params": pc.active,
                   "total_params": pc.total, "engine": e, "step_bytes": nbytes,
                   "achieved_gbs": nbytes / (e["decode_step_ms"] / 1000) / 1e9}
            if peak:
                row["roofline_fraction"] = row["achieved_gbs"] / peak
            if hf is not None:
                h = bench_transformers(hf, batch=b, prompt_len=a.prompt_len, new_tokens=a.new_tokens)
                row["transformers"] = h
                row["decode_ratio"] = e["decode_tok_s"] / h["decode_tok_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model, hf
        if cuda:
            torch.cuda.empty_cache()
    if a.json:
        Path(a.json).write_text(json.dumps({
            "device": name, "peak_gbs": peak, "command": " ".join(sys.argv),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
