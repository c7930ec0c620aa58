"""A thread-safe request queue in front of one model, with continuous batching.

Celery threads (or any threads) call ``submit`` and get a ``concurrent.futures.Future``; one
background thread owns the KV cache and, between two decode steps, admits queued requests into
free batch rows, so a request never waits for another one to finish.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .config import ModelArgs
from .cost import Prices, Usage
from .generate import (
    ClassifyOutput,
    GenerateOutput,
    Request,
    Scheduler,
    TokenConstraint,
    _as_token_lists,
    make_request,
)
from .model import Prompts, Transformer
from .telemetry import RoutingStats
from .tokenizer import Tokenizer

_STOP = object()


@dataclass
class Completion:
    tokens: list[int]
    routing: Tensor  # int32 [moe_layers, fed_tokens, top_k]
    usage: Usage
    finish_reason: str
    text: str | None


class BatchingEngine:
    def __init__(self, model: Transformer, *, max_batch: int = 16, max_len: int = 1024,
                 prices: Prices | None = None):
        self.model = model
        self.max_batch, self.max_len = max_batch, max_len
        self._sched = Scheduler(model, max_batch, max_len, prices)
        self._queue: queue.Queue = queue.Queue()
        self._futures: dict[int, Future] = {}
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self.steps = 0  # decode steps run (for tests and metrics)
        self.max_rows_seen = 0

    # the same surface as a model, so callers can hold either
    @property
    def tokenizer(self) -> Tokenizer | None:
        return self.model.tokenizer

    @property
    def config(self) -> ModelArgs:
        return self.model.config

    @property
    def telemetry(self) -> RoutingStats:
        return self.model.telemetry

    def submit(self, ids: Sequence[int] | str, **gen: Any) -> Future:
        """Queue one prompt (token ids or text); ``gen`` as for ``make_request`` (seed, stop, constraint, ...)."""
        if self._closed:
            raise RuntimeError("BatchingEngine is closed")
        (ids,) = _as_token_lists(self.model, [ids])
        fut: Future = Future()
        req = make_request(self.model, ids, **gen)
        if not self._sched.fits(req):
            raise ValueError(f"prompt ({len(req.ids)}) + max_new_tokens ({req.max_new_tokens}) exceeds "
                             f"max_len={self.max_len}")
        req.on_done = self._done
        fut.set_running_or_notify_cancel()
        self._futures[id(req)] = fut
        self._ensure_thread()
        self._queue.put((req, fut))
        return fut

    def generate(self, prompts: Prompts, max_new_tokens: int = 64, *, seed: int | None = None,
                 constraints: Sequence[TokenConstraint | None] | None = None, **gen: Any) -> GenerateOutput:
        """Blocking, model.generate-compatible: every prompt becomes one queued request."""
        toks = _as_token_lists(self.model, prompts)
        if constraints is None:
            constraints = [None] * len(toks)
        if len(constraints) != len(toks):
            raise ValueError(f"{len(constraints)} constraints for {len(toks)} prompts")
        futs = [self.submit(p, max_new_tokens=max_new_tokens, seed=None if seed is None else seed + i,
                            constraint=c, **gen)
                for i, (p, c) in enumerate(zip(toks, constraints, strict=True))]
        outs = [f.result() for f in futs]
        texts = [o.text for o in outs] if self.model.tokenizer is not None else None
        return GenerateOutput([o.tokens for o in outs], [o.routing for o in outs], [o.usage for o in outs],
                              [o.finish_reason for o in outs], texts)

    def classify(self, prompts: Prompts, **kw: Any) -> ClassifyOutput:
        return self.model.classify(prompts, **kw)

    def stats(self) -> dict:
        """Queue depth and batch occupancy (approximate: read without stopping the loop)."""
        return {"queued": self._queue.qsize(), "active": len(self._sched.rows), "max_batch": self.max_batch,
                "max_len": self.max_len, "steps": self.steps, "max_rows_seen": self.max_rows_seen,
                "closed": self._closed}

    def close(self, timeout: float = 10.0) -> None:
        """Stop now: in-flight and queued requests fail with RuntimeError('BatchingEngine closed')."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def __enter__(self) -> BatchingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop thread ---------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="moe-batching", daemon=True)
                self._thread.start()

    def _done(self, r: Request) -> None:
        fut = self._futures.pop(id(r))
        fut.set_result(Completion(r.out, r.routing, r.usage, r.finish, r.text))

    def _loop(self) -> None:
        stop = False
        while not stop and not self._closed:
            new: list[Request] = []
            free = self._sched.free
            try:
                if free:
                    # idle: block for work; busy: only take what is already queued, up to the free rows
                    item = self._queue.get() if not self._sched.rows else self._queue.get_nowait()
                    while True:
                        if item is _STOP:
                            stop = True
                            break
                        new.append(item[0])
                        if len(new) >= free:
                            break
                        item = self._queue.get_nowait()
            except queue.Empty:
                pass
            try:
                if new:
                    self._sched.admit(new)
                self.max_rows_seen = max(self.max_rows_seen, len(self._sched.rows))
                if self._sched.rows:
                    self._sched.step()
                    self.steps += 1
            except Exception as e:  # fail the affected requests, keep serving the others
                for r in [*new, *self._sched.rows]:
                    fut = self._futures.pop(id(r), None)
                    if fut is not None and not fut.done():
                        fut.set_exception(e)
                self._sched.rows.clear()
        leftover = list(self._sched.rows)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                leftover.append(item[0])
        for r in leftover:
            fut = self._futures.pop(id(r), None)
            if fut is not None:
                fut.set_exception(RuntimeError("BatchingEngine closed"))
