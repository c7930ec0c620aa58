"""Per-process model cache: each worker process loads a checkpoint once and shares it.

Celery threads (or the console's processes) in one process share one model; when the engine's
`BatchingEngine` is available, concurrent generate calls are batched together through it.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from django.conf import settings

_lock = threading.Lock()
_models: dict[tuple[str, str], Any] = {}
_engines: dict[str, Any] = {}


def _root() -> Path:
    return Path(settings.BASE_DIR)


def router_path() -> Path:
    return Path(os.environ.get("MOEDESK_ROUTER_PATH") or _root() / "checkpoints" / "router")


def agent_path(model_path: str = "") -> Path:
    """The agent profile's checkpoint, or the shipped one when the profile leaves it empty."""
    if model_path:
        p = Path(model_path)
        return p if p.is_absolute() else _root() / p
    return Path(os.environ.get("MOEDESK_AGENT_PATH") or _root() / "checkpoints" / "agent")


def _device() -> str:
    import torch

    want = os.environ.get("MOEDESK_DEVICE", "auto")
    if want == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return want


def _compile_decode(device: str) -> bool:
    """MOEDESK_COMPILE: auto (default) and 1 compile the CPU decode step (~3x faster at batch 1,
    paid once per process by compiling, ~15 s on 2 cores); 0 keeps the eager step."""
    want = os.environ.get("MOEDESK_COMPILE", "auto")
    if want not in ("auto", "0", "1"):
        raise ValueError(f"MOEDESK_COMPILE must be auto, 0 or 1, got {want!r}")
    return want != "0" and device == "cpu"


def get_model(path: Path | str) -> Any:
    from moe_engine import load_model

    key = (str(Path(path).resolve()), _device())
    model = _models.get(key)
    if model is None:
        with _lock:
            model = _models.get(key)
            if model is None:
                model = load_model(key[0], device=key[1], compile=_compile_decode(key[1]))
                model.eval()
                _models[key] = model
    return model


class _LockedModel:
    """Fallback when the engine has no BatchingEngine: one generate at a time per model."""

    def __init__(self, model: Any):
        self.model = model
        self.tokenizer = model.tokenizer
        self.config = model.config
        self._lock = threading.Lock()

    def generate(self, prompts: Any, **kw: Any) -> Any:
        with self._lock:
            return self.model.generate(prompts, **kw)


def get_generator(path: Path | str) -> Any:
    """What the language functions receive as `model`: shared, thread-safe, batched when possible."""
    key = str(Path(path).resolve())
    gen = _engines.get(key)
    if gen is None:
        model = get_model(path)
        with _lock:
            gen = _engines.get(key)
            if gen is None:
                gen = _make_generator(model)
                _engines[key] = gen
    return gen


def _make_generator(model: Any) -> Any:
    if os.environ.get("MOEDESK_BATCHING", "1") == "1":
        try:
            from moe_engine.serving import BatchingEngine
        except ImportError:
            BatchingEngine = None  # noqa: N806
        if BatchingEngine is not None:
            max_len = min(int(getattr(model.config, "max_position_embeddings", 1024) or 1024), 4096)
            return BatchingEngine(model, max_len=max_len)
    return _LockedModel(model)


def has_chat_template(model: Any) -> bool:
    tok = getattr(model, "tokenizer", None)
    return bool(getattr(tok, "chat_template", None))
