"""Agent checkpoints on customers' own wordings: recipients read per set (D, E, F).

    python benchmarks/agent_wordings.py checkpoints/agent var/agent_stage8 [--json out.json]

Each case asks for `recipient` together with the fields its intent's procedure asks for, as the
pipeline would (`support_agents.language.evaluate.field_misses`); the wordings and how each set was
written are in `data/wordings/recipients.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from moe_engine import load_model  # noqa: E402
from support_agents.language.evaluate import field_misses  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", help="agent checkpoint directories")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args()
    torch.set_num_threads(1)
    sets = {k: v for k, v in json.loads((ROOT / "data" / "wordings" / "recipients.json").read_text()).items()
            if k != "about"}
    out = {}
    for path in a.checkpoints:
        model = load_model(path)
        out[path] = {}
        for name, cases in sets.items():
            missed = field_misses(model, "recipient", [tuple(c) for c in cases])
            out[path][name] = {"right": len(cases) - len(missed), "n": len(cases), "missed": missed}
        print(path + ": " + ", ".join(f"{n} {r['right']}/{r['n']}" for n, r in out[path].items()))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
