"""PNG charts of a bench report (matplotlib, without pyplot's global state): latency per backend, and
throughput against concurrency."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from ..formats import PathLike
from ._deps import require
from .bench import BenchReport, BenchResult

__all__ = ["plot_bench"]


def plot_bench(report: BenchReport, path: PathLike) -> Path:
    """Write `path` (PNG): the latency distribution of each backend and batch at the lowest concurrency, and the
    throughput (samples/s) of each at every concurrency measured."""
    require("matplotlib", "bench --plot")
    from matplotlib.figure import Figure

    ok = [r for r in report.results if not r.error and r.samples_ms]
    several = len({r.precision_asked for r in ok}) > 1  # the precision axis: label each backend x precision

    def name(r: BenchResult) -> str:
        return r.backend + (f" {r.precision_asked}" if several else "")

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    fig.suptitle(f"{os.path.basename(report.model)}  ({report.hardware})", fontsize=10)
    if not ok:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no backend ran", ha="center", va="center", transform=ax.transAxes)
    else:
        lowest = min(r.concurrency for r in ok)
        rows = [r for r in ok if r.concurrency == lowest]
        left.boxplot([r.samples_ms for r in rows], showfliers=True)
        left.set_xticks(range(1, len(rows) + 1), [name(r) + (f"\nbatch {r.batch}" if r.batch else "") for r in rows])
        left.set_ylabel("latency per run (ms)")
        left.set_title(f"latency distribution, {lowest} worker{'s' if lowest > 1 else ''}")
        left.grid(axis="y", alpha=0.3)
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for r in ok:
            if r.throughput_sps is not None:
                series[name(r) + (f" (batch {r.batch})" if r.batch else "")].append((r.concurrency, r.throughput_sps))
        for label, points in series.items():
            points.sort()
            right.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        right.set_xticks(sorted({r.concurrency for r in ok}))
        right.set_xlabel("concurrent workers")
        right.set_ylabel("throughput (samples/s)")
        right.set_title("throughput vs concurrency")
        right.grid(alpha=0.3)
        right.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path
