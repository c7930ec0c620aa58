"""CLI: `python -m moe_engine generate --model DIR "text"` and `python -m moe_engine bench --model DIR`."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m moe_engine")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("generate", "bench", "classify"):
        s = sub.add_parser(name)
        s.add_argument("--model", required=True, help="checkpoint directory (config.json + *.safetensors)")
        s.add_argument("--device", default="cuda" if _cuda() else "cpu")
        s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
        if name != "classify":
            s.add_argument("--compile", action="store_true",
                           help="compile the decode step (CPU; ~3x faster at batch 1 after ~15 s of compiling)")
        if name == "generate":
            s.add_argument("prompt", nargs="+")
            s.add_argument("--max-new-tokens", type=int, default=64)
            s.add_argument("--temperature", type=float, default=0.0)
            s.add_argument("--top-p", type=float, default=1.0)
            s.add_argument("--seed", type=int, default=None)
            s.add_argument("--stop", action="append", default=None)
            s.add_argument("--chat", action="store_true", help="wrap the prompt with the chat template")
        elif name == "classify":
            s.add_argument("text", nargs="+")
        else:
            s.add_argument("--batch", default="1,16", help="comma-separated batch sizes")
            s.add_argument("--prompt-len", type=int, default=64)
            s.add_argument("--new-tokens", type=int, default=64)
    a = p.parse_args(argv)

    from . import CheckpointError, load_model

    try:
        model = load_model(a.model, device=a.device, dtype=a.dtype, compile=getattr(a, "compile", False))
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.cmd == "bench":
        from .bench import bench_engine

        for b in (int(x) for x in a.batch.split(",")):
            print(json.dumps(bench_engine(model, batch=b, prompt_len=a.prompt_len, new_tokens=a.new_tokens)))
        return 0
    tok = model.tokenizer
    if tok is None:
        print("error: the checkpoint has no tokenizer.json", file=sys.stderr)
        return 2
    if a.cmd == "classify":
        out = model.classify(a.text)
        for text, label, u in zip(a.text, out.labels, out.usage, strict=True):
            print(json.dumps({"text": text, "label": label, "usage": u.as_dict()}))
        return 0
    prompts = [tok.apply_chat_template([{"role": "user", "content": t}]) if a.chat else tok.encode(t)
               for t in a.prompt]
    out = model.generate(prompts, max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p,
                         seed=a.seed, stop=a.stop)
    for text, u, fin in zip(out.texts, out.usage, out.finish_reasons, strict=True):
        print(text)
        print(json.dumps({"finish_reason": fin, "usage": u.as_dict()}), file=sys.stderr)
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
