"""Tool registry: typed argument schemas, ownership by allow-list, approval rules.

A tool never takes a customer id from its arguments: the customer is the ticket's, injected from
the run context, so no prompt can make a tool read or change another customer's data.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict


class ToolArgs(BaseModel):
    # Unknown keys are an error, not silently dropped: a model inventing "customer_id" is refused.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ToolError(Exception):
    """An expected failure of a tool (no such card, amount too large...): recorded, not a crash."""


@dataclass
class ToolContext:
    ticket: Any
    customer: Any
    run: Any
    profile: Any
    step_index: int
    idempotency_key: str


@dataclass(frozen=True)
class Tool:
    name: str
    family: str  # billing / technical / sales / shared: where it belongs by default
    description: str
    args: type[ToolArgs]
    fn: Callable[[ToolContext, Any], dict]
    effect: bool = False
    # Returns a reason string when this call needs a human's approval before it runs.
    approval: Callable[[ToolContext, Any], str | None] | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    def json_schema(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters": self.args.model_json_schema()}


REGISTRY: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    if tool.name in REGISTRY:
        raise ValueError(f"tool {tool.name} registered twice")
    REGISTRY[tool.name] = tool
    return tool


def tool_names() -> list[str]:
    return sorted(REGISTRY)


def default_tools(family: str) -> list[str]:
    return sorted(t.name for t in REGISTRY.values() if t.family in (family, "shared"))
