"""Token prices and session cost."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from agentops_async.collector import ModelPrice, PriceTable
from agentops_async.collector._prices import Usage, format_cost


def test_exact_and_longest_prefix_match() -> None:
    table = PriceTable()
    assert table.lookup("gpt-4o-mini") == table.lookup("gpt-4o-mini-2024-07-18")
    assert table.lookup("gpt-4o-2024-08-06") == table.lookup("gpt-4o")
    assert table.lookup("gpt-4o-mini") != table.lookup("gpt-4o")
    assert table.lookup("GPT-4o-mini") == table.lookup("gpt-4o-mini")
    assert table.lookup("llama-local") is None
    assert table.lookup(None) is None


def test_cost_of_tokens() -> None:
    table = PriceTable()
    assert table.cost_of("gpt-4o-mini", 1000, 500) == Decimal("0.00045")
    assert table.cost_of("nobody-knows", 10**9, 10**9) == 0


def test_session_costs_sum_models_and_keep_explicit_costs() -> None:
    table = PriceTable({"house": ModelPrice(Decimal(1), Decimal(2))})
    costs = table.session_costs(
        [
            Usage("a", "house", 1_000_000, 1_000_000, None),
            Usage("a", "gpt-4", 0, 0, 0.5),
            Usage("b", None, 100, 100, None),
        ]
    )
    assert costs == {"a": Decimal("3.5"), "b": Decimal(0)}


def test_prices_from_file_override_builtins(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"gpt-4o": {"prompt": 1, "completion": "2.5"}}))
    table = PriceTable.from_file(path)
    assert table.lookup("gpt-4o") == ModelPrice(Decimal(1), Decimal("2.5"))
    assert table.lookup("gpt-4o-mini") == PriceTable().lookup("gpt-4o-mini")


@pytest.mark.parametrize(
    "content",
    ['["x"]', '{"m": 1}', '{"m": {"prompt": 1}}', '{"m": {"prompt": "x", "completion": 1}}'],
)
def test_bad_price_files_say_what_is_wrong(tmp_path: Path, content: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="prices"):
        PriceTable.from_file(path)


@pytest.mark.parametrize(
    ("cost", "text"),
    [(Decimal(0), "0"), (Decimal("0.00045"), "0.00045"), (Decimal("1E-7"), "0.0000001"),
     (Decimal("12.5000"), "12.5"), (Decimal("1e-12"), "0")],
)  # fmt: skip
def test_format_cost_is_a_plain_decimal(cost: Decimal, text: str) -> None:
    assert format_cost(cost) == text
