"""Values for tests of the nesting-depth limit: build them, and measure what was stored."""

from __future__ import annotations

from typing import Any


def depth(value: Any) -> int:
    """Nesting depth of containers in decoded JSON (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def nested(levels: int) -> list[Any]:
    """A list nested ``levels`` deep (``levels`` containers), holding 1 at the bottom."""
    value: list[Any] = [1]
    for _ in range(levels - 1):
        value = [value]
    return value
