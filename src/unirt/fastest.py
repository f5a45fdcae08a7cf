"""`backend="fastest"`: time every backend that can run the model here, briefly, on the real model with the
caller's shapes and precision, and keep the fastest.

No fixed backend order is right for every model (OpenVINO wins on some CNNs, ONNX Runtime on some text models,
and one engine may fail on a recurrent model), so the choice is measured. The candidates are timed interleaved
(short blocks of runs, round after round, in an order that rotates), not one after another: on a shared machine
the load that comes and goes then falls on every candidate alike, instead of deciding the winner by whose turn it
was. A candidate clearly slower than the leader is dropped early, and candidates within the noise of each other
(`TIE`) are decided by the hardware table's order, so a near tie does not flip between measurements. The winner
is cached as JSON in `unirt.cache_dir("fastest")`, keyed by the model's content hash, the machine, the installed
engine versions and the options, and reused on the next load without timing. The explanation lists every
candidate with its timing or the reason it was skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import threading
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
    "decide",
    "tie_note",
    "cached_choice",
    "record",
    "options_for",
    "sample_inputs",
    "clear_cache",
    "BUDGET_S",
    "MIN_RUNS",
    "MAX_RUNS",
    "ROUNDS",
    "TIE",
]
log = logging.getLogger(__name__)

#: The measurement's budget: up to BUDGET_S seconds of timed runs per candidate (more where MIN_RUNS runs take
#: longer), after warming up as long as a block, spread over at most ROUNDS blocks; MAX_RUNS caps a candidate's runs.
BUDGET_S = 0.5
MIN_RUNS = 5
MAX_RUNS = 200
ROUNDS = 8
#: Before each block, a pause until this process's threads are idle, at most SETTLE_S: an engine whose threads
#: spin-wait after its runs (ONNX Runtime's pool, about 0.1 s; ncnn's OpenMP, 20 ms) would otherwise slow
#: whichever candidate runs next, which no user of one Session sees.
SETTLE_S = 0.15
#: Medians within this fraction of the fastest one's are a tie, within the noise of a shared machine: the hardware
#: table's order decides it, so that it does not flip from one measurement to the next.
TIE = 0.03
#: Early drops (the runner is closed and timed no more): a candidate whose fastest run is over DROP_ON_SIGHT x the
#: leader's median, at any block; after MIN_BLOCKS blocks, one whose best block is over (1 + DROP_MARGIN) x it.
DROP_ON_SIGHT = 2.0
DROP_MARGIN = 0.10
MIN_BLOCKS = 3
#: 3: interleaved blocks, the tie rule (a stored winner may not be the smallest median); 2 timed sequentially.
_CACHE_VERSION = 3


@dataclass(frozen=True)
class Timing:
    """One candidate's measurement: median latency of `runs` timed runs, or why it could not be timed.

    `median_ms`: the median of the medians of its `blocks` blocks of runs (each block is a slot of time that the
    other candidates' blocks alternate with; `unirt bench` timings have no blocks: 0). `dropped`: why it was timed
    no further, when it was dropped early as clearly slower. `precision`: the precision the loaded runner reported
    in force; `converted`: how the model was converted for this backend first (a backend that converts ONNX on
    load), else None."""

    backend: str
    device: str
    median_ms: float | None = None
    runs: int = 0
    error: str | None = None
    precision: str | None = None
    converted: str | None = None
    blocks: int = 0
    dropped: str | None = None


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
                detail = f"{t.median_ms:.3f} ms median of {t.runs} runs"
                detail += f" in {t.blocks} block{'s' if t.blocks > 1 else ''}" if t.blocks else ""
                detail += f" on {t.device}" + (f" in {t.precision}" if t.precision else "")
                detail += f" ({t.dropped})" if t.dropped else ""
            elif t is not None:
                detail = f"failed: {t.error}"
            else:
                detail = c.reason
            if t is not None and t.converted:
                detail += f" ({t.converted})"
            lines.append(f"  {i}. {c.backend:<12} {mark:<8} {detail}")
        if self.chosen is None:
            lines.append("  -> no backend can run this model here")
        elif note := tie_note(self.timings, self.chosen.backend):
            lines.append(f"  -> {note}")
        return "\n".join(lines)


def tie_note(timings: Sequence[Timing], winner: str) -> str | None:
    """What to say when `winner` is not the smallest median among `timings`: the tie rule chose it (`TIE`)."""
    timed = [t for t in timings if t.error is None and t.median_ms is not None]
    won = next((t for t in timed if t.backend == winner), None)
    if won is None:
        return None
    first = min(timed, key=lambda t: t.median_ms)  # type: ignore[arg-type, return-value]
    if first.backend == winner or won.median_ms > first.median_ms * (1 + TIE):  # type: ignore[operator]
        return None
    return (
        f"near tie: {winner} {won.median_ms:.3f} ms is within {TIE:.0%} (the noise of the measurement) of "
        f"{first.backend} {first.median_ms:.3f} ms; {winner} is chosen as the hardware table ranks it first, so a "
        "tie does not flip between measurements"
    )


def decide(timings: Sequence[Timing], order: Sequence[str]) -> str | None:
    """The winner among the timings that ran: the smallest median, or, among those within `TIE` of it, the one
    first in `order` (the hardware table's order of the candidates). None when none ran."""
    timed = [t for t in timings if t.error is None and t.median_ms is not None]
    if not timed:
        return None
    fastest = min(t.median_ms for t in timed)  # type: ignore[type-var]
    near = [t.backend for t in timed if t.median_ms <= fastest * (1 + TIE)]  # type: ignore[operator]
    return min(near, key=lambda b: order.index(b) if b in order else len(order))


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


class _Contender:
    """One loaded candidate while the candidates are timed: its runner, inputs, and its blocks' medians."""

    def __init__(
        self,
        candidate: Candidate,
        runner: BackendSession,
        feeds: dict[str, np.ndarray],
        conversion: Any,
        precision: str,
    ) -> None:
        self.candidate, self.runner, self.feeds, self.conversion = candidate, runner, feeds, conversion
        self.precision = getattr(runner, "precision", None) or precision
        self.names = [o.name for o in runner.outputs]
        self.blocks: list[float] = []  # seconds: the median run of each block
        self.runs = 0
        self.per_block = 1
        self.fastest_run = float("inf")
        self.dropped: str | None = None
        self.settle = 0.0  # seconds the last pause before its block took
        self.warmed: float | None = None  # seconds of warm-up runs after the first (which compiles lazily)

    @property
    def backend(self) -> str:
        return self.candidate.backend

    @property
    def median(self) -> float:
        return statistics.median(self.blocks)

    def block(self, seconds: float | None) -> None:
        """Time one block: as many runs as fill `seconds` (the first block, which sets the count, after as long
        of warm-up runs after the first, untimed: an engine's first runs after loading are slower than the rest),
        else that many."""
        cap = max(1, MAX_RUNS // ROUNDS)
        samples: list[float] = []
        while seconds is not None and (self.warmed or 0.0) < seconds:
            self.warm_up()
        start = time.perf_counter()
        while len(samples) < (cap if seconds is not None else self.per_block) and (
            seconds is None or not samples or time.perf_counter() - start < seconds
        ):
            t0 = time.perf_counter()
            self.runner.run(self.feeds, self.names)
            samples.append(time.perf_counter() - t0)
        if seconds is not None:
            self.per_block = len(samples)
        self.blocks.append(statistics.median(samples))
        self.runs += len(samples)
        self.fastest_run = min(self.fastest_run, min(samples))

    def warm_up(self) -> None:
        start = time.perf_counter()
        self.runner.run(self.feeds, self.names)
        self.warmed = 0.0 if self.warmed is None else self.warmed + time.perf_counter() - start

    def timing(self) -> Timing:
        return Timing(
            self.backend,
            self.candidate.device or "",
            round(self.median * 1e3, 4),
            self.runs,
            precision=self.precision,
            converted=_describe_conversion(self.conversion) if self.conversion is not None else None,
            blocks=len(self.blocks),
            dropped=self.dropped,
        )


def _failure(c: Candidate, exc: BaseException, conv: Any) -> Timing:
    reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, UnirtError) else str(exc)
    return Timing(
        c.backend,
        c.device or "",
        error=reason.splitlines()[0][:300],
        converted=_describe_conversion(conv) if conv is not None else None,
    )


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

    How: each candidate is loaded (converted and verified first where it converts, as a Session loads it), run
    once to warm up, and timed for one block of runs (about budget_s / ROUNDS: that fixes its blocks' run count).
    Then, round after round, every candidate left runs one block, in an order that rotates each round, so the load
    of a shared machine falls on all alike; before each block, a pause until the last engine's threads stop
    spin-waiting (`SETTLE_S`). A candidate's figure is the median of its blocks' medians: each block is one slot of
    time, weighted alike whatever the run's length. A candidate far slower than the leader is closed at once
    (`DROP_ON_SIGHT`, checked as each is loaded: this bounds how many engines are held at once), one clearly slower
    after `MIN_BLOCKS` rounds (`DROP_MARGIN`) too. Timing stops when one is left, after ROUNDS rounds, or when the
    budget is spent (budget_s per candidate, or MIN_RUNS runs where longer; pauses included). Medians within `TIE`
    of the smallest are a tie that the hardware table's order decides (`decide`). The candidates not dropped are
    all loaded at once while they are timed: the peak memory is theirs together.

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
    # Shapes the model leaves open and the caller does not give: timed at a guess (1 per dynamic dim), never
    # cached (a Session defers "fastest" to its first run's shapes instead: `Session(backend="fastest")`)
    guessed = _open_shapes(model, input_shapes)
    guessed_feeds = sample_inputs(guessed, input_shapes) if guessed else inputs
    clock = _Clock(budget_s / ROUNDS)
    failed: dict[str, Timing] = {}
    live: list[_Contender] = []  # loaded and still timed, in the table's order
    done: list[_Contender] = []  # dropped (closed) or failed after loading
    winner: _Contender | None = None
    try:
        for c in eligible:  # load each, warm it up and time its first block; a clearly slower one is closed now
            contender = _load(
                c, model, threads, precision, backend_options, max_batch, input_shapes, inputs, guessed_feeds, failed
            )
            if contender is None:
                continue
            if clock.block(contender, 0, first=True, failed=failed):
                live.append(contender)
                _drop(live, done, clock, on_sight_only=True, failed=failed)
            else:
                done.append(contender)
        budget = sum(max(budget_s, MIN_RUNS * c.median) for c in live + done if c.blocks)
        for r in range(1, ROUNDS):  # interleaved rounds over those left, in an order that rotates each round
            if len(live) < 2 or clock.spent + sum(c.settle + c.per_block * c.median for c in live) > budget:
                break
            k = r % len(live)
            for contender in live[k:] + live[:k]:
                if not clock.block(contender, r, first=False, failed=failed):
                    live.remove(contender)
                    done.append(contender)
            _drop(live, done, clock, on_sight_only=r + 1 < MIN_BLOCKS, failed=failed)
        name = decide([c.timing() for c in live], [c.backend for c in eligible])
        winner = next((c for c in live if c.backend == name), None)
    finally:
        for contender in live:
            if contender is not winner:
                contender.runner.close()
    measured = {c.backend: c.timing() for c in live + done if c.blocks and c.backend not in failed}
    timings = [
        measured.get(c.backend) or failed[c.backend] for c in eligible if c.backend in measured or c.backend in failed
    ]
    log.debug("fastest: %s chosen after %.2f s of timed blocks", name, clock.spent)
    if winner is not None and not guessed:
        _write_cache(
            path,
            {
                "v": _CACHE_VERSION,
                "winner": winner.backend,
                "created": time.time(),
                "model": model.name,
                "timings": [t.__dict__ for t in timings],
            },
        )
    explanation = _explanation(
        base,
        winner.backend if winner is not None else None,
        timings,
        False,
        path,
        precision,
        winner.conversion if winner is not None else None,
    )
    return explanation, (winner.runner if winner is not None else None)


def _load(
    c: Candidate,
    model: ModelFile,
    threads: int | None,
    precision: str,
    backend_options: Mapping[str, Any],
    max_batch: int | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
    inputs: Mapping[str, np.ndarray] | None,
    guessed_feeds: Mapping[str, np.ndarray] | None,
    failed: dict[str, Timing],
) -> _Contender | None:
    """Load (converting first, as a Session does) and warm up one candidate; None, with its failure in `failed`,
    when it cannot. An InputError (the caller's shapes or inputs are wrong) is raised, not counted against it."""
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
        contender = _Contender(c, runner, feeds, conv, precision)
        contender.warm_up()  # (more in its first block): first runs allocate and compile lazily
        return contender
    except InputError:
        if runner is not None:
            runner.close()
        raise  # the caller's input_shapes are wrong: say so rather than time nothing
    except Exception as exc:  # any failure disqualifies this candidate, with its reason
        if runner is not None:
            runner.close()
        failed[c.backend] = _failure(c, exc, conv)
        return None


class _Clock:
    """Times blocks, each after the machine settles (`_settle`), and adds up the time they took (`spent`, pauses
    included)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.spent = seconds, 0.0

    def block(self, c: _Contender, round_: int, *, first: bool, failed: dict[str, Timing]) -> bool:
        """One block of `c`'s runs; False, with its failure in `failed` and its runner closed, when a run fails."""
        start = time.perf_counter()
        _settle(SETTLE_S)
        c.settle = time.perf_counter() - start
        try:
            c.block(self.seconds if first else None)
        except Exception as exc:  # a run that fails disqualifies it as a failed load does
            c.runner.close()
            failed[c.backend] = _failure(c.candidate, exc, c.conversion)
            return False
        finally:
            self.spent += time.perf_counter() - start
        log.debug(
            "fastest: round %d: %s, block of %d runs, median %.3f ms, after %.0f ms settling",
            round_,
            c.backend,
            c.per_block,
            c.blocks[-1] * 1e3,
            c.settle * 1e3,
        )
        return True


def _settle(at_most: float, step: float = 0.005) -> None:
    """Sleep until no other thread of this process is running or runnable (the engine that ran last has stopped
    spin-waiting for work), `step` at least and `at_most` at the most. Other processes' load does not count: it is
    the same for every candidate. Without /proc (not Linux): until the process used under a tenth of a core over
    two steps in a row."""
    deadline = time.perf_counter() + at_most
    idle = 0
    while True:
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(step)
        busy = _busy_threads()
        if busy is None:  # descheduled spinning threads use no CPU for a while: ask for two idle steps
            idle = idle + 1 if time.process_time() - cpu < 0.1 * (time.perf_counter() - wall) else 0
        if busy == 0 or idle >= 2 or time.perf_counter() >= deadline:
            return


def _busy_threads() -> int | None:
    """How many of this process's threads but the calling one are running or runnable (Linux), else None."""
    me = str(threading.get_native_id())
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    busy = 0
    for task in tasks:
        if task == me:
            continue
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        busy += stat[stat.rindex(")") + 2 : stat.rindex(")") + 3] == "R"
    return busy


def _drop(
    live: list[_Contender], done: list[_Contender], clock: _Clock, *, on_sight_only: bool, failed: dict[str, Timing]
) -> None:
    """Close and stop timing the candidates clearly slower than the leader (the smallest median so far): one whose
    fastest run in two blocks or more is over DROP_ON_SIGHT x the leader's median (one with a single block is given
    a second first: a burst of load may have slowed the whole first); unless `on_sight_only`, one whose best block
    is over (1 + DROP_MARGIN) x it. A candidate's best against the leader's median: the load a shared machine
    adds only ever slows runs, so its best is the closest to its unloaded speed."""
    if len(live) < 2:
        return
    leader = min(live, key=lambda c: c.median)
    for c in list(live):
        if c is leader:
            continue
        if c.fastest_run > DROP_ON_SIGHT * leader.median and len(c.blocks) < 2:
            if not clock.block(c, 0, first=False, failed=failed):  # the second opinion
                live.remove(c)
                done.append(c)
                continue
        if c.fastest_run > DROP_ON_SIGHT * leader.median:
            why = f"its fastest run {c.fastest_run * 1e3:.3f} ms, over {DROP_ON_SIGHT:g}x"
        elif not on_sight_only and min(c.blocks) > (1 + DROP_MARGIN) * leader.median:
            why = f"its best block {min(c.blocks) * 1e3:.3f} ms, over {1 + DROP_MARGIN:g}x"
        else:
            continue
        c.dropped = (
            f"dropped after {len(c.blocks)} block{'s' if len(c.blocks) > 1 else ''}: {why} "
            f"{leader.backend}'s median {leader.median * 1e3:.3f} ms"
        )
        log.debug("fastest: %s %s", c.backend, c.dropped)
        c.runner.close()
        live.remove(c)
        done.append(c)


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

    `source`: what measured it ("backend='fastest'" or "unirt bench"); `created`: when (seconds since the epoch);
    `winner`: the backend it chose (a near tie is decided by the table's order, not by the smallest median)."""

    timings: tuple[Timing, ...]
    created: float | None
    source: str
    file: str
    winner: str | None = None

    def honest(self, precision: str = "fp32") -> list[Timing]:
        """The timings that count, fastest first: the backend ran (a failed load, a refused backend or a conversion
        that failed verification has no time) in the precision asked for."""
        ok = [
            t
            for t in self.timings
            if t.error is None and t.median_ms is not None and (t.precision is None or t.precision == precision)
        ]
        return sorted(ok, key=lambda t: t.median_ms)  # type: ignore[arg-type, return-value]

    def ranked(self, precision: str = "fp32") -> list[Timing]:
        """`honest`, with the measurement's winner first where it is one of them (it won a near tie)."""
        ok = self.honest(precision)
        return [t for t in ok if t.backend == self.winner] + [t for t in ok if t.backend != self.winner]

    def tie_note(self, winner: str, precision: str = "fp32") -> str | None:
        """Why `winner` comes first although another honest timing is a little smaller (`tie_note`), or None."""
        return tie_note(self.honest(precision), winner)

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
        winner=data.get("winner"),
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
    `Measurement.honest`) among the backends eligible here, a near tie decided by the table's order as `choose`
    decides it (`decide`); nothing is written when none ran or when the timings do not cover every backend
    eligible here (a bench of some backends is not a measurement of the choice)."""
    eligible = [c for c in rank(model, device).candidates if c.eligible]
    names = {c.backend for c in eligible}
    if not names <= {t.backend for t in timings}:  # a partial run would stop "fastest" from timing the rest
        return None
    ok = Measurement(tuple(timings), None, source, "").honest(precision)
    winner = decide([t for t in ok if t.backend in names], [c.backend for c in eligible])
    if winner is None:
        return None
    path = _store_path(model, device, threads, precision, backend_options, input_shapes, max_batch, eligible)
    _write_cache(
        path,
        {
            "v": _CACHE_VERSION,
            "winner": winner,
            "created": time.time(),
            "model": model.name,
            "source": source,
            "timings": [t.__dict__ for t in timings],
        },
    )
    return path
