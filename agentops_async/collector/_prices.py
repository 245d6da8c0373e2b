"""Token prices and the cost of a session's LLM calls.

Prices are US dollars per million tokens, prompt and completion apart. A model is matched exactly,
else by the longest known prefix (``gpt-4o-mini-2024-07-18`` costs what ``gpt-4o-mini`` costs);
unknown models cost nothing. An LLM event that carries its own ``cost`` keeps it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from pathlib import Path

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable", "Usage", "format_cost", "usage_row"]

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelPrice:
    """Dollars per million prompt / completion tokens."""

    prompt: Decimal
    completion: Decimal


@dataclass(frozen=True)
class Usage:
    """Summed LLM usage of one model in one session (a row of the storage's usage query)."""

    session_id: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    explicit_cost: float | None
    """Sum of the ``cost`` fields of events that carried one (their tokens are not priced)."""


def usage_row(
    session_id: str, model: str | None, prompt: object, completion: object, cost: object
) -> Usage:
    """A :class:`Usage` from a row of a storage's usage query (sums as the database gives them).

    Tolerates whatever an older collector may have stored: a sum that is not a finite number
    counts as zero tokens, or as no explicit cost (checked in :meth:`PriceTable.session_costs`).
    """
    explicit = None if cost is None else float(cost)  # type: ignore[arg-type]
    return Usage(session_id, model, _count(prompt), _count(completion), explicit)


def _count(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError, OverflowError):  # None, NaN, infinity
        return 0


def _price(prompt: str, completion: str) -> ModelPrice:
    return ModelPrice(Decimal(prompt), Decimal(completion))


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gpt-4o": _price("2.50", "10.00"),
    "gpt-4o-mini": _price("0.15", "0.60"),
    "gpt-4-turbo": _price("10.00", "30.00"),
    "gpt-4": _price("30.00", "60.00"),
    "gpt-3.5-turbo": _price("0.50", "1.50"),
    "o1": _price("15.00", "60.00"),
    "o1-mini": _price("3.00", "12.00"),
    "o3-mini": _price("1.10", "4.40"),
    "claude-3-5-sonnet": _price("3.00", "15.00"),
    "claude-3-5-haiku": _price("0.80", "4.00"),
    "claude-3-opus": _price("15.00", "75.00"),
    "claude-3-haiku": _price("0.25", "1.25"),
    "gemini-1.5-pro": _price("1.25", "5.00"),
    "gemini-1.5-flash": _price("0.075", "0.30"),
}


_NANO = Decimal("0.000000001")


def format_cost(cost: Decimal) -> str:
    """A cost as a plain decimal string (no exponent), e.g. ``"0.000123"``.

    Any value formats: the precision grows with the magnitude (the default 28 digits cannot
    quantize a cost of 1e20 to nine decimals), and a non-finite one reads as ``"0"``.
    """
    if not cost.is_finite():
        return "0"
    with localcontext() as context:
        context.prec = max(28, cost.adjusted() + 12)
        text = format(cost.quantize(_NANO).normalize(), "f")
    return text if text != "-0" else "0"


class PriceTable:
    """Model prices, the built-in table overridden by user entries.

    Args:
        overrides: ``{model: ModelPrice}`` entries that replace or extend the built-in ones.

    Example:
        >>> # prices.json: {"my-model": {"prompt": 1, "completion": 2}}
        >>> table = PriceTable.from_file("prices.json")
        >>> table.cost_of("gpt-4o-mini", 1000, 500)
        Decimal('0.00045')
    """

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **(overrides or {})}
        # Longest prefix first, so "gpt-4o-mini-x" matches gpt-4o-mini before gpt-4o and gpt-4.
        self._by_length = sorted(self._prices, key=len, reverse=True)

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """The built-in table overridden by a JSON file.

        The file maps model names to dollars per million tokens:
        ``{"my-model": {"prompt": 1.0, "completion": 2.0}}``.

        Raises:
            ValueError: The file is not such a mapping (the message says which entry is wrong).
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(parse_prices(data))

    def lookup(self, model: str | None) -> ModelPrice | None:
        """The price of ``model`` (exact, else longest prefix), or None if unknown."""
        if not model:
            return None
        found = self._prices.get(model)
        if found is not None:
            return found
        lowered = model.lower()
        for name in self._by_length:
            if lowered.startswith(name):
                return self._prices[name]
        return None

    def cost_of(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """Dollars for that many tokens of ``model`` (zero for unknown models)."""
        price = self.lookup(model)
        if price is None:
            return Decimal(0)
        return (prompt_tokens * price.prompt + completion_tokens * price.completion) / _MILLION

    def usage_cost(
        self,
        model: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        explicit_cost: float | None,
    ) -> Decimal:
        """The cost of a usage row: the ``cost`` its events carried (``explicit_cost``, their
        sum), else its tokens priced."""
        if explicit_cost is not None:
            # Stored before ingest refused them, an infinite or NaN sum must not break a read:
            # it counts as no cost.
            if math.isfinite(explicit_cost):
                return Decimal(repr(explicit_cost))
            return Decimal(0)
        return self.cost_of(model, prompt_tokens, completion_tokens)

    def session_costs(self, usage: Iterable[Usage]) -> dict[str, Decimal]:
        """Total cost per session id from the storage's usage rows."""
        totals: dict[str, Decimal] = {}
        for row in usage:
            cost = self.usage_cost(
                row.model, row.prompt_tokens, row.completion_tokens, row.explicit_cost
            )
            totals[row.session_id] = totals.get(row.session_id, Decimal(0)) + cost
        return totals


def parse_prices(data: object) -> dict[str, ModelPrice]:
    """``{model: ModelPrice}`` from decoded JSON; raises ValueError naming the bad entry."""
    if not isinstance(data, dict):
        raise ValueError('prices: expected an object {"model": {"prompt": p, "completion": c}}')
    prices: dict[str, ModelPrice] = {}
    for model, entry in data.items():
        if not isinstance(entry, dict) or not {"prompt", "completion"} <= entry.keys():
            raise ValueError(f"prices[{model!r}]: expected {{'prompt': p, 'completion': c}}")
        try:
            prices[str(model)] = ModelPrice(
                Decimal(str(entry["prompt"])), Decimal(str(entry["completion"]))
            )
        except InvalidOperation:
            raise ValueError(f"prices[{model!r}]: prices must be numbers") from None
    return prices
