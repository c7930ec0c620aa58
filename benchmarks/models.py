"""Default models on this machine: router classify throughput and agent-model call latency.

    python benchmarks/models.py [--router checkpoints/router] [--agent checkpoints/agent] [--threads 2]

Router: the engine's batched ``classify`` on the Banking77 validation texts (x4), raw text in
(tokenisation included), grouped by length into batches of --batch; best of --repeats passes. Then
the same texts in one call spread over --processes forked processes (``classify(...,
processes=N)``, one thread each: what ``manage.py classify`` does), also best of --repeats.
Agent: mean wall time of one ``extract_arguments`` and one ``write_reply`` call (batch 1, greedy),
with the eager and the compiled decode step (``load_model(..., compile=True)``, what workers run).
Prints one JSON object (machine, command, numbers) for docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from moe_engine import load_model  # noqa: E402
from moe_engine.data.banking77 import load_splits, ood_texts  # noqa: E402


def router_throughput(path: Path, batch: int, repeats: int, processes: int) -> dict:
    model = load_model(path)
    _, val = load_splits()
    texts = sorted([t for t, _ in val] * 4 + ood_texts("validation") * 4, key=len)
    model.classify(texts[:batch])
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, len(texts), batch):
            model.classify(texts[s : s + batch])
        best = max(best, len(texts) / (time.perf_counter() - t0))
    best_procs = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.classify(texts, processes=processes)
        best_procs = max(best_procs, len(texts) / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    for t in texts[:200]:
        model.classify([t])
    single = (time.perf_counter() - t0) / 200
    return {"queries": len(texts), "batch": batch, "queries_per_s": round(best, 1),
            "processes": processes, "queries_per_s_processes": round(best_procs, 1),
            "batch1_latency_ms": round(1000 * single, 2)}


def agent_latency(path: Path, n: int, compile: bool = False) -> dict:
    from support_agents.language import extract_arguments, write_reply

    model = load_model(path, compile=compile)
    msg = "I was charged twice at Tesco for £23.50 on 3 March, card ending 4821."
    facts = {"transaction": "TX0000120003", "merchant": "Tesco", "amount": "23.50 GBP", "date": "2026-03-03",
             "transaction_status": "completed",
             "answer": "A duplicate charge is usually a pending authorisation that drops off; confirmed duplicates are refunded."}
    extract_arguments(model, intent="transaction_charged_twice", text=msg, fields=["merchant", "amount"])
    write_reply(model, customer_name="Alice Smith", intent="transaction_charged_twice", facts=facts, message=msg)
    t0 = time.perf_counter()
    for _ in range(n):
        args = extract_arguments(model, intent="transaction_charged_twice", text=msg, fields=["merchant", "amount"])
    t_ext = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        reply = write_reply(model, customer_name="Alice Smith", intent="transaction_charged_twice", facts=facts,
                            message=msg)
    t_rep = (time.perf_counter() - t0) / n
    return {"extract_arguments_ms": round(1000 * t_ext, 1), "write_reply_ms": round(1000 * t_rep, 1),
            "example_arguments": args, "example_reply": reply.text, "example_reply_faithful": reply.faithful}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--router", type=Path, default=Path("checkpoints/router"))
    ap.add_argument("--agent", type=Path, default=Path("checkpoints/agent"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--agent-calls", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
                      f"torch {torch.__version__}, {a.threads} threads",
           "load_average_at_start": os.getloadavg(),
           "command": "python " + " ".join(sys.argv)}
    if a.router.is_dir():
        out["router"] = router_throughput(a.router, a.batch, a.repeats, a.processes)
    if a.agent.is_dir():
        out["agent"] = agent_latency(a.agent, a.agent_calls)
        out["agent_compiled_decode"] = agent_latency(a.agent, a.agent_calls, compile=True)
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
