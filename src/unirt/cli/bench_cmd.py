"""`unirt bench MODEL`: trtexec / benchmark_app-style latency, throughput and memory across backends
(unirt.tools.bench). Exit 1 when a backend failed to load or run."""

from __future__ import annotations

import argparse
import os

from ..tools import bench
from ..tools._deps import require
from ..tools.bench import BenchReport
from . import conversion_flags
from .table import render
from .tool_output import Progress, add_backends, add_shapes, backend_names, int_list, ms, shapes_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark a model across backends: load, latency percentiles, throughput, memory")
    p.add_argument("model", help="model file")
    add_backends(
        p, "default all: every available backend that reads the model or converts it on load", several_precisions=True
    )
    p.add_argument(
        "--calibration",
        metavar="NPZ|DIR",
        help="with --precision ...int8: your inputs to calibrate the int8 model on (as unirt quantize "
        "--calibration takes them); default: random inputs (fine for speed, not for accuracy)",
    )
    add_shapes(p)
    p.add_argument("--batch", metavar="1,8", help="batch sizes to sweep (dim 0 of inputs whose dim 0 is dynamic)")
    p.add_argument(
        "--concurrency",
        default="1",
        metavar="1,2,4",
        help="concurrent workers to sweep, each with its own session (default 1)",
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before timing (default 5)")
    timing = p.add_mutually_exclusive_group()
    timing.add_argument("--iterations", type=int, help="timed runs per worker")
    timing.add_argument("--duration", type=float, help="seconds of timed runs per configuration (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON (schema: unirt/tools/bench.schema.json)")
    p.add_argument("--plot", metavar="PATH.png", help="write a PNG: latency per backend, throughput vs concurrency")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    conversion_flags.add(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.plot:
        require("matplotlib", "bench --plot")  # before minutes of measuring, not after
    report = bench(
        args.model,
        backend_names(args.backends),
        shapes=shapes_of(args),
        batch=int_list("--batch", args.batch),
        concurrency=int_list("--concurrency", args.concurrency),
        threads=args.threads,
        precision=args.precision,
        device=args.device,
        warmup=args.warmup,
        iterations=args.iterations,
        duration=args.duration,
        seed=args.seed,
        calibration=args.calibration,
        progress=Progress("bench", enabled=not args.no_progress),
        backend_options=conversion_flags.backend_options(args),
    )
    print_report(report)
    if args.json:
        print(f"json:  {report.write_json(args.json)}")
    if args.plot:
        from ..tools.plot import plot_bench

        print(f"plot:  {plot_bench(report, args.plot)}")
    return 1 if report.failed else 0


def print_report(r: BenchReport) -> None:
    s = r.settings
    timing = f"{s['iterations']} iterations" if s["iterations"] else f"{s['duration_s']:g} s"
    print(f"model:    {os.path.basename(r.model)} ({r.format})")
    print(f"hardware: {r.hardware}")
    print(
        f"settings: precision {s['precision']}, threads {s['threads'] or 'default'}, warmup {s['warmup']}, "
        f"{timing} per configuration"
    )
    rows = []
    several = "," in s["precision"]
    for x in r.results:
        if x.error:
            continue
        lat = x.latency_ms
        assert lat is not None
        convert = "-" if x.conversion_ms is None else "cached" if x.conversion_cached else f"{x.conversion_ms:.1f}"
        name = x.backend + (f" {x.precision_asked}" if several else "")
        rows.append(
            (
                name,
                x.device,
                x.batch or "-",
                x.concurrency,
                f"{x.load_ms:.1f}",
                convert,
                ms(x.first_run_ms),
                ms(lat.min),
                ms(lat.mean),
                ms(lat.p50),
                ms(lat.p90),
                ms(lat.p99),
                f"{x.throughput_ips:.1f}" if x.throughput_ips else "-",
                f"{x.throughput_sps:.1f}" if x.throughput_sps else "-",
                f"{x.peak_rss_mb:.0f}" if x.peak_rss_mb is not None else "-",
                f"{x.gpu_memory_mb:.0f}" if x.gpu_memory_mb is not None else "-",
            )
        )
    if rows:
        print()
        print(
            render(
                [
                    "backend",
                    "device",
                    "batch",
                    "workers",
                    "load ms",
                    "convert ms",
                    "first ms",
                    "min",
                    "mean",
                    "p50",
                    "p90",
                    "p99",
                    "infer/s",
                    "samples/s",
                    "peak RSS MiB",
                    "GPU MiB",
                ],
                rows,
            )
        )
        print(
            "latency in ms per run; throughput over all workers; load ms includes convert ms unless cached"
            + ("" if r.peak_rss_is_per_backend else "; peak RSS is the process's lifetime peak on this OS")
        )
    if several:
        print_precision_table(r)
    for x in r.failed:
        print(f"FAILED {x.backend}" + (f" {x.precision_asked}" if several else "") + f": {x.error}")


def print_precision_table(r: BenchReport) -> None:
    """The precision axis: per backend and precision, speed against that backend's fp32 and error against the fp32
    reference; a refused precision is a row with the reason."""
    rows, notes = [], {}
    for x in r.results:
        if x.error and not x.refused:
            continue
        if x.model_note:
            notes[x.model_note] = None
        if x.refused:
            rows.append((x.backend, x.precision_asked, "refused", "-", "-", "-", "-", "-", "-", "-"))
            continue
        assert x.latency_ms is not None
        rows.append(
            (
                x.backend,
                x.precision_asked,
                x.precision,
                x.batch or "-",
                x.concurrency,
                ms(x.latency_ms.p50),
                "-" if x.speed_vs_fp32 is None else f"{x.speed_vs_fp32:.2f}x",
                _g(x.rel_l2),
                _g(x.max_abs),
                "-" if x.top1_agreement is None else f"{x.top1_agreement:.3f}",
            )
        )
    if rows:
        print()
        print(
            render(
                ["backend", "asked", "computes", "batch", "workers", "p50 ms", "vs fp32", "rel L2", "max abs", "top-1"],
                rows,
            )
        )
        print(
            "vs fp32: the same backend's fp32 latency / this one (above 1 is faster; one worker: medians timed in "
            "rounds alternating with fp32, else p50s); errors against the fp32 "
            "reference's outputs on the same inputs; top-1: classifier outputs' arg-max agreement"
        )
    for note in notes:
        print(f"int8: {note}")
    for x in r.refused:
        print(f"REFUSED {x.backend} {x.precision_asked}: {x.error}")


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"
