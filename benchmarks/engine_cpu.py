"""Our engine vs transformers on CPU, same OLMoE-shaped small checkpoint (random weights).

    nice -n 10 .venv/bin/python benchmarks/engine_cpu.py [--layers 4 --hidden 512 ...] [--json out.json]

Prints decode tokens/s at batch 1 and 16 and prefill tokens/s for our engine (eager, and with the
decode step compiled: ``load_model(..., compile=True)``) and transformers, and the ratios.
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

from moe_engine import load_model  # noqa: E402
from moe_engine.bench import bench_engine, bench_transformers  # noqa: E402


def olmoe_config(a: argparse.Namespace) -> object:
    import transformers as tf

    return tf.OlmoeConfig(
        vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
        num_key_value_heads=a.heads, intermediate_size=a.inter, num_experts=a.experts, num_experts_per_tok=a.top_k,
        max_position_embeddings=4096, initializer_range=0.1, pad_token_id=0, eos_token_id=None,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--inter", type=int, default=256)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batches", default="1,16")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="both engines run in it")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler's table for the compiled engine's decode steps at each batch size")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    import transformers as tf

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        hf = tf.OlmoeForCausalLM(olmoe_config(a)).eval()
        hf.save_pretrained(d)
        hf = hf.to(getattr(torch, a.dtype))
        engines = {"engine": load_model(d, dtype=a.dtype), "engine_compiled": load_model(d, dtype=a.dtype, compile=True)}
        rows = []
        for b in (int(x) for x in a.batches.split(",")):
            row = {"batch": b}
            for name, model in engines.items():
                row[name] = bench_engine(model, batch=b, prompt_len=a.prompt_len, new_tokens=a.new_tokens)
            if a.profile:
                from torch.profiler import profile

                prof = profile()
                bench_engine(engines["engine_compiled"], batch=b, prompt_len=a.prompt_len, new_tokens=a.new_tokens,
                             decode_context=prof)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), flush=True)
            if not a.skip_hf:
                h = bench_transformers(hf, batch=b, prompt_len=a.prompt_len, new_tokens=a.new_tokens)
                row["transformers"] = h
                for name in engines:
                    for k in ("decode_tok_s", "prefill_tok_s", "decode_tok_s_cpu", "prefill_tok_s_cpu"):
                        row[f"{name}_{k.replace('tok_s', 'ratio')}"] = round(row[name][k] / h[k], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(sys.argv), "config": vars(a), "rows": rows,
    }
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
