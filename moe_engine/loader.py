"""Hugging Face checkpoint directory <-> Transformer.

Reads config.json + *.safetensors (sharded through model.safetensors.index.json or not), in either
expert layout: per-expert tensors (``experts.N.gate_proj/up_proj/down_proj``, Mixtral's
``block_sparse_moe.experts.N.w1/w3/w2``) or the fused 3-D ``experts.gate_up_proj`` /
``experts.down_proj``. Experts are stacked into one tensor per layer while loading.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import CheckpointError, ModelArgs
from .model import Transformer, init_weights

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # old checkpoints persisted this buffer; we recompute it


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    return dtype


def read_config(path: str | os.PathLike) -> ModelArgs:
    f = Path(path) / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{f}: config.json not found")
    try:
        cfg = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: invalid JSON ({e})") from e
    return ModelArgs.from_hf(cfg, source=str(f))


def hf_mapping(args: ModelArgs, layer_layout: dict[int, str] | None = None) -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """Yield (our parameter name, [(hf tensor name, slice spec)]) for every parameter.

    Slice spec: None = whole tensor; ("rows", a, b) = our_param[a:b]; ("expert", e, a, b) =
    our_param[e, a:b]. ``layer_layout[i]`` is "fused" or "per_expert" for MoE layer i, and for
    Mixtral the module prefix is included: "fused:mlp" or "per_expert:block_sparse_moe".
    """
    layer_layout = layer_layout or {}
    yield "embed_tokens.weight", [("model.embed_tokens.weight", None)]
    attn = ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"]
    if args.qkv_bias:
        attn += ["q_proj.bias", "k_proj.bias", "v_proj.bias"]
    if args.o_bias:
        attn += ["o_proj.bias"]
    if args.qk_norm:
        attn += ["q_norm.weight", "k_norm.weight"]
    for i in range(args.n_layers):
        p = f"model.layers.{i}"
        for n in attn:
            yield f"layers.{i}.self_attn.{n}", [(f"{p}.self_attn.{n}", None)]
        for n in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            yield f"layers.{i}.{n}", [(f"{p}.{n}", None)]
        if not args.sparse_layers[i]:
            yield from _dense(f"layers.{i}.mlp", f"{p}.mlp", args.intermediate_size)
            continue
        layout = layer_layout.get(i, "per_expert")
        layout, _, mod = layout.partition(":")
        mod = mod or ("block_sparse_moe" if args.arch == "mixtral" and layout == "per_expert" else "mlp")
        m, inter = f"{p}.{mod}", args.moe_intermediate_size
        yield f"layers.{i}.mlp.gate.weight", [(f"{m}.gate.weight", None)]
        if layout == "fused":
            yield f"layers.{i}.mlp.experts.gate_up_proj", [(f"{m}.experts.gate_up_proj", None)]
            yield f"layers.{i}.mlp.experts.down_proj", [(f"{m}.experts.down_proj", None)]
        else:
            g, u, d = ("w1", "w3", "w2") if args.arch == "mixtral" else ("gate_proj", "up_proj", "down_proj")
            gu, dn = [], []
            for e in range(args.num_experts):
                gu += [(f"{m}.experts.{e}.{g}.weight", ("expert", e, 0, inter)),
                       (f"{m}.experts.{e}.{u}.weight", ("expert", e, inter, 2 * inter))]
                dn += [(f"{m}.experts.{e}.{d}.weight", ("expert", e, None, None))]
            yield f"layers.{i}.mlp.experts.gate_up_proj", gu
            yield f"layers.{i}.mlp.experts.down_proj", dn
        if args.shared_expert_intermediate_size:
            yield from _dense(f"layers.{i}.mlp.shared_expert", f"{m}.shared_expert",
                              args.shared_expert_intermediate_size)
            yield f"layers.{i}.mlp.shared_expert_gate.weight", [(f"{m}.shared_expert_gate.weight", None)]
    yield "norm.weight", [("model.norm.weight", None)]
    if args.task == "cls":
        yield "score.weight", [("score.weight", None)]
    elif not args.tie_word_embeddings:
        yield "lm_head.weight", [("lm_head.weight", None)]


def _dense(ours: str, hf: str, inter: int) -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    yield f"{ours}.gate_up_proj", [(f"{hf}.gate_proj.weight", ("rows", 0, inter)),
                                   (f"{hf}.up_proj.weight", ("rows", inter, 2 * inter))]
    yield f"{ours}.down_proj", [(f"{hf}.down_proj.weight", None)]


def _target(param: torch.Tensor, spec: Any) -> torch.Tensor:
    if spec is None:
        return param
    if spec[0] == "rows":
        return param[spec[1]:spec[2]]
    _, e, a, b = spec
    return param[e] if a is None else param[e, a:b]


class _Tensors:
    """Every tensor name in a checkpoint directory -> its file, with open handles."""

    def __init__(self, path: Path, stack: ExitStack):
        index = path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in path.glob("*.safetensors"))
            if not files:
                raise CheckpointError(f"{path}: no *.safetensors files (and no model.safetensors.index.json)")
        self.where: dict[str, Path] = {}
        self.handles = {}
        for name in files:
            f = path / name
            if not f.is_file():
                raise CheckpointError(f"{index}: lists shard {name} which does not exist")
            try:
                h = stack.enter_context(safe_open(str(f), framework="pt", device="cpu"))
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise CheckpointError(f"{f}: cannot read safetensors file ({e})") from e
            self.handles[f] = h
            for k in h.keys():  # noqa: SIM118 - safe_open is not a Mapping
                self.where[k] = f
        self.files = [path / n for n in files]

    def get(self, name: str) -> torch.Tensor:
        return self.handles[self.where[name]].get_tensor(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.handles[self.where[name]].get_slice(name).get_shape())


def _layouts(args: ModelArgs, t: _Tensors, path: Path) -> dict[int, str]:
    out = {}
    mods = ["block_sparse_moe", "mlp"] if args.arch == "mixtral" else ["mlp"]
    first = "w1" if args.arch == "mixtral" else "gate_proj"
    for i in args.moe_layers:
        for mod in mods:
            p = f"model.layers.{i}.{mod}.experts"
            if f"{p}.gate_up_proj" in t.where:
                out[i] = f"fused:{mod}"
                break
            if f"{p}.0.{first}.weight" in t.where:
                out[i] = f"per_expert:{mod}"
                break
        else:
            p = f"model.layers.{i}.{mods[0]}.experts"
            raise CheckpointError(
                f"{_files(t, path)}: missing tensor {p}.0.{first}.weight (or fused {p}.gate_up_proj) for MoE layer {i}"
            )
    return out


def _files(t: _Tensors, path: Path) -> str:
    return str(t.files[0]) if len(t.files) == 1 else f"{path}/model.safetensors.index.json"


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32,
    *, tokenizer: bool = True, compile: bool = False,
) -> Transformer:
    """Load a Hugging Face MoE checkpoint directory; raises CheckpointError on anything we can't run.

    ``compile=True`` compiles the decode step (CPU only, see ``Transformer.compile_decode``).
    """
    path = Path(path)
    dtype, device = _dtype(dtype), torch.device(device)
    args = read_config(path)
    with torch.device("meta"):
        model = Transformer(args)
    model = model.to_empty(device=device).to(dtype)
    if args.tie_word_embeddings and model.lm_head is not None:
        model.lm_head.weight = model.embed_tokens.weight
    params = dict(model.named_parameters(remove_duplicate=False))
    with ExitStack() as stack:
        t = _Tensors(path, stack)
        used = set()
        with torch.no_grad():
            for ours, sources in hf_mapping(args, _layouts(args, t, path)):
                param = params[ours]
                for hf_name, spec in sources:
                    if hf_name not in t.where:
                        raise CheckpointError(f"{_files(t, path)}: missing tensor {hf_name}")
                    dst = _target(param, spec)
                    shape = t.shape(hf_name)
                    if shape != tuple(dst.shape):
                        raise CheckpointError(
                            f"{t.where[hf_name]}: tensor {hf_name} has shape {list(shape)}, expected {list(dst.shape)}"
                        )
                    src = t.get(hf_name)
                    if not src.is_floating_point():
                        raise CheckpointError(f"{t.where[hf_name]}: tensor {hf_name} has dtype {src.dtype}")
                    dst.copy_(src)
                    used.add(hf_name)
        extra = [k for k in t.where if k not in used and not k.endswith(IGNORED_SUFFIXES)]
        if args.tie_word_embeddings:
            extra = [k for k in extra if k != "lm_head.weight"]
        if extra:
            raise CheckpointError(
                f"{t.where[extra[0]]}: unexpected tensor {extra[0]} ({len(extra)} unused in all); "
                "the checkpoint does not match its config.json"
            )
    _attach(model, path if tokenizer else None)
    if compile:
        model.compile_decode()
    return model.eval()


def _attach(model: Transformer, path: Path | None) -> None:
    from .telemetry import RoutingStats

    model.telemetry = RoutingStats(len(model.args.moe_layers), model.args.num_experts, model.device)
    if path is not None and (path / "tokenizer.json").is_file():
        from .tokenizer import Tokenizer

        model.tokenizer = Tokenizer.from_dir(path)


def build_model(
    config: dict[str, Any] | ModelArgs, *, seed: int | None = 0, dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu", std: float | None = None,
) -> Transformer:
    """A randomly initialised model from a config.json-style dict (for training or tests)."""
    args = config if isinstance(config, ModelArgs) else ModelArgs.from_hf(config, source="<config dict>")
    with torch.device("meta"):
        model = Transformer(args)
    model = model.to_empty(device=torch.device(device)).to(_dtype(dtype))
    if args.tie_word_embeddings and model.lm_head is not None:
        model.lm_head.weight = model.embed_tokens.weight
    model = init_weights(model, std=std or args.hf.get("initializer_range", 0.02), seed=seed)
    _attach(model, None)
    return model


def state_dict_hf(model: Transformer, layout: str = "per_expert") -> dict[str, torch.Tensor]:
    """Our parameters under Hugging Face tensor names, experts per-expert or fused 3-D."""
    if layout not in ("per_expert", "fused"):
        raise ValueError(f"layout must be 'per_expert' or 'fused', got {layout!r}")
    args = model.args
    params = dict(model.named_parameters(remove_duplicate=False))
    out = {}
    layouts = dict.fromkeys(args.moe_layers, layout)
    for ours, sources in hf_mapping(args, layouts):
        p = params[ours].detach()
        for hf_name, spec in sources:
            out[hf_name] = _target(p, spec).contiguous().cpu()
    return out


def save_checkpoint(
    model: Transformer, path: str | os.PathLike, *, layout: str = "per_expert",
    dtype: torch.dtype | str | None = None, extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write config.json + model.safetensors (HF names) that both we and transformers can load.

    ``layout="per_expert"`` is what transformers' save_pretrained writes; ``"fused"`` writes the
    stacked 3-D expert tensors. ``extra_config`` is merged into config.json (e.g. id2label).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    dtype = _dtype(dtype) if dtype is not None else model.dtype
    tensors = {k: v.to(dtype) for k, v in state_dict_hf(model, layout).items()}
    cfg = dict(model.args.hf)
    cfg.update(extra_config or {})
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path
