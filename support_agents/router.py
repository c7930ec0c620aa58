"""Triage router: the MoE classifier picks intent -> queue, priority and a calibrated confidence."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

from .inference import get_model, router_path

OUT_OF_DOMAIN = "out_of_domain"
HUMAN = "human"

# Priority is a product rule on the intent: money or access at risk first, pre-sales questions last.
URGENT = {"compromised_card", "lost_or_stolen_card", "lost_or_stolen_phone", "card_payment_not_recognised",
          "cash_withdrawal_not_recognised", "direct_debit_payment_not_recognised", "card_swallowed"}
HIGH = {"transaction_charged_twice", "request_refund", "Refund_not_showing_up", "transfer_not_received_by_recipient",
        "pin_blocked", "card_not_working", "declined_card_payment", "declined_cash_withdrawal", "failed_transfer",
        "wrong_amount_of_cash_received", "cancel_transfer", "terminate_account", "unable_to_verify_identity"}


def priority_for(intent: str, queue: str) -> str:
    if intent in URGENT:
        return "urgent"
    if intent in HIGH:
        return "high"
    return "low" if queue == "sales" else "normal"


@lru_cache(maxsize=1)
def intent_queues() -> dict[str, str]:
    path = Path(settings.BASE_DIR) / "data" / "banking77" / "queues.json"
    return json.loads(path.read_text())


@dataclass
class Classification:
    intent: str
    queue: str  # billing / technical / sales / human
    confidence: float
    priority: str
    below_threshold: bool
    routing: Any = None  # int [layers, tokens, k]
    usage: Any = None


def _threshold(model: Any) -> float:
    meta = (getattr(model.config, "hf", None) or {}).get("moedesk", {})
    return float(meta.get("human_threshold", 0.5))


def _temperature(model: Any) -> float:
    meta = (getattr(model.config, "hf", None) or {}).get("moedesk", {})
    return float(meta.get("temperature", 1.0)) or 1.0


def classify_texts(texts: list[str], *, thresholds: dict[str, float] | None = None,
                   batch_size: int = 64, path: Path | str | None = None, processes: int = 1) -> list[Classification]:
    """Classify ticket texts in batches (grouped by length, so padding stays small).

    The checkpoint's own decision rule (moe_engine.data.router.decide: calibrated temperature,
    queue-level confidence, out-of-domain class) picks queue and intent; `thresholds` maps queue ->
    the owning agent's confidence threshold, which can only make the router stricter than the
    threshold tuned on validation data. `processes` > 1 forks that many classifying processes
    (moe_engine.parallel): for batch commands, not for a threaded server or worker.
    """
    from moe_engine.data.router import decide

    model = get_model(path or router_path())
    tok = model.tokenizer
    meta = dict((getattr(model.config, "hf", None) or {}).get("moedesk", {}))
    meta.setdefault("intent_queue", intent_queues())
    meta.setdefault("temperature", _temperature(model))
    base_thr = _threshold(model)
    meta["human_threshold"] = 0.0  # applied below, per queue
    max_len = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    ids = [(tok.encode(t or " ") or [0])[:max_len] for t in texts]
    res = model.classify(ids, batch_size=batch_size, processes=processes)
    out = []
    for j, d in enumerate(decide(res.logits, meta, model.config.id2label)):
        c = 0.0 if math.isnan(d.confidence) else d.confidence
        queue = d.queue
        thr = max(base_thr, (thresholds or {}).get(queue, 0.0))
        below = queue == HUMAN or d.intent == OUT_OF_DOMAIN or c < thr
        out.append(Classification(intent=d.intent, queue=HUMAN if below else queue, confidence=c,
                                  priority=priority_for(d.intent, queue), below_threshold=below,
                                  routing=res.routing[j] if res.routing else None,
                                  usage=res.usage[j] if res.usage else None))
    return out
