"""`backend="fastest"`: time every backend that can run the model here, briefly, on the real model with the
caller's shapes and precision, and keep the fastest.

No fixed backend order is right for every model (OpenVINO wins on some CNNs, ONNX Runtime on some text models,
and one engine may fail on a recurrent model), so the choice is measured. The winner is cached as JSON in
`unirt.cache_dir("fastest")`, keyed by the model's content hash, the machine, the installed engine versions and
the options, and reused on the next load without timing. The explanation lists every candidate with its timing
or the reason it was skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from .backend import BackendSession, LoadOptions
from .cache import cache_dir
from .devices import Device
from .errors import InputError, UnirtError
from .feeds import InputChecker
from .formats import ModelFile
from .hardware import hardware
from .loading import load_runner, prepare
from .selection import Candidate, Explanation, rank
from .tensor import TensorInfo

__all__ = [
    "Timing",
    "FastestExplanation",
    "Measurement",
    "DeferredChoice",
    "choose",
    "cached_choice",
    "record",
    "options_for",
    "sample_inputs",
    "clear_cache",
    "BUDGET_S",
    "MIN_RUNS",
    "MAX_RUNS",
]
log = logging.getLogger(__name__)

#: Seconds of timed runs per candidate (after one warm-up run), and the bounds on their count.
BUDGET_S = 0.5
MIN_RUNS = 5
MAX_RUNS = 200
_CACHE_VERSION = 2


@dataclass(frozen=True)
class Timing:
    """One candidate's measurement: median latency of `runs` timed runs, or why it could not be timed.

    `precision`: the precision the loaded runner reported in force; `converted`: how the model was converted for
    this backend first (a backend that converts ONNX on load), else None."""

    backend: str
    device: str
    median_ms: float | None = None
    runs: int = 0
    error: str | None = None
    precision: str | None = None
    converted: str | None = None


@dataclass(frozen=True)
class FastestExplanation(Explanation):
    """The candidates `backend="fastest"` timed, the winner, and whether the choice came from the cache."""

    timings: tuple[Timing, ...] = field(default_factory=tuple)
    cached: bool = False
    cache_file: str | None = None
    #: The winner's `unirt.conversion.Conversion` when it was converted while timing (None from the cache).
    conversion: Any = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        lines = [
            f"model: {self.model.name} (format {self.model.format})",
            f"device requested: {self.device}; backend='fastest': "
            + ("choice from the cache " + str(self.cache_file) if self.cached else "timed just now"),
            self._precision_line(),
        ]
        by_name = {t.backend: t for t in self.timings}
        for i, c in enumerate(self.candidates, 1):
            mark = "chosen" if c.chosen else ("timed" if c.eligible else "skipped")
            t = by_name.get(c.backend)
            if t is not None and t.median_ms is not None:
                detail = f"{t.median_ms:.3f} ms median of {t.runs} runs on {t.device}"
                detail += f" in {t.precision}" if t.precision else ""
            elif t is not None:
                detail = f"failed: {t.error}"
            else:
                detail = c.reason
            if t is not None and t.converted:
                detail += f" ({t.converted})"
            lines.append(f"  {i}. {c.backend:<12} {mark:<8} {detail}")
        if self.chosen is None:
            lines.append("  -> no backend can run this model here")
        return "\n".join(lines)


def options_for(backend_options: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """With backend="fastest", backend_options keyed by backend names go to that backend only
    ({"openvino": {...}, "onnxruntime": {...}}); any other dict goes to every candidate."""
    names = set(registry.installed_names()) | set(registry.known_names())
    if backend_options and all(k in names for k in backend_options):
        return dict(backend_options.get(backend) or {})
    return dict(backend_options)


def sample_inputs(
    inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Inputs to time with: the caller's `shapes` for dynamic dims (1 where none is given); random floats,
    zero integers (safe as indices), False booleans."""
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - {i.name for i in inputs})
    if unknown:
        raise InputError(
            f"input_shapes names unknown input {unknown[0]!r}; the model's inputs are: "
            f"{', '.join(i.name for i in inputs)}"
        )
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for info in inputs:
        shape = (
            tuple(int(d) for d in shapes[info.name])
            if info.name in shapes
            else tuple(d if isinstance(d, int) else 1 for d in info.shape)
        )
        if info.dtype.kind == "f":
            feeds[info.name] = rng.standard_normal(shape).astype(info.dtype)
        elif info.dtype.kind == "O":
            feeds[info.name] = np.full(shape, "a", dtype=object)
        else:
            feeds[info.name] = np.zeros(shape, info.dtype)
    return InputChecker(inputs).check(feeds)


def _cache_key(
    model: ModelFile,
    device: Device,
    candidates: Sequence[Candidate],
    threads: int | None,
    precision: str,
    backend_options: Mapping[str, Any],
    shapes: Mapping[str, Sequence[int]] | None,
    max_batch: int | None = None,
) -> str:
    hw = hardware()
    payload = {
        "v": _CACHE_VERSION,
        "model": model.content_hash,
        "device": str(device),
        "threads": threads,
        "max_batch": max_batch,
        "precision": precision,
        "options": backend_options,
        "shapes": {k: list(v) for k, v in sorted((shapes or {}).items())},
        "machine": [hw.arch, hw.cpu_brand, hw.cpu_count, list(hw.cuda_gpus), list(hw.npus)],
        "engines": {c.backend: registry.availability(c.backend).version for c in candidates},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _time(runner: BackendSession, feeds: dict[str, np.ndarray], budget_s: float) -> tuple[float, int]:
    names = [o.name for o in runner.outputs]
    runner.run(feeds, names)  # warm-up: first runs allocate and compile lazily
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < MAX_RUNS and (len(samples) < MIN_RUNS or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        runner.run(feeds, names)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3, len(samples)


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("v") == _CACHE_VERSION else None


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)  # atomic: concurrent loaders never read half a file
    except OSError as exc:
        log.warning("fastest: could not write %s: %s", path, exc)


def _describe_conversion(conv: Any) -> str:
    how = "from the conversion cache" if conv.cached else f"in {conv.seconds:.1f} s"
    return f"converted to {conv.backend} first, {how}: {conv.path}"


def _explanation(
    base: Explanation,
    winner: str | None,
    timings: Sequence[Timing],
    cached: bool,
    cache_file: Path,
    precision: str,
    conversion: Any = None,
) -> FastestExplanation:
    failed = {t.backend: t.error for t in timings if t.error is not None}
    candidates = tuple(
        Candidate(
            c.backend,
            c.eligible and c.backend not in failed,
            c.reason if c.backend not in failed else f"failed: {failed[c.backend]}",
            c.device,
            chosen=c.backend == winner,
        )
        for c in base.candidates
    )
    return FastestExplanation(
        model=base.model,
        device=base.device,
        hardware_class=base.hardware_class,
        order_source="measured (backend='fastest')",
        candidates=candidates,
        precision=precision,
        timings=tuple(timings),
        cached=cached,
        cache_file=str(cache_file),
        conversion=conversion,
    )


def choose(
    model: ModelFile,
    device: Device | str = "auto",
    *,
    threads: int | None = None,
    precision: str = "fp32",
    backend_options: Mapping[str, Any] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    refresh: bool = False,
    budget_s: float = BUDGET_S,
    max_batch: int | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> tuple[FastestExplanation, BackendSession | None]:
    """Time every eligible backend on `model`; return the explanation and the winner's loaded runner (None when
    the winner came from the cache, or when nothing could run).

    `input_shapes`: the shapes to time at (and convert at, for backends that convert). `inputs`: a run's real
    inputs (a Session choosing at its first run): timed on them, conversions made at their shapes and verified on
    them. Without either, a model with dynamic dims is timed at 1 per dim and the choice is not cached."""
    device = Device.parse(device)
    if inputs is not None:
        input_shapes = {k: tuple(np.shape(v)) for k, v in inputs.items()}
    backend_options = dict(backend_options or {})
    base = rank(model, device)
    eligible = [c for c in base.candidates if c.eligible]
    key = _cache_key(model, device, eligible, threads, precision, backend_options, input_shapes, max_batch)
    path = cache_dir("fastest") / f"{key}.json"
    cached = None if refresh else _read_cache(path)
    if cached is not None and cached.get("winner") in {c.backend for c in eligible}:
        timings = [Timing(**t) for t in cached.get("timings", [])]
        log.debug("fastest: %s from cache %s", cached["winner"], path)
        return _explanation(base, cached["winner"], timings, True, path, precision), None
    timings: list[Timing] = []
    best: tuple[float, str, BackendSession, Any] | None = None
    # Shapes the model leaves open and the caller does not give: timed at a guess (1 per dynamic dim), never
    # cached (a Session defers "fastest" to its first run's shapes instead: `Session(backend="fastest")`)
    guessed = _open_shapes(model, input_shapes)
    guessed_feeds = sample_inputs(guessed, input_shapes) if guessed else inputs
    for c in eligible:
        assert c.device is not None
        options = LoadOptions(
            device=Device.parse(c.device),
            threads=threads,
            precision=precision,
            backend_options=options_for(backend_options, c.backend),
            max_batch=max_batch,
        )
        runner = conv = None
        try:  # as a Session loads it: ncnn, MNN run their conversion first (cached)
            prepared = prepare(c.backend, model, options, input_shapes=input_shapes, inputs=guessed_feeds)
            conv = prepared.conversion
            runner = load_runner(c.backend, prepared.model, prepared.options)
            feeds = (
                InputChecker(runner.inputs).check(dict(inputs))
                if inputs is not None
                else sample_inputs(runner.inputs, input_shapes)
            )
            median_ms, runs = _time(runner, feeds, budget_s)
        except InputError:
            if runner is not None:
                runner.close()
            raise  # the caller's input_shapes are wrong: say so rather than time nothing
        except Exception as exc:  # any failure disqualifies this candidate, with its reason
            if runner is not None:
                runner.close()
            reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, UnirtError) else str(exc)
            timings.append(
                Timing(
                    c.backend,
                    c.device,
                    error=reason.splitlines()[0][:300],
                    converted=_describe_conversion(conv) if conv is not None else None,
                )
            )
            continue
        timings.append(
            Timing(
                c.backend,
                c.device,
                round(median_ms, 4),
                runs,
                precision=getattr(runner, "precision", None) or precision,
                converted=_describe_conversion(conv) if conv is not None else None,
            )
        )
        if best is None or median_ms < best[0]:
            if best is not None:
                best[2].close()
            best = (median_ms, c.backend, runner, conv)
        else:
            runner.close()
    winner = best[1] if best is not None else None
    if winner is not None and not guessed:
        _write_cache(
            path,
            {
                "v": _CACHE_VERSION,
                "winner": winner,
                "created": time.time(),
                "model": model.name,
                "timings": [t.__dict__ for t in timings],
            },
        )
    explanation = _explanation(base, winner, timings, False, path, precision, best[3] if best is not None else None)
    return explanation, (best[2] if best is not None else None)


class DeferredChoice(BackendSession):
    """`backend="fastest"` for a model whose shapes are open and not given: the choice waits for the first run,
    is timed on its inputs (`choose(inputs=...)`), and the winner runs from then on (`choose_at(feeds)` returns
    it). The source model's inputs and outputs are reported meanwhile."""

    def __init__(
        self, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], device: str, choose_at: Any
    ) -> None:
        import threading

        self.inputs, self.outputs, self.device = list(inputs), list(outputs), device
        self._choose_at = choose_at
        self._runner: BackendSession | None = None
        self._lock = threading.Lock()
        self._closed = False

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> Sequence[Any]:
        runner = self._runner
        if runner is None:
            with self._lock:
                if self._closed:
                    from .errors import SessionClosedError

                    raise SessionClosedError("this Session is closed")
                if self._runner is None:
                    self._runner = self._choose_at(feeds)
                runner = self._runner
        return runner.run(feeds, output_names)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()


def _open_shapes(model: ModelFile, input_shapes: Mapping[str, Sequence[int]] | None) -> list[TensorInfo] | None:
    """The source model's inputs when it has dynamic dims beyond a batch dim that `input_shapes` leaves open (an
    ONNX model a converting backend would have to guess shapes for), else None."""
    try:
        from .conversion.lazy import deferred_signature

        signature = deferred_signature(model, input_shapes)
    except Exception:  # no onnx to read the signature with: nothing converts it either
        return None
    return signature[0] if signature is not None else None


def clear_cache() -> int:
    """Forget every cached choice; returns how many were removed."""
    removed = 0
    for path in cache_dir("fastest").glob("*.json"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


@dataclass(frozen=True)
class Measurement:
    """Timings of the backends on one model, machine and set of options, read from the store that
    `backend="fastest"`, `unirt explain --fastest` and `unirt bench` fill (`cache_dir("fastest")`).

    `source`: what measured it ("backend='fastest'" or "unirt bench"); `created`: when (seconds since the epoch)."""

    timings: tuple[Timing, ...]
    created: float | None
    source: str
    file: str

    def honest(self, precision: str = "fp32") -> list[Timing]:
        """The timings that count, fastest first: the backend ran (a failed load, a refused backend or a conversion
        that failed verification has no time) in the precision asked for."""
        ok = [
            t
            for t in self.timings
            if t.error is None and t.median_ms is not None and (t.precision is None or t.precision == precision)
        ]
        return sorted(ok, key=lambda t: t.median_ms)  # type: ignore[arg-type, return-value]

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.created)) if self.created else "unknown time"
        times = ", ".join(
            f"{t.backend} {t.median_ms:.3f} ms" if t.median_ms is not None else f"{t.backend} failed"
            for t in sorted(self.timings, key=lambda t: (t.median_ms is None, t.median_ms or 0))
        )
        return f"measured by {self.source} at {when} ({times}; {self.file})"


def _store_path(
    model: ModelFile,
    device: Device | str,
    threads: int | None,
    precision: str,
    backend_options: Mapping[str, Any] | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
    max_batch: int | None,
    eligible: Sequence[Candidate] | None,
) -> Path:
    device = Device.parse(device)
    if eligible is None:
        eligible = [c for c in rank(model, device).candidates if c.eligible]
    key = _cache_key(model, device, eligible, threads, precision, dict(backend_options or {}), input_shapes, max_batch)
    return cache_dir("fastest") / f"{key}.json"


def cached_choice(
    model: ModelFile,
    device: Device | str = "auto",
    *,
    threads: int | None = None,
    precision: str = "fp32",
    backend_options: Mapping[str, Any] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    max_batch: int | None = None,
    eligible: Sequence[Candidate] | None = None,
) -> Measurement | None:
    """The stored measurement for exactly these model contents, machine, engine versions and options (the key
    `choose` uses), or None. Reads only: nothing is timed. Cheap when the store is empty (no hashing)."""
    directory = cache_dir("fastest")
    try:
        if not any(directory.glob("*.json")):
            return None
    except OSError:
        return None
    path = _store_path(model, device, threads, precision, backend_options, input_shapes, max_batch, eligible)
    data = _read_cache(path)
    if data is None:
        return None
    try:
        timings = tuple(Timing(**t) for t in data.get("timings", []))
    except TypeError:
        return None
    return Measurement(
        timings=timings,
        created=data.get("created"),
        source=str(data.get("source") or "backend='fastest'"),
        file=str(path),
    )


def record(
    model: ModelFile,
    timings: Sequence[Timing],
    device: Device | str = "auto",
    *,
    threads: int | None = None,
    precision: str = "fp32",
    backend_options: Mapping[str, Any] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    max_batch: int | None = None,
    source: str = "unirt bench",
) -> Path | None:
    """Store timings measured elsewhere (`unirt bench`) under the key `choose` and `backend="auto"` read, so the
    next `backend="fastest"` or `"auto"` load follows them. The winner is the fastest honest timing (see
    `Measurement.honest`) among the backends eligible here; nothing is written when none ran or when the timings
    do not cover every backend eligible here (a bench of some backends is not a measurement of the choice)."""
    eligible = [c for c in rank(model, device).candidates if c.eligible]
    names = {c.backend for c in eligible}
    if not names <= {t.backend for t in timings}:  # a partial run would stop "fastest" from timing the rest
        return None
    ok = Measurement(tuple(timings), None, source, "").honest(precision)
    ok = [t for t in ok if t.backend in names]
    if not ok:
        return None
    path = _store_path(model, device, threads, precision, backend_options, input_shapes, max_batch, eligible)
    _write_cache(
        path,
        {
            "v": _CACHE_VERSION,
            "winner": ok[0].backend,
            "created": time.time(),
            "model": model.name,
            "source": source,
            "timings": [t.__dict__ for t in timings],
        },
    )
    return path
