"""Results of the benchmark suite: figures, rows, Markdown/JSON tables and the PNG chart."""

from __future__ import annotations

import json
import math
import platform
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Options:
    """Sizes and switches shared by every figure (``run.py`` fills them from the command line).

    Attributes:
        smoke: Tiny sizes, one repetition, no peers (CI: checks that numbers come out).
        repeats: Repetitions per row (median, min and max are reported).
        peers: Run the peer SDKs (each in its own virtualenv under ``peers_dir``).
        peers_dir: Where the peer virtualenvs are created and reused.
        outage_seconds: Length of the API outage in figure 4.
        postgres: Include PostgreSQL rows (when a server can be started).
        work_dir: Scratch space (databases, logs).
    """

    smoke: bool
    repeats: int
    peers: bool
    peers_dir: Path
    outage_seconds: float
    postgres: bool
    work_dir: Path

    def size(self, full: int, smoke: int) -> int:
        """``smoke`` in a smoke run, else ``full``."""
        return smoke if self.smoke else full


@dataclass
class Row:
    """One line of a figure: repeated samples of one measurement, or why there are none.

    Attributes:
        name: What was measured (SDK and call).
        samples: One value per repetition (empty when the row could not run).
        why_missing: Set when ``samples`` is empty: why the row has no numbers.
        extra: More columns (``"delivered"``: ``"100000/100000"``...), shown as they are.
    """

    name: str
    samples: list[float] = field(default_factory=list)
    why_missing: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan


@dataclass
class Figure:
    """One figure of the issue: rows measured in the same run, compared with a reference row.

    Attributes:
        key: Short id (``hotpath``, ``throughput``...), used by ``--only``.
        title: Heading of its table.
        unit: Unit of the samples.
        lower_is_better: True for costs (µs, ms, MB), False for rates (events/s).
        reference: Name of the row the ratio column compares with (None: no ratio column).
        rows: The rows, in the order shown.
        notes: Sentences printed under the table (sizes, conditions, checks).
    """

    key: str
    title: str
    unit: str
    lower_is_better: bool = True
    reference: str | None = None
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> Row:
        """The row called ``name`` (made on first use, so repetitions can be interleaved)."""
        for row in self.rows:
            if row.name == name:
                return row
        row = Row(name)
        self.rows.append(row)
        return row

    def ratio(self, row: Row) -> str:
        """``row``'s median divided by the reference row's (``"31.2x"``)."""
        if self.reference is None or not row.samples:
            return ""
        ref = next((r for r in self.rows if r.name == self.reference), None)
        if ref is None or not ref.samples or ref.median == 0:
            return ""
        value = row.median / ref.median
        if value >= 100:
            return f"{value:,.0f}x"
        return f"{value:.1f}x" if value >= 1 else f"{value:.2f}x"


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def markdown(figure: Figure) -> str:
    """The figure as a Markdown table (median, min, max, ratio, extra columns) plus its notes."""
    extra_keys: list[str] = []
    for row in figure.rows:
        extra_keys += [k for k in row.extra if k not in extra_keys]
    head = ["what", f"{figure.unit} (median)", "min", "max", "n"]
    if figure.reference is not None:
        head.append(f"÷ {figure.reference}")
    head += extra_keys
    lines = [f"### {figure.title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for row in figure.rows:
        if row.samples:
            cells = [row.name, _fmt(row.median), _fmt(min(row.samples)), _fmt(max(row.samples))]
            cells.append(str(len(row.samples)))
        else:
            cells = [row.name, f"not measured: {row.why_missing}", "", "", "0"]
        if figure.reference is not None:
            cells.append(figure.ratio(row))
        cells += [row.extra.get(k, "") for k in extra_keys]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if figure.notes:
        lines.append("")
        lines += [f"- {note}" for note in figure.notes]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    import os

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def write_results(
    figures: list[Figure], out_dir: Path, header: str, meta: dict[str, Any]
) -> list[Path]:
    """Write ``latest.md``, ``latest.json`` and ``latest.png`` under ``out_dir``.

    The PNG is skipped (and not listed) when matplotlib is not installed (the ``bench`` extra).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "latest.md"
    md.write_text(header + "\n\n" + "\n\n".join(markdown(f) for f in figures) + "\n")
    js = out_dir / "latest.json"
    payload = {
        "meta": meta,
        "figures": [
            {
                **asdict(f),
                "rows": [
                    {
                        **asdict(r),
                        "median": None if not r.samples else r.median,
                        "min": min(r.samples) if r.samples else None,
                        "max": max(r.samples) if r.samples else None,
                        "ratio": f.ratio(r),
                    }
                    for r in f.rows
                ],
            }
            for f in figures
        ],
    }
    js.write_text(json.dumps(payload, indent=2) + "\n")
    png = out_dir / "latest.png"
    return [md, js, png] if render_png(figures, png) else [md, js]


def render_png(figures: list[Figure], path: Path) -> bool:
    """One horizontal bar chart per figure (median, min-max whiskers); False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [f for f in figures if any(r.samples for r in f.rows)]
    if not shown:
        return False
    cols = 1  # one figure per row: the long row names need the width
    nrows = len(shown)
    fig, axes = plt.subplots(nrows, cols, figsize=(12, 3.4 * nrows), squeeze=False)
    for ax, figure in zip(axes.flat, shown, strict=False):
        rows = [r for r in figure.rows if r.samples]
        names = [_short(r.name) for r in rows]
        medians = [r.median for r in rows]
        low = [r.median - min(r.samples) for r in rows]
        high = [max(r.samples) - r.median for r in rows]
        colors = ["tab:blue" if "agentops_async" in r.name else "tab:gray" for r in rows]
        ax.barh(names, medians, xerr=[low, high], color=colors, capsize=3)
        ax.invert_yaxis()
        if min(medians) > 0 and max(medians) / min(medians) > 50:
            ax.set_xscale("log")
        ax.set_title(figure.title, fontsize=10)
        ax.set_xlabel(figure.unit + (" (lower is better)" if figure.lower_is_better else ""))
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return True


def _short(name: str, width: int = 64) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
