"""Language work inside the agents' procedures: argument extraction and reply writing.

Pure python, no Django: the same code builds the agent model's training data and runs at serving
time. ``model`` is any ``moe_engine`` model or batching engine with ``tokenizer`` and ``generate``.
"""
from .api import (
    REDRAFT_TEMPERATURE,
    ModelCall,
    Reply,
    complete,
    extract_arguments,
    template_reply,
    write_reply,
)
from .faithfulness import faithfulness_problems, missing_facts
from .fields import CURRENCIES, FIELDS, PRODUCTS, normalize

__all__ = [
    "REDRAFT_TEMPERATURE",
    "CURRENCIES",
    "FIELDS",
    "PRODUCTS",
    "ModelCall",
    "Reply",
    "complete",
    "extract_arguments",
    "faithfulness_problems",
    "missing_facts",
    "normalize",
    "template_reply",
    "write_reply",
]
