"""Repeat ``bench_ingest.py``'s same-run comparison and say how sure its ratio is.

On a shared machine one comparison of two checkouts moves by ±10% from one minute to the next
(benchmarks/README.md): whether a change reaches a goal such as "2x the old code" cannot be read
from one table. This runs ``bench_ingest.py`` ``--times`` times with the same arguments (its runs
interleave the checkouts, so each run of a checkout has a run of the first checkout beside it)
and prints, for every row and checkout after the first:

- each comparison's ratio (median events/s over the first checkout's median, as the table's);
- the median of the comparisons, with a 95% bootstrap interval of that median, and how many of
  them reach ``--goal``;
- the median of the paired runs' ratios (run i of the checkout over run i of the first);
- the CPU per event (collector + database + client), first ÷ checkout;
- how the ratio moves with the machine's state: its correlation with the first checkout's
  events/s, and its median over the comparisons where the first checkout ran at or below its
  median speed and above it. On these machines the old code slows down more than the new when
  the machine is busy, so a ratio read on a busy machine can be higher than a quiet one gives.

    python benchmarks/compare_ingest.py --times 10 --log /tmp/cmp.txt -- \\
        --backends postgres --clients raw --runs 5 --code old=/tmp/old,new=.
    python benchmarks/compare_ingest.py --from-log /tmp/cmp.txt /tmp/more.txt   # again, no runs

Everything after ``--`` goes to ``bench_ingest.py`` as it is. ``--log`` keeps its output (the
per-run lines this reads); ``--from-log`` reads such logs instead of running, so that
comparisons made at different times can be summarised together.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

_BENCH = Path(__file__).resolve().parent / "bench_ingest.py"
# bench_ingest.py's line for one run of one checkout.
_RUN = re.compile(
    r"^(?P<backend>\w+)/(?P<client>[\w-]+)/(?P<code>\S+): (?P<rate>[\d,]+) events/s, CPU"
    r" (?P<collector>[\d.]+) s collector \+ (?P<database>[\d.]+) s database \+"
    r" (?P<client_cpu>[\d.]+) s client"
)

Run = tuple[float, float]  # events/s, CPU seconds (collector + database + client)
# One comparison: for each (backend, client), each checkout's runs in the order they ran.
Comparison = dict[tuple[str, str], dict[str, list[Run]]]


def parse(text: str) -> list[Comparison]:
    """The comparisons in a log of ``bench_ingest.py`` outputs: the per-run lines of each
    output, up to the table that ends it (the runs of a checkout in the order they ran, which
    pairs run i of each checkout with run i of the first; a run a checkout skipped shifts them)."""
    comparisons: list[Comparison] = []
    current: Comparison = {}
    for line in text.splitlines():
        match = _RUN.match(line)
        if match is None:
            if line.startswith("| backend |") and current:  # the table ends one invocation
                comparisons.append(current)
                current = {}
            continue
        row = (match["backend"], match["client"])
        cpu = sum(float(match[k]) for k in ("collector", "database", "client_cpu"))
        current.setdefault(row, {}).setdefault(match["code"], []).append(
            (float(match["rate"].replace(",", "")), cpu)
        )
    if current:
        comparisons.append(current)
    return comparisons


def bootstrap_median(values: list[float], rounds: int = 10_000) -> tuple[float, float]:
    """A 95% interval of the median of ``values`` (percentile bootstrap, fixed seed)."""
    if len(values) < 2:
        return values[0], values[0]
    pick = random.Random(0).choices
    medians = sorted(statistics.median(pick(values, k=len(values))) for _ in range(rounds))
    return medians[int(0.025 * rounds)], medians[int(0.975 * rounds) - 1]


def summarise(comparisons: list[Comparison], goal: float) -> str:
    """The Markdown report of ``comparisons`` (see the module's docstring)."""
    ratios: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    paired: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    cpu: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    references: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    lines = ["| # | row | checkout | ratio | CPU ratio |", "|---:|---|---|---:|---:|"]
    for number, comparison in enumerate(comparisons, start=1):
        for (backend, client), codes in comparison.items():
            names = list(codes)
            first = codes[names[0]]
            reference = statistics.median(r for r, _ in first)
            reference_cpu = statistics.median(c for _, c in first)
            for name in names[1:]:
                runs = codes[name]
                key = (f"{backend}/{client}", names[0], name)
                ratio = statistics.median(r for r, _ in runs) / reference
                cpu_ratio = reference_cpu / statistics.median(c for _, c in runs)
                ratios[key].append(ratio)
                references[key].append(reference)
                cpu[key].append(cpu_ratio)
                paired[key].extend(a[0] / b[0] for a, b in zip(runs, first, strict=False))
                lines.append(
                    f"| {number} | {key[0]} | {name} ÷ {names[0]} | {ratio:.3f}x |"
                    f" {cpu_ratio:.3f}x |"
                )
    lines += [
        "",
        f"| row | checkout | comparisons | median | 95% interval | range | at {goal:g}x or more"
        " | paired runs: median (n) | CPU ratio: median |",
        "|---|---|---:|---:|---|---|---:|---|---:|",
    ]
    for key, values in ratios.items():
        low, high = bootstrap_median(values)
        reached = sum(v >= goal for v in values)
        lines.append(
            f"| {key[0]} | {key[2]} ÷ {key[1]} | {len(values)} | {statistics.median(values):.3f}x"
            f" | {low:.3f}-{high:.3f}x | {min(values):.2f}-{max(values):.2f}x"
            f" | {reached} of {len(values)} | {statistics.median(paired[key]):.3f}x"
            f" ({len(paired[key])}) | {statistics.median(cpu[key]):.3f}x |"
        )
    lines += [
        "",
        "How the ratio moves with the machine's state, read from the first checkout's speed in"
        " each comparison (a ratio that falls as the first checkout runs faster holds on a busy"
        " machine only):",
        "",
        "| row | checkout | correlation of the first's events/s and the ratio"
        " | median ratio, the first at or below its median speed | above it |",
        "|---|---|---:|---:|---:|",
    ]
    for key, values in ratios.items():
        speeds = references[key]
        middle = statistics.median(speeds)
        slow = [v for v, speed in zip(values, speeds, strict=True) if speed <= middle]
        fast = [v for v, speed in zip(values, speeds, strict=True) if speed > middle]
        lines.append(
            f"| {key[0]} | {key[2]} ÷ {key[1]} | {_correlation(speeds, values)}"
            f" | {_median_of(slow)} | {_median_of(fast)} |"
        )
    return "\n".join(lines)


def _correlation(xs: list[float], ys: list[float]) -> str:
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return "n/a"
    return f"{statistics.correlation(xs, ys):+.2f}"


def _median_of(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}x ({len(values)})" if values else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", type=int, default=10, help="comparisons to run")
    parser.add_argument("--goal", type=float, default=2.0, help="the ratio to count against")
    parser.add_argument("--log", type=Path, help="append bench_ingest.py's output here")
    parser.add_argument("--from-log", type=Path, nargs="+", help="summarise these logs instead")
    args, bench_args = parser.parse_known_args()
    if bench_args[:1] == ["--"]:
        bench_args = bench_args[1:]
    if args.from_log:
        text = "\n".join(path.read_text() for path in args.from_log)
    else:
        outputs = []
        for number in range(1, args.times + 1):
            started = time.strftime("%H:%M:%S", time.gmtime())
            done = subprocess.run(
                [sys.executable, str(_BENCH), *bench_args],
                capture_output=True,
                text=True,
                check=False,
            )
            output = done.stderr + done.stdout
            if args.log is not None:
                with args.log.open("a") as log:
                    log.write(f"# comparison {number}, started {started} UTC\n{output}\n")
            if done.returncode != 0:
                print(output, file=sys.stderr)
                return done.returncode
            outputs.append(output)
            print(f"comparison {number} of {args.times} done (started {started} UTC)", flush=True)
        text = "\n".join(outputs)
    print(summarise(parse(text), args.goal))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
