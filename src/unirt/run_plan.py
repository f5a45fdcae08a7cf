"""The part of `Session.run` beyond the hot path: memory unirt hands the backend to write outputs into (a pool or an
arena), caller `out=` arrays, static-batch padding/splitting, `max_batch` splitting and `run_many`.

Decided at load: which outputs unirt sizes before a run (fixed shapes, or dims read from the inputs' shapes),
and whether a session needs this path at all; a session that needs none of it never comes here (`active`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from .arena import Arena
from .backend import BackendSession
from .batch_runner import BatchRunner, BatchStats
from .batching import BatchSpec
from .errors import BuffersRefusedError, InputError, RunError, UnirtError
from .feeds import BatchSizeMismatch
from .outputs import POOL_MIN_BYTES, OutputPlanner
from .pool import BufferPool
from .tensor import TensorInfo

__all__ = ["RunPlan"]
log = logging.getLogger(__name__)
T = TypeVar("T")


class RunPlan:
    def __init__(
        self,
        runner: BackendSession,
        backend: str,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
        check: Any,
        *,
        batch: BatchSpec,
        max_batch: int | None,
        pool: BufferPool,
        arena: Arena | None,
        pooled_outputs: bool | str,
        label: str,
    ) -> None:
        self._backend = backend
        self._run = runner.run
        self._run_into = getattr(runner, "run_into", None)
        self._check = check
        self._infos = {o.name: o for o in outputs}
        self.planner = planner = OutputPlanner(inputs, outputs)
        self.pool = pool
        self.arena = arena
        self._pool_memory = _PoolMemory(pool)
        self.label = label
        self.batch = batch
        # Outputs unirt allocates: none without run_into; with an arena or pooled_outputs=True every one it can
        # size; under "auto" those of at least POOL_MIN_BYTES even with every dynamic dim at 1. Decided here, so a
        # session whose outputs are all left to the engine keeps the lean path in Session.run.
        if self._run_into is None or pooled_outputs is False:
            chosen: tuple[str, ...] = ()
        elif arena is not None or pooled_outputs is True:
            chosen = tuple(planner.recipes)
        else:
            chosen = tuple(n for n in planner.recipes if planner.min_nbytes(n) >= POOL_MIN_BYTES)
        self._fixed = tuple(n for n in chosen if n in planner.static)
        self._sized = tuple(n for n in chosen if n not in planner.static)
        self.batcher = BatchRunner(
            batch,
            max_batch,
            [i.name for i in inputs],
            planner,
            self._call,
            writes_into=self._run_into is not None,
            pooled=self._pooled,
        )
        #: Whether a plain run (no out=) must come here: the hot path in Session.run skips this class otherwise.
        self.active = bool(self._fixed or self._sized or max_batch is not None or arena is not None)

    # -- entry points from Session --------------------------------------------------------------------------
    def run(
        self, arrays: dict[str, np.ndarray], names: tuple[str, ...], out: Mapping[str, np.ndarray] | None
    ) -> dict[str, np.ndarray]:
        if out is not None:
            out = self.planner.check_out(out, names, arrays)
        with self._memory() as memory:
            if self.batcher.needs_split(arrays):
                return self.batcher.run_one(arrays, names, out, memory)
            return self._run_once(arrays, names, out, memory)

    def run_rebatched(
        self, mismatch: BatchSizeMismatch, names: tuple[str, ...], out: Mapping[str, np.ndarray] | None
    ) -> dict[str, np.ndarray]:
        """A static-batch model given B != N rows: pad or split."""
        target = self.planner.check_out(out, names, mismatch.arrays, rows=mismatch.rows) if out is not None else None
        with self._memory() as memory:
            return self.batcher.run_one(mismatch.arrays, names, target, memory)

    def run_many(
        self, requests: Sequence[Any], names: tuple[str, ...], outs: Sequence[Mapping[str, np.ndarray] | None] | None
    ) -> list[dict[str, np.ndarray]]:
        if isinstance(requests, (dict, np.ndarray)) or not isinstance(requests, Sequence):
            raise InputError(
                f"run_many takes a list of requests (each what run() takes), got {type(requests).__name__}"
            )
        if outs is not None and (not isinstance(outs, Sequence) or len(outs) != len(requests)):
            raise InputError(
                f"run_many: out must be a list with one dict (or None) per request, {len(requests)} in all"
            )
        checked = []
        for i, feeds in enumerate(requests):
            try:
                checked.append(self._check(feeds))
            except BatchSizeMismatch as mismatch:
                checked.append(mismatch.arrays)
            except InputError as exc:
                raise type(exc)(f"request {i}: {exc}") from None
            if self.batch.batched and any(type(v) is not np.ndarray for v in checked[-1].values()):
                raise InputError(
                    f"request {i}: run_many packs requests into batches of host arrays; a device "
                    "tensor (DLPack / __cuda_array_interface__) goes to run(), one request per call"
                )
        if not self.batch.batched:  # nothing to pack: one run per request
            return [self.run(arrays, names, outs[i] if outs else None) for i, arrays in enumerate(checked)]
        targets = {
            i: self.planner.check_out(o, names, checked[i], f"out[{i}]", next(iter(checked[i].values())).shape[0])
            for i, o in enumerate(outs or ())
            if o is not None
        }
        with self._memory() as memory:
            return self.batcher.run_many(checked, names, targets, memory)

    def stats(self) -> BatchStats:
        return self.batcher.stats()

    def close(self) -> None:
        """Drop the runner's methods so a closed session does not keep the engine alive."""
        self._run = self._run_into = None  # type: ignore[assignment]

    # -- one backend run ------------------------------------------------------------------------------------
    def _memory(self):
        if self.arena is not None:
            return self.arena.use(self.label)
        return self._pool_memory

    def _run_once(self, arrays, names, out, memory) -> dict[str, np.ndarray]:
        targets = dict(out) if out else {}
        planner = self.planner
        wanted = [(n, planner.static[n]) for n in self._fixed if n in names and n not in targets]
        wanted += [(n, planner.shape(n, arrays)) for n in self._sized if n in names and n not in targets]
        if len(wanted) > 1:
            memory.reserve(sum(-(-planner.nbytes(n, s) // 64) * 64 for n, s in wanted))
        for n, shape in wanted:
            targets[n] = memory.empty(shape, planner.dtypes[n])
        ours = tuple(n for n, _ in wanted)
        return dict(zip(names, self._pooled(self._attempt, ours, arrays, names, targets, ours)))

    def _attempt(
        self,
        own: bool,
        arrays: dict[str, np.ndarray],
        names: Sequence[str],
        targets: dict[str, np.ndarray],
        ours: Sequence[str],
    ) -> list[Any]:
        """One run writing into `targets`, or (not `own`) only into those not among `ours` (the caller's)."""
        if not own:
            targets = {n: t for n, t in targets.items() if n not in ours}
        return self._call(arrays, names, targets or None)

    def _pooled(self, attempt: Callable[..., T], ours: Sequence[str], *args: Any) -> T:
        """`attempt(True, *args)` writes outputs `ours` into unirt's buffers; where the engine refuses them
        (BuffersRefusedError: the model's declared shapes do not hold), `attempt(False, *args)` lets it allocate
        them, and so does this session from then on. The one place of this fallback: `run` and run_many's packed
        runs."""
        try:
            return attempt(True, *args)
        except BuffersRefusedError:
            if not ours:
                raise  # the caller's own arrays: nothing of unirt's to drop
        result = attempt(False, *args)
        log.warning(
            "backend %r refused outputs sized from the model's declared shapes (%s); this session now lets "
            "the backend allocate them",
            self._backend,
            ", ".join(ours),
        )
        self._fixed = tuple(n for n in self._fixed if n not in ours)
        self._sized = tuple(n for n in self._sized if n not in ours)
        self.batcher.writes_into = False
        return result

    def _call(
        self, arrays: dict[str, np.ndarray], names: Sequence[str], targets: dict[str, np.ndarray] | None
    ) -> list[Any]:
        """Run the backend, writing the outputs named in `targets` into those arrays."""
        try:
            if targets and self._run_into is not None:
                results = list(self._run_into(arrays, names, targets))
            else:
                results = list(self._run(arrays, names))
        except UnirtError:
            raise
        except Exception as exc:
            raise RunError(f"backend {self._backend!r} failed to run: {type(exc).__name__}: {exc}") from exc
        if targets:
            for i, name in enumerate(names):
                target = targets.get(name)
                if target is not None and results[i] is not target:
                    value = results[i]
                    if np.shape(value) != target.shape:
                        raise BuffersRefusedError(
                            f"output {name!r}: the model produced shape "
                            f"{list(np.shape(value))}, the array for it has shape "
                            f"{list(target.shape)}"
                        )
                    np.copyto(target, value)
                    results[i] = target
        return results


class _PoolMemory:
    """Memory for one run from a pool, shaped like an arena's (`empty`, `reserve`) and its own context."""

    __slots__ = ("empty",)

    def __init__(self, pool: BufferPool) -> None:
        self.empty = pool.empty_raw

    def reserve(self, nbytes: int) -> None:
        pass  # pools hold blocks per size class: nothing to reserve

    def __enter__(self) -> _PoolMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
