"""`unirt.tools.bench`: trtexec / benchmark_app-style measurements of one model on several backends.

For each backend: load time (including the conversion where the backend converts the model's format on load and
the converted model is not cached yet; the conversion's own time and whether it came from the cache are recorded), then for each batch size the first-run latency and, for each
concurrency, steady-state latency (min/mean/p50/p90/p99/max/std) and throughput, plus the process's peak RSS
and GPU memory where it can be read. Concurrency N runs N sessions of the model on N threads (like trtexec's
streams), so backends whose sessions are not thread-safe are measured safely. The report's JSON form follows
`bench.schema.json` beside this module (`BENCH_SCHEMA`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .. import __version__
from ..errors import InputError, UnirtError, UnsupportedOptionError
from ..formats import ModelFile, PathLike, open_model
from ..hardware import hardware
from ..session import Session, _check_options
from . import memory
from .compare import pick_backends
from .inputs import default_shapes, random_feeds
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
    def of(cls, samples_ms: Sequence[float]) -> "LatencyStats":
        a = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(float(a.min()), float(a.mean()), float(p50), float(p90), float(p99), float(a.max()),
                   float(a.std()))


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
    conversion_ms: float | None = None     # the converter's time; None when the backend read the model as it is
    conversion_cached: bool | None = None  # the converted model came from the cache: load_ms does not include it
    first_run_ms: float | None = None
    iterations: int = 0
    duration_s: float = 0.0
    latency_ms: LatencyStats | None = None
    throughput_ips: float | None = None    # inferences per second, all workers together
    throughput_sps: float | None = None    # samples per second (inferences x batch)
    peak_rss_mb: float | None = None
    rss_growth_mb: float | None = None     # peak RSS minus RSS before this backend loaded
    gpu_memory_mb: float | None = None
    error: str | None = None
    samples_ms: list[float] = field(default_factory=list, repr=False)  # kept for plots; not in the JSON

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k != "samples_ms"}
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
        return [r for r in self.results if r.error]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_ID, "unirt_version": __version__, "created": self.created, "model": self.model,
                "format": self.format, "hardware": self.hardware, "settings": self.settings,
                "peak_rss_is_per_backend": self.peak_rss_is_per_backend,
                "results": [r.to_dict() for r in self.results]}

    def write_json(self, path: PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _mb(n: int | None) -> float | None:
    return round(n / 2**20, 3) if n is not None else None


def _timed_runs(session: Session, feeds: Mapping[str, np.ndarray], iterations: int | None, duration: float | None,
                start: threading.Barrier | None = None) -> list[float]:
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


def _concurrent_runs(sessions: Sequence[Session], feeds: Mapping[str, np.ndarray], iterations: int | None,
                     duration: float | None) -> tuple[list[float], float, int]:
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


def _check_settings(batches: Sequence[int | None], concurrency: Sequence[int], warmup: int,
                    iterations: int | None, duration: float | None, threads: Any, precision: Any) -> None:
    """The caller's mistakes, refused before any backend loads (else each backend would fail with them)."""
    _check_options(threads, precision, None)
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


def bench(model: PathLike | bytes | ModelFile, backends: Sequence[str] | str | None = None, *,
          shapes: Mapping[str, Sequence[int]] | str | None = None, batch: Sequence[int] | int | None = None,
          concurrency: Sequence[int] | int = 1, threads: int | None = None, precision: str = "fp32",
          device: str = "auto", warmup: int = 5, iterations: int | None = None, duration: float | None = None,
          seed: int = 0, progress: Progress | None = None,
          backend_options: Mapping[str, Any] | None = None) -> BenchReport:
    """Benchmark `model` on each of `backends` (names, or None/"all" for every available one that reads
    it or converts it on load).

    `shapes`: input shapes ({name: dims} or "x:1x3x224x224"); dynamic dims left open default to 1. `batch`:
    batch sizes to sweep (dim 0 of inputs whose dim 0 is dynamic). `concurrency`: worker counts to sweep.
    Timed runs: `iterations` per worker, or for `duration` seconds (default 3 s when neither is given), after
    `warmup` untimed runs. A backend that fails to load or run is reported with its error; the others go on.
    `backend_options`: for every backend's Session (e.g. {"conversion": {"tolerance": 1e-2}}).
    """
    mf = open_model(model)
    names = pick_backends(mf, backends)
    batches: list[int | None] = [batch] if isinstance(batch, int) else (list(batch) if batch else [None])
    levels = [concurrency] if isinstance(concurrency, int) else list(concurrency)
    if iterations is None and duration is None:
        duration = 3.0
    _check_settings(batches, levels, warmup, iterations, duration, threads, precision)
    given = parse_shapes(shapes) if isinstance(shapes, str) else dict(shapes or {})
    options = {"device": device, "threads": threads, "precision": precision,
               **({"backend_options": dict(backend_options)} if backend_options else {})}
    settings = {"backends": names, "shapes": {k: list(v) for k, v in given.items()}, "batch": batches,
                "concurrency": levels, "threads": threads, "precision": precision, "device": device,
                "warmup": warmup, "iterations": iterations, "duration_s": duration, "seed": seed}
    report = BenchReport(model=mf.name, format=mf.format.value, settings=settings, results=[],
                         hardware=hardware().describe(),
                         created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    total, done = len(names) * len(batches) * len(levels), 0
    for name in names:
        per_backend = memory.reset_peak_rss()
        report.peak_rss_is_per_backend &= per_backend
        rss_before = memory.rss_bytes()
        runner = _BackendRun(mf, name, options)
        rows: list[BenchResult] = []
        try:
            if progress:
                progress(f"{name}: loading", done, total)
            t0 = time.perf_counter()
            first = runner.session(0)
            load_ms = (time.perf_counter() - t0) * 1e3
            conv = first.conversion
            conversion_ms, conversion_cached = (conv.seconds * 1e3, conv.cached) if conv else (None, None)
            for b in batches:
                resolved = default_shapes(first.inputs, given, batch=b, model=mf)
                feeds = random_feeds(first.inputs, resolved, seed)
                t0 = time.perf_counter()
                first.run(feeds)
                first_ms = (time.perf_counter() - t0) * 1e3
                for level in levels:
                    if progress:
                        progress(f"{name}: batch {b or '-'} x{level}", done, total)
                    sessions = [runner.session(i) for i in range(level)]
                    for s in sessions:
                        for _ in range(warmup if s is first else max(warmup, 1)):
                            s.run(feeds)
                    samples, wall, count = _concurrent_runs(sessions, feeds, iterations, duration)
                    rows.append(BenchResult(
                        backend=name, batch=b, concurrency=level, device=first.device, precision=first.precision,
                        shapes={k: list(v) for k, v in resolved.items()}, load_ms=load_ms,
                        conversion_ms=conversion_ms, conversion_cached=conversion_cached, first_run_ms=first_ms,
                        iterations=count, duration_s=wall, latency_ms=LatencyStats.of(samples),
                        throughput_ips=count / wall if wall > 0 else None,
                        throughput_sps=count * (b or 1) / wall if wall > 0 else None,
                        gpu_memory_mb=_mb(memory.gpu_memory_bytes(first.device)), samples_ms=samples))
                    done += 1
        except InputError:
            raise  # the shapes contradict the model: the caller's mistake, not this backend's
        except UnirtError as exc:
            log.info("bench: %s failed: %s", name, exc)
            rows.append(BenchResult(backend=name, batch=None, concurrency=0, error=f"{type(exc).__name__}: {exc}"))
            done = (names.index(name) + 1) * len(batches) * len(levels)
        finally:
            runner.close()
        peak = memory.peak_rss_bytes()
        for r in rows:
            if not r.error:
                r.peak_rss_mb = _mb(peak)
                r.rss_growth_mb = _mb(peak - rss_before) if rss_before is not None else None
        report.results += rows
    if progress:
        progress("done", total, total)
    _record(mf, report, device, threads, precision, backend_options, given, batches, levels)
    return report


def _record(mf: ModelFile, report: BenchReport, device: str, threads: int | None, precision: str,
            backend_options: Mapping[str, Any] | None, given: Mapping[str, Sequence[int]],
            batches: Sequence[int | None], levels: Sequence[int]) -> None:
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
            timings.append(Timing(r.backend, r.device or device, round(r.latency_ms.p50, 4), r.iterations,
                                  precision=r.precision))
    try:
        record(mf, timings, device, threads=threads, precision=precision, backend_options=backend_options,
               input_shapes=dict(given) or None)
    except Exception as exc:  # the report stands without it
        log.warning("bench: could not store the timings for backend='auto'/'fastest': %s", exc)


def mean_latency(report: BenchReport, backend: str) -> float | None:
    """Mean of a backend's p50 latencies over its rows (a one-number summary for deltas)."""
    values = [r.latency_ms.p50 for r in report.results if r.backend == backend and r.latency_ms]
    return statistics.fmean(values) if values else None
