"""`unirt.tools.bench`: trtexec / benchmark_app-style measurements of one model on several backends.

For each backend: load time (including the conversion where the backend converts the model's format on load and
the converted model is not cached yet; the conversion's own time and whether it came from the cache are
recorded), then for each batch size the first-run latency and, for each concurrency, steady-state latency
(min/mean/p50/p90/p99/max/std) and throughput, plus the process's peak RSS and GPU memory where it can be read.
Concurrency N runs N sessions of the model on N threads (like trtexec's streams), so backends whose sessions are
not thread-safe are measured safely. The report's JSON form follows `bench.schema.json` beside this module
(`BENCH_SCHEMA`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError, UnirtError, UnsupportedOptionError
from ..formats import ModelFile, PathLike, open_model
from ..hardware import hardware
from ..session import Session, _check_options
from . import memory
from . import onnx_model as om
from .compare import pick_backends
from .inputs import default_shapes, random_feeds
from .precision import BASELINE, Int8Model, error_vs_reference, int8_model, parse_precisions, with_baseline
from .shapes import parse_shapes

__all__ = ["BENCH_SCHEMA", "LatencyStats", "BenchResult", "BenchReport", "bench"]
log = logging.getLogger(__name__)

BENCH_SCHEMA = Path(__file__).with_name("bench.schema.json")
SCHEMA_ID = "unirt.bench/1"
Progress = Callable[[str, int, int], None]  # (what is running, steps done, total steps)


@dataclass
class LatencyStats:
    """Latency in milliseconds over the timed runs."""

    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    std: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> LatencyStats:
        a = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(float(a.min()), float(a.mean()), float(p50), float(p90), float(p99), float(a.max()), float(a.std()))


@dataclass
class BenchResult:
    """One backend at one batch size and concurrency; `error` set (and figures None) when it could not run."""

    backend: str
    batch: int | None
    concurrency: int
    device: str | None = None
    precision: str | None = None
    shapes: dict[str, list[int]] = field(default_factory=dict)
    load_ms: float | None = None
    conversion_ms: float | None = None  # the converter's time; None when the backend read the model as it is
    conversion_cached: bool | None = None  # the converted model came from the cache: load_ms does not include it
    first_run_ms: float | None = None
    iterations: int = 0
    duration_s: float = 0.0
    latency_ms: LatencyStats | None = None
    throughput_ips: float | None = None  # inferences per second, all workers together
    throughput_sps: float | None = None  # samples per second (inferences x batch)
    peak_rss_mb: float | None = None
    rss_growth_mb: float | None = None  # peak RSS minus RSS before this backend loaded
    gpu_memory_mb: float | None = None
    error: str | None = None
    # The precision axis: what was asked (`precision` is what the backend computes), speed against the same
    # backend's fp32 row (>1: faster), error against the fp32 reference's outputs on the same inputs.
    precision_asked: str | None = None
    refused: bool = False  # the backend refused this precision (error says why): not a failure
    speed_vs_fp32: float | None = None  # this backend's fp32 latency / this row's (>1: faster)
    speed_interleaved: bool = False  # speed_vs_fp32 timed in rounds alternating with fp32 (one worker)
    rel_l2: float | None = None  # worst output's relative L2 error vs the fp32 reference
    max_abs: float | None = None
    top1_agreement: float | None = None  # classifier outputs ([N, C], C >= 2) only
    model_note: str | None = None  # int8 rows: which int8 model ran and how it was calibrated
    samples_ms: list[float] = field(default_factory=list, repr=False)  # kept for plots; not in the JSON
    outputs: dict[str, np.ndarray] | None = field(default=None, repr=False)  # first run's, for the error; not in JSON

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k not in ("samples_ms", "outputs")}
        d["latency_ms"] = vars(self.latency_ms) if self.latency_ms else None
        return d


@dataclass
class BenchReport:
    model: str
    format: str
    settings: dict[str, Any]
    results: list[BenchResult]
    hardware: str = ""
    created: str = ""
    peak_rss_is_per_backend: bool = True

    @property
    def failed(self) -> list[BenchResult]:
        """Rows that could not run, a precision the backend refused excepted (that is an answer, not a failure)."""
        return [r for r in self.results if r.error and not r.refused]

    @property
    def refused(self) -> list[BenchResult]:
        return [r for r in self.results if r.refused]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_ID,
            "unirt_version": __version__,
            "created": self.created,
            "model": self.model,
            "format": self.format,
            "hardware": self.hardware,
            "settings": self.settings,
            "peak_rss_is_per_backend": self.peak_rss_is_per_backend,
            "results": [r.to_dict() for r in self.results],
        }

    def write_json(self, path: PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _mb(n: int | None) -> float | None:
    return round(n / 2**20, 3) if n is not None else None


def _timed_runs(
    session: Session,
    feeds: Mapping[str, np.ndarray],
    iterations: int | None,
    duration: float | None,
    start: threading.Barrier | None = None,
) -> list[float]:
    run, clock = session.run, time.perf_counter
    samples: list[float] = []
    if start is not None:
        start.wait()
    if iterations is not None:
        for _ in range(iterations):
            t0 = clock()
            run(feeds)
            samples.append(clock() - t0)
    else:
        assert duration is not None
        end = clock() + duration
        while True:
            t0 = clock()
            run(feeds)
            t1 = clock()
            samples.append(t1 - t0)
            if t1 >= end:
                break
    return [s * 1e3 for s in samples]


def _concurrent_runs(
    sessions: Sequence[Session], feeds: Mapping[str, np.ndarray], iterations: int | None, duration: float | None
) -> tuple[list[float], float, int]:
    """Every session on its own thread at once; returns all latencies, the wall time and the run count."""
    if len(sessions) == 1:
        t0 = time.perf_counter()
        samples = _timed_runs(sessions[0], feeds, iterations, duration)
        return samples, time.perf_counter() - t0, len(samples)
    barrier = threading.Barrier(len(sessions) + 1)
    results: list[list[float]] = [[] for _ in sessions]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results[i] = _timed_runs(sessions[i], feeds, iterations, duration, barrier)
        except BaseException as exc:  # reported on the calling thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(sessions))]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    samples = [s for r in results for s in r]
    return samples, wall, len(samples)


class _BackendRun:
    """One backend's sessions (one per concurrent worker, loaded on demand) and its results."""

    def __init__(self, model: ModelFile, backend: str, options: dict[str, Any]) -> None:
        self.model, self.backend, self.options = model, backend, options
        self.sessions: list[Session] = []

    def session(self, i: int) -> Session:
        while len(self.sessions) <= i:
            self.sessions.append(Session(self.model, backend=self.backend, **self.options))
        return self.sessions[i]

    def close(self) -> None:
        for s in self.sessions:
            s.close()
        self.sessions.clear()


def _check_settings(
    batches: Sequence[int | None],
    concurrency: Sequence[int],
    warmup: int,
    iterations: int | None,
    duration: float | None,
    threads: Any,
    precision: Sequence[str],
) -> None:
    """The caller's mistakes, refused before any backend loads (else each backend would fail with them)."""
    for p in precision:
        _check_options(threads, p, None)
    if iterations is not None and duration is not None:
        raise UnsupportedOptionError("give either iterations or duration, not both")
    if iterations is not None and iterations < 1:
        raise UnsupportedOptionError(f"iterations must be >= 1, got {iterations}")
    if duration is not None and not duration > 0:
        raise UnsupportedOptionError(f"duration must be > 0 seconds, got {duration}")
    if warmup < 0:
        raise UnsupportedOptionError(f"warmup must be >= 0, got {warmup}")
    if not concurrency or any(c < 1 for c in concurrency):
        raise UnsupportedOptionError(f"concurrency levels must be >= 1, got {list(concurrency)}")
    if not batches or any(b is not None and b < 1 for b in batches):
        raise UnsupportedOptionError(f"batch sizes must be >= 1, got {list(batches)}")


def bench(
    model: PathLike | bytes | ModelFile,
    backends: Sequence[str] | str | None = None,
    *,
    shapes: Mapping[str, Sequence[int]] | str | None = None,
    batch: Sequence[int] | int | None = None,
    concurrency: Sequence[int] | int = 1,
    threads: int | None = None,
    precision: str | Sequence[str] = "fp32",
    device: str = "auto",
    warmup: int = 5,
    iterations: int | None = None,
    duration: float | None = None,
    seed: int = 0,
    calibration: PathLike | None = None,
    progress: Progress | None = None,
    backend_options: Mapping[str, Any] | None = None,
) -> BenchReport:
    """Benchmark `model` on each of `backends` (names, or None/"all" for every available one that reads
    it or converts it on load).

    `shapes`: input shapes ({name: dims} or "x:1x3x224x224"); dynamic dims left open default to 1. `batch`:
    batch sizes to sweep (dim 0 of inputs whose dim 0 is dynamic). `concurrency`: worker counts to sweep.
    Timed runs: `iterations` per worker, or for `duration` seconds (default 3 s when neither is given), after
    `warmup` untimed runs. A backend that fails to load or run is reported with its error; the others go on.
    `backend_options`: for every backend's Session (e.g. {"conversion": {"tolerance": 1e-2}}).

    `precision`: one precision or several ("fp32,bf16,fp16,int8"). With several (or a reduced one), fp32 is
    measured too, and each row gets its speed against the same backend's fp32 row and its error against the fp32
    reference (onnxruntime's fp32 outputs when it ran, else the first backend's) on the same inputs. A precision
    a backend refuses is a row with `refused` and the reason. int8 rows run the model quantized by
    `unirt quantize` (static Q/DQ, calibrated on `calibration` or on random inputs; see `tools.precision`).
    """
    mf = open_model(model)
    names = pick_backends(mf, backends)
    precisions = with_baseline(parse_precisions(precision))
    batches: list[int | None] = [batch] if isinstance(batch, int) else (list(batch) if batch else [None])
    levels = [concurrency] if isinstance(concurrency, int) else list(concurrency)
    if iterations is None and duration is None:
        duration = 3.0
    _check_settings(batches, levels, warmup, iterations, duration, threads, precisions)
    given = parse_shapes(shapes) if isinstance(shapes, str) else dict(shapes or {})

    settings = {
        "backends": names,
        "shapes": {k: list(v) for k, v in given.items()},
        "batch": batches,
        "concurrency": levels,
        "threads": threads,
        "precision": ",".join(precisions),
        "device": device,
        "warmup": warmup,
        "iterations": iterations,
        "duration_s": duration,
        "seed": seed,
    }
    report = BenchReport(
        model=mf.name,
        format=mf.format.value,
        settings=settings,
        results=[],
        hardware=hardware().describe(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    plan = _Plan(
        batches,
        levels,
        given,
        warmup,
        iterations,
        duration,
        seed,
        progress,
        total=len(names) * len(precisions) * len(batches) * len(levels),
    )
    with tempfile.TemporaryDirectory(prefix="unirt-bench-") as tmp:
        int8: Int8Model | UnirtError | None = None
        for name in names:
            ran: dict[str, ModelFile] = {}  # precisions this backend ran, and the model each ran
            for prec in precisions:
                target, note = mf, None
                if prec == "int8":
                    if int8 is None:
                        int8 = _int8_for_bench(mf, tmp, calibration, given, batches[0], seed)
                    if isinstance(int8, UnirtError):
                        report.results.append(_error_row(name, prec, int8, refused=True))
                        plan.done += len(batches) * len(levels)
                        continue
                    target, note = int8.model, int8.note
                # the shapes given are the ones a backend that converts the model converts at (else its first run's)
                options = {
                    "device": device,
                    "threads": threads,
                    "precision": prec,
                    "input_shapes": given or None,
                    **({"backend_options": dict(backend_options)} if backend_options else {}),
                }
                rows = _bench_backend(target, name, options, plan, keep_outputs=len(precisions) > 1)
                for r in rows:
                    r.precision_asked, r.model_note = prec, note
                    r.refused = (
                        bool(r.error)
                        and prec != BASELINE
                        and r.error.startswith(("UnsupportedOptionError", "ConversionError"))
                    )
                report.results += rows
                if not any(r.error for r in rows):
                    ran[prec] = target
            if BASELINE in ran and len(ran) > 1:
                _interleaved_speeds(report.results, name, ran, device, threads, plan)
    report.peak_rss_is_per_backend = plan.peak_rss_per_backend
    if len(precisions) > 1:
        _precision_metrics(report.results)
    if progress:
        progress("done", plan.total, plan.total)
    if len(precisions) == 1:  # one precision asked: its timings are what backend="fastest"/"auto" compare
        _record(mf, report, device, threads, precisions[0], backend_options, given, batches, levels)
    return report


@dataclass
class _Plan:
    """What every backend x precision runs, and the progress count."""

    batches: list[int | None]
    levels: list[int]
    given: dict[str, Any]
    warmup: int
    iterations: int | None
    duration: float | None
    seed: int
    progress: Progress | None
    total: int
    done: int = 0
    peak_rss_per_backend: bool = True


def _error_row(name: str, precision: str | None, exc: BaseException, refused: bool = False) -> BenchResult:
    return BenchResult(
        backend=name,
        batch=None,
        concurrency=0,
        error=f"{type(exc).__name__}: {exc}",
        precision_asked=precision,
        refused=refused,
    )


def _bench_backend(
    mf: ModelFile, name: str, options: dict[str, Any], plan: _Plan, keep_outputs: bool
) -> list[BenchResult]:
    """One backend at one precision: a row per batch x concurrency, or one row with the error."""
    batches, levels, given, seed, progress = plan.batches, plan.levels, plan.given, plan.seed, plan.progress
    label = name if options["precision"] == BASELINE else f"{name} {options['precision']}"
    per_backend = memory.reset_peak_rss()
    rss_before = memory.rss_bytes()
    runner = _BackendRun(mf, name, options)
    rows: list[BenchResult] = []
    start = plan.done
    stage = "load"
    try:
        if progress:
            progress(f"{label}: loading", plan.done, plan.total)
        t0 = time.perf_counter()
        first = runner.session(0)
        load_ms = (time.perf_counter() - t0) * 1e3
        for b in batches:
            stage = "shapes"
            resolved = default_shapes(first.inputs, given, batch=b, model=mf)
            feeds = random_feeds(first.inputs, resolved, seed)
            stage = "run"
            t0 = time.perf_counter()
            outputs = first.run(feeds)
            first_ms = (time.perf_counter() - t0) * 1e3
            conv = first.conversion  # made on load, or by the first run at its shapes
            conversion_ms, conversion_cached = (conv.seconds * 1e3, conv.cached) if conv else (None, None)
            for level in levels:
                if progress:
                    progress(f"{label}: batch {b or '-'} x{level}", plan.done, plan.total)
                sessions = [runner.session(i) for i in range(level)]
                for s in sessions:
                    for _ in range(plan.warmup if s is first else max(plan.warmup, 1)):
                        s.run(feeds)
                samples, wall, count = _concurrent_runs(sessions, feeds, plan.iterations, plan.duration)
                rows.append(
                    BenchResult(
                        backend=name,
                        batch=b,
                        concurrency=level,
                        device=first.device,
                        precision=first.precision,
                        shapes={k: list(v) for k, v in resolved.items()},
                        load_ms=load_ms,
                        conversion_ms=conversion_ms,
                        conversion_cached=conversion_cached,
                        first_run_ms=first_ms,
                        iterations=count,
                        duration_s=wall,
                        latency_ms=LatencyStats.of(samples),
                        throughput_ips=count / wall if wall > 0 else None,
                        throughput_sps=count * (b or 1) / wall if wall > 0 else None,
                        gpu_memory_mb=_mb(memory.gpu_memory_bytes(first.device)),
                        samples_ms=samples,
                        outputs=outputs if keep_outputs else None,
                    )
                )
                plan.done += 1
    except Exception as exc:  # a backend that fails to load, convert or run is a row with its error
        if isinstance(exc, InputError) and stage == "shapes":
            raise  # the shapes contradict the model: the caller's mistake, not this backend's
        log.info("bench: %s failed: %s", label, exc)
        rows = [_error_row(name, options["precision"], exc)]
        plan.done = start + len(batches) * len(levels)
    finally:
        runner.close()
    peak = memory.peak_rss_bytes()
    for r in rows:
        if not r.error:
            r.peak_rss_mb = _mb(peak)
            r.rss_growth_mb = _mb(peak - rss_before) if rss_before is not None else None
    plan.peak_rss_per_backend &= per_backend
    return rows


def _int8_for_bench(
    mf: ModelFile, tmp: str, calibration: PathLike | None, given: Mapping[str, Any], batch: int | None, seed: int
) -> Int8Model | UnirtError:
    """The int8 model every backend's int8 rows run (made once), or why there is none (a row per backend)."""
    try:
        feeds = None
        if calibration is None and mf.format.value == "onnx":
            infos = om.graph_inputs(om.load_proto(mf))
            resolved = default_shapes(infos, given, batch=batch, model=mf)
            feeds = [random_feeds(infos, resolved, seed + 1 + i) for i in range(_RANDOM_CALIBRATION_SAMPLES)]
        return int8_model(mf, tmp, calibration=calibration, feeds=feeds)
    except InputError:
        raise
    except UnirtError as exc:
        log.info("bench: no int8 model: %s", exc)
        return exc


_RANDOM_CALIBRATION_SAMPLES = 8
_INTERLEAVED_ROUNDS = 5


def _interleaved_speeds(
    rows: Sequence[BenchResult],
    name: str,
    models: Mapping[str, ModelFile],
    device: str,
    threads: int | None,
    plan: _Plan,
) -> None:
    """Speed against fp32 measured the fair way: one session per precision loaded together, timed in alternating
    rounds (fp32, bf16, ..., fp32, bf16, ...) so that a busy machine's drift falls on every precision alike. Sets
    `speed_vs_fp32` (median fp32 latency / median latency) on this backend's one-worker rows; rows with more
    workers keep the ratio of p50s (see _precision_metrics)."""
    sessions: dict[str, Session] = {}
    try:
        for prec, model in models.items():
            sessions[prec] = Session(
                model, backend=name, device=device, threads=threads, precision=prec, input_shapes=plan.given or None
            )
        first = sessions[BASELINE]
        per_round = None if plan.iterations is None else max(1, -(-plan.iterations // _INTERLEAVED_ROUNDS))
        seconds = None if plan.duration is None else plan.duration / _INTERLEAVED_ROUNDS
        for b in plan.batches:
            feeds = random_feeds(
                first.inputs, default_shapes(first.inputs, plan.given, batch=b, model=models[BASELINE]), plan.seed
            )
            samples: dict[str, list[float]] = {p: [] for p in sessions}
            for s in sessions.values():
                s.run(feeds)
            for _ in range(_INTERLEAVED_ROUNDS):
                for prec, s in sessions.items():
                    samples[prec] += _timed_runs(s, feeds, per_round, seconds)
            base = statistics.median(samples[BASELINE])
            for r in rows:
                if r.backend == name and r.batch == b and r.concurrency == 1 and r.precision_asked in samples:
                    r.speed_vs_fp32 = base / statistics.median(samples[r.precision_asked])
                    r.speed_interleaved = True
    except UnirtError as exc:  # the rows stand; their speed falls back to the ratio of p50s
        log.info("bench: interleaved timing of %s failed: %s", name, exc)
    finally:
        for s in sessions.values():
            s.close()


def _precision_metrics(rows: Sequence[BenchResult]) -> None:
    """Speed vs the same backend's fp32 row and error vs the fp32 reference's outputs, filled in on each row."""
    ok = [r for r in rows if not r.error and r.latency_ms]
    base = {(r.backend, r.batch, r.concurrency): r for r in ok if r.precision_asked == BASELINE}
    fp32_outputs = [r for r in ok if r.precision_asked == BASELINE and r.outputs is not None]
    ref_backend = next(
        (r.backend for r in fp32_outputs if r.backend == "onnxruntime"),
        fp32_outputs[0].backend if fp32_outputs else None,
    )
    reference = {r.batch: r.outputs for r in fp32_outputs if r.backend == ref_backend}
    for r in ok:
        b = base.get((r.backend, r.batch, r.concurrency))
        if not r.speed_interleaved and b is not None and b.latency_ms and r.latency_ms and r.latency_ms.p50 > 0:
            r.speed_vs_fp32 = b.latency_ms.p50 / r.latency_ms.p50
        expected = reference.get(r.batch)
        if expected is not None and r.outputs is not None:
            err = error_vs_reference(r.outputs, expected)
            r.rel_l2, r.max_abs, r.top1_agreement = err.rel_l2, err.max_abs, err.top1_agreement
    for r in rows:
        r.outputs = None


def _record(
    mf: ModelFile,
    report: BenchReport,
    device: str,
    threads: int | None,
    precision: str,
    backend_options: Mapping[str, Any] | None,
    given: Mapping[str, Sequence[int]],
    batches: Sequence[int | None],
    levels: Sequence[int],
) -> None:
    """Store the single-stream timings where backend="fastest" and "auto" read them (`unirt.fastest.record`):
    only a run at the model's own batch with concurrency 1 answers the question they ask."""
    if batches != [None] or 1 not in levels:
        return
    from ..fastest import Timing, record

    timings = []
    for r in report.results:
        if r.error:
            timings.append(Timing(r.backend, device, error=r.error.splitlines()[0][:300]))
        elif r.concurrency == 1 and r.latency_ms is not None:
            timings.append(
                Timing(r.backend, r.device or device, round(r.latency_ms.p50, 4), r.iterations, precision=r.precision)
            )
    try:
        record(
            mf,
            timings,
            device,
            threads=threads,
            precision=precision,
            backend_options=backend_options,
            input_shapes=dict(given) or None,
        )
    except Exception as exc:  # the report stands without it
        log.warning("bench: could not store the timings for backend='auto'/'fastest': %s", exc)


def mean_latency(report: BenchReport, backend: str) -> float | None:
    """Mean of a backend's p50 latencies over its rows (a one-number summary for deltas)."""
    values = [r.latency_ms.p50 for r in report.results if r.backend == backend and r.latency_ms]
    return statistics.fmean(values) if values else None
