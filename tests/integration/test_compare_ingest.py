"""benchmarks/compare_ingest.py: the figures it derives from bench_ingest.py's runs, and a real
(tiny) comparison run through it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from types import ModuleType

from _servers import REPO_ROOT

_SCRIPT = REPO_ROOT / "benchmarks" / "compare_ingest.py"


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_ingest", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_line(code: str, rate: int, cpu: float) -> str:
    # bench_ingest.py's line for one run (its CPU split three ways; only the sum is read).
    return (
        f"postgres/raw/{code}: {rate:,} events/s, CPU {cpu / 2:.2f} s collector +"
        f" {cpu / 4:.2f} s database + {cpu / 4:.2f} s client, machine idle 9%, load 1.5"
    )


def _bench_output(pairs: list[tuple[int, int]], old_cpu: float, new_cpu: float) -> str:
    lines = []
    for old, new in pairs:  # interleaved, as bench_ingest.py runs them
        lines += [_run_line("old", old, old_cpu), _run_line("new", new, new_cpu)]
    return "\n".join([*lines, "", "| backend | client | collector | events/s (median) |"])


def test_the_summary_is_the_median_of_comparisons_and_of_paired_runs() -> None:
    compare = _module()
    log = "\n".join(
        [
            # medians 100,000 -> 210,000 (2.1x); paired 2.0x, 2.1x, 2.2x; CPU 8.0 / 4.0 = 2x
            _bench_output([(100_000, 200_000), (100_000, 210_000), (100_000, 220_000)], 8.0, 4.0),
            # medians 120,000 -> 228,000 (1.9x); paired 1.8x, 1.9x, 2.0x; CPU 8.0 / 5.0 = 1.6x
            _bench_output([(120_000, 216_000), (120_000, 228_000), (120_000, 240_000)], 8.0, 5.0),
            # medians 80,000 -> 184,000 (2.3x); paired 2.2x, 2.3x, 3.0x; CPU 8.0 / 3.2 = 2.5x
            _bench_output([(80_000, 176_000), (80_000, 184_000), (80_000, 240_000)], 8.0, 3.2),
        ]
    )
    comparisons = compare.parse(log)
    assert len(comparisons) == 3
    report = compare.summarise(comparisons, 2.0)
    line = re.compile(r"^\| (\d) \| postgres/raw \| new ÷ old \| ([\d.]+)x \| ([\d.]+)x \|$", re.M)
    assert line.findall(report) == [
        ("1", "2.100", "2.000"),
        ("2", "1.900", "1.600"),
        ("3", "2.300", "2.500"),
    ]
    rows = [r.split(" | ") for r in report.splitlines() if r.startswith("| postgres/raw | new")]
    summary, machine = rows
    assert summary[1:4] == ["new ÷ old", "3", "2.100x"]  # comparisons, their median
    # The paired runs' median (their mean is 2.167x) and the CPU ratios' (mean 2.033x).
    assert summary[5:9] == ["1.90-2.30x", "2 of 3", "2.100x (9)", "2.000x |"]
    # The ratio falls as old runs faster (80,000 -> 2.3x, 100,000 -> 2.1x, 120,000 -> 1.9x):
    # a correlation of -1; at or below old's median speed 2.1x and 2.3x, above it 1.9x.
    assert machine[2:] == ["-1.00", "2.200x (2)", "1.900x (1) |"]


def test_a_tiny_real_comparison_reports_every_comparison_and_pair() -> None:
    # Two checkouts that are the same code, so the ratio is ~1x; what is checked is that every
    # comparison and every paired run of bench_ingest.py's real output is counted.
    done = subprocess.run(
        [
            sys.executable,
            str(_SCRIPT),
            "--times",
            "2",
            "--",
            "--backends",
            "sqlite",
            "--clients",
            "raw",
            "--events",
            "2000",
            "--batch-size",
            "500",
            "--runs",
            "2",
            "--code",
            f"a={REPO_ROOT},b={REPO_ROOT}",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| sqlite/raw | b ÷ a |")]
    assert len(rows) == 2, done.stdout  # the summary, and the ratio against the machine's state
    cells = rows[0].split(" | ")
    assert cells[2] == "2"  # comparisons
    assert cells[7].endswith("(4)")  # paired runs: 2 comparisons x 2 runs
    ratio = float(cells[3].rstrip("x"))
    assert 0.3 < ratio < 3.0, rows[0]  # the same code: anything else is a parsing error
