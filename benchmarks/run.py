"""The benchmark suite: every figure of issue 5 in one run, tables with ratios, results files.

    python benchmarks/run.py                      # full run (~10 min), peers included
    python benchmarks/run.py --smoke              # tiny sizes, seconds, no peers (CI)
    python benchmarks/run.py --only hotpath lag   # some figures
    python benchmarks/run.py --outage-seconds 60  # the issue's 60 s outage (default 10 s)

Prints one Markdown table per figure (median of the repetitions, min, max, ratio against the
reference row of the same run) and writes ``benchmarks/results/latest.md``, ``latest.json`` and
``latest.png`` (``--out`` to put them elsewhere). Never asserts on speed: a run fails only when a
figure produced no numbers at all or a delivered == recorded check failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

from _report import Figure, Options, environment, markdown, write_results  # noqa: E402

FIGURES = ("hotpath", "throughput", "lag", "memory", "shutdown", "scaling")


def _run_figure(key: str, opts: Options, shared: dict[str, Any]) -> Figure:
    """Run figure ``key`` (module ``fig_<key>``); figure 1's peer results feed figures 2 and 5."""
    module = importlib.import_module(f"fig_{key}")
    if key == "hotpath":
        figure, shared["peers"] = module.run(opts)
        return cast(Figure, figure)
    if key in ("throughput", "shutdown"):
        return cast(Figure, module.run(opts, shared.get("peers")))
    return cast(Figure, module.run(opts))


def _check(figure: Figure) -> list[str]:
    """Problems that fail the run: a figure without numbers, a failed delivery check."""
    problems = []
    if not any(row.samples for row in figure.rows):
        problems.append(f"figure {figure.key} produced no numbers")
    for row in figure.rows:
        if "agentops_async" not in row.name:
            continue  # the peers' delivery is reported, not enforced
        delivered = row.extra.get("delivered", "")
        if delivered.startswith("FAILED") or (
            "/" in delivered and delivered.split("/")[0] != delivered.split("/")[1].split()[0]
        ):
            problems.append(f"{figure.key} / {row.name}: delivered {delivered}")
        check = row.extra.get("check")
        if check and not check.startswith("ok"):
            problems.append(f"{figure.key} / {row.name}: {check}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repetition, no peers")
    parser.add_argument("--only", nargs="+", choices=FIGURES, metavar="FIGURE",
                        help=f"run only these figures ({', '.join(FIGURES)})")  # fmt: skip
    parser.add_argument("--repeats", type=int, help="repetitions per row (default 5; smoke 1)")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer SDKs")
    parser.add_argument("--peers", action="store_true", help="run the peers even with --smoke")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument("--outage-seconds", type=float, help="figure 4 outage (default 10; 60)")
    parser.add_argument("--peers-dir", type=Path, default=HERE / ".peers")
    parser.add_argument(
        "--out",
        type=Path,
        help="results directory (default benchmarks/results; smoke: "
        "benchmarks/.smoke-results, so CI never overwrites the committed ones)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    work = Path(tempfile.mkdtemp(prefix="agentops-bench-"))
    opts = Options(
        smoke=args.smoke,
        repeats=args.repeats or (1 if args.smoke else 5),
        peers=(args.peers or not args.smoke) and not args.no_peers,
        peers_dir=args.peers_dir,
        outage_seconds=args.outage_seconds or (1.0 if args.smoke else 10.0),
        postgres=not args.no_postgres,
        work_dir=work,
    )
    started = time.perf_counter()
    figures: list[Figure] = []
    problems: list[str] = []
    shared: dict[str, Any] = {}
    try:
        for key in args.only or FIGURES:
            t0 = time.perf_counter()
            print(f"-- {key} ...", file=sys.stderr, flush=True)
            try:
                figure = _run_figure(key, opts, shared)
            except Exception as exc:  # one broken figure must not lose the others' numbers
                logging.getLogger("bench").exception("figure %s failed", key)
                problems.append(f"figure {key} failed: {type(exc).__name__}: {exc}")
                continue
            figure.notes.append(f"Figure wall time: {time.perf_counter() - t0:.0f} s.")
            figures.append(figure)
            problems += _check(figure)
            print(markdown(figure) + "\n", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    env = environment()
    meta = {
        **env,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "smoke": opts.smoke,
        "repeats": opts.repeats,
        "outage_seconds": opts.outage_seconds,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    header = (
        f"# agentops_async benchmarks{' (smoke)' if opts.smoke else ''}\n\n"
        f"{meta['date']}, Python {env['python']}, {env['cpus']} CPUs ({env['cpu']}), "
        f"{env['platform']}; {opts.repeats} repetition(s) per row, interleaved; "
        f"median with min and max; whole run {meta['wall_seconds']:.0f} s. "
        "Shared machine: expect noise."
    )
    out = args.out or (HERE / ".smoke-results" if opts.smoke else HERE / "results")
    paths = write_results(figures, out, header, meta)
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
