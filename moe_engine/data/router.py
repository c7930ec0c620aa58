"""The router checkpoint's decision rule: calibrated probabilities -> queue, intent, confidence.

Stored alongside the weights in config.json under ``"moedesk"``::

    {"temperature": T, "human_threshold": t, "ood_label": "out_of_domain",
     "intent_queue": {"card_arrival": "sales", ...}}

probs = softmax(logits / T); each queue's confidence is the summed probability of its intents
(two intents of the same queue competing does not make the *queue* uncertain); the best queue wins,
and it becomes "human" when it is the out-of-domain class or its confidence is below t. The intent
is the most probable intent of the winning queue (of all queues when it is human).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

HUMAN = "human"


@dataclass
class Decision:
    queue: str
    intent: str
    confidence: float  # calibrated probability of the chosen queue (before the human override)


def queue_probs(probs: Tensor, id2label: dict[int, str], intent_queue: dict[str, str], ood_label: str
                ) -> tuple[list[str], Tensor]:
    """(queue names, [B, Q] summed probabilities); the out-of-domain class is its own 'queue'."""
    names = sorted(set(intent_queue.values())) + [ood_label]
    col = torch.tensor([names.index(intent_queue.get(id2label[i], ood_label)) for i in range(probs.shape[1])])
    out = torch.zeros(probs.shape[0], len(names), dtype=probs.dtype).index_add(1, col, probs)
    return names, out


def decide(logits: Tensor, moedesk: dict, id2label: dict[int, str]) -> list[Decision]:
    """Decisions for a batch of raw router logits [B, num_labels]."""
    probs = torch.softmax(logits.float() / float(moedesk.get("temperature", 1.0)), dim=-1)
    ood = moedesk.get("ood_label", "out_of_domain")
    iq = moedesk["intent_queue"]
    names, qp = queue_probs(probs, id2label, iq, ood)
    conf, qi = qp.max(-1)
    t = float(moedesk.get("human_threshold", 0.0))
    labels = [id2label[i] for i in range(probs.shape[1])]
    in_domain = torch.tensor([label in iq for label in labels])
    # per queue, the intents it may report: its own, or every in-domain one (out-of-domain wins)
    allowed = torch.stack([torch.tensor([iq.get(label) == q for label in labels]) for q in names])
    allowed[~allowed.any(-1)] = in_domain
    # argmax keeps the first of equal maxima, as max() over the intents in label order did
    best = probs.masked_fill(~allowed[qi], -1.0).argmax(-1)
    out = []
    for q_index, b_conf, b_best in zip(qi.tolist(), conf.tolist(), best.tolist(), strict=True):
        q = names[q_index]
        out.append(Decision(HUMAN if q == ood or b_conf < t else q, labels[b_best], b_conf))
    return out
