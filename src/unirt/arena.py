"""`unirt.Arena`: one region of host memory shared by sessions that run one after another.

    arena = unirt.Arena()
    det = unirt.Session("detector.onnx", arena=arena)
    rec = unirt.Session("recognizer.onnx", arena=arena)
    boxes = det.run(image)            # outputs and staging buffers are carved out of the arena ...
    text = rec.run(crop(boxes))       # ... so it is sized for the largest set alive at once, not the sum
    print(arena.report())             # bytes reserved with sharing vs what separate regions would hold

Each run of a session on an arena takes its output buffers (and the staging buffers of padding, splitting and
`run_many`) from the arena. An output keeps its piece until the array and every view of it are gone, so results
are never overwritten; drop them when done and the next session reuses the memory.

Exclusive use: sessions sharing an arena run one at a time. A run holds the arena for its whole duration; a run
from another thread waits for it (`blocking=True`, the default) or raises `ArenaBusyError` (`blocking=False`).
Sessions on different threads therefore never interleave in the arena, and the arena stays sized for one run at a
time. Use separate arenas (or none) for sessions that must run concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core
from .errors import ArenaBusyError, UnsupportedOptionError
from .pool import _check_alignment, cuda_runtime_candidates

__all__ = ["Arena", "ArenaStats", "ArenaReport"]


@dataclass(frozen=True)
class ArenaStats:
    bytes_reserved: int  # held from the system now (all chunks)
    peak_bytes_reserved: int
    bytes_live: int  # lent out now
    peak_bytes_live: int
    chunks: int
    leases: int
    chunk_allocations: int
    chunk_frees: int


@dataclass(frozen=True)
class ArenaReport:
    """Bytes reserved with sharing (the arena's peak) vs without (each session's largest run, summed)."""

    shared_peak_bytes: int
    separate_bytes: int
    per_session: dict[str, int] = field(default_factory=dict)

    @property
    def saved_bytes(self) -> int:
        return max(0, self.separate_bytes - self.shared_peak_bytes)

    def __str__(self) -> str:
        lines = [f"{'session':<40} {'largest run':>14}"]
        lines += [f"{name:<40} {n:>14,} B" for name, n in self.per_session.items()]
        lines.append(f"{'without sharing (sum)':<40} {self.separate_bytes:>14,} B")
        lines.append(f"{'with sharing (arena peak)':<40} {self.shared_peak_bytes:>14,} B")
        return "\n".join(lines)


class _Use:
    """One session's run on the arena: allocations are counted towards that session's largest run."""

    __slots__ = ("_arena", "bytes")

    def __init__(self, arena: Any) -> None:
        self._arena = arena
        self.bytes = 0

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        array = self._arena.empty(shape, dtype)
        self.bytes += array.nbytes
        return array

    def reserve(self, nbytes: int) -> None:
        self._arena.reserve(nbytes)


class Arena:
    """A region shared by sessions that run one after another (see the module doc).

    `reserve`: bytes to allocate up front (else it grows to the first runs' needs and settles on one chunk);
    `pinned=True`: page-locked CUDA host memory; `blocking=False`: a run that finds the arena in use raises
    ArenaBusyError instead of waiting.
    """

    def __init__(self, *, reserve: int = 0, alignment: int = 64, pinned: bool = False, blocking: bool = True) -> None:
        if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 0:
            raise UnsupportedOptionError(f"reserve must be a non-negative int of bytes, got {reserve!r}")
        alignment = _check_alignment(alignment)
        try:
            self._core = _core.Arena(reserve, alignment, bool(pinned), cuda_runtime_candidates() if pinned else [])
        except RuntimeError as exc:
            raise UnsupportedOptionError(str(exc)) from None
        self._pinned = bool(pinned)
        self._blocking = bool(blocking)
        self._lock = threading.RLock()
        self._holder: str | None = None
        self._peaks: dict[str, int] = {}
        self._peaks_lock = threading.Lock()

    def empty(self, shape: int | Sequence[int], dtype: Any = np.float32) -> np.ndarray:
        """An uninitialised C-contiguous array carved out of the arena; its piece returns when no array views it."""
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        return self._core.empty(shape, np.dtype(dtype))

    def reserve(self, nbytes: int) -> None:
        """Make sure `nbytes` can be carved in one piece, growing the arena now if not (e.g. before a run that
        takes several buffers, so the arena grows once to their sum rather than once per buffer)."""
        self._core.reserve(int(nbytes))

    @contextmanager
    def use(self, label: str) -> Iterator[_Use]:
        """Hold the arena for one run (the exclusive-use rule) and count what the run takes under `label`."""
        if not self._lock.acquire(blocking=self._blocking):
            raise ArenaBusyError(
                f"the arena is in use by {self._holder!r}; {label!r} cannot run until it "
                "finishes (sessions sharing an arena run one at a time; this arena was made "
                "with blocking=False)"
            )
        outer = self._holder
        self._holder = label
        use = _Use(self._core)
        try:
            yield use
        finally:
            self._holder = outer
            with self._peaks_lock:
                if use.bytes > self._peaks.get(label, -1):
                    self._peaks[label] = use.bytes
            self._lock.release()

    def stats(self) -> ArenaStats:
        return ArenaStats(**self._core.stats())

    def report(self) -> ArenaReport:
        with self._peaks_lock:
            per = dict(self._peaks)
        return ArenaReport(
            shared_peak_bytes=self._core.stats()["peak_bytes_reserved"],
            separate_bytes=sum(per.values()),
            per_session=per,
        )

    @property
    def pinned(self) -> bool:
        return self._pinned

    @property
    def blocking(self) -> bool:
        return self._blocking

    def __repr__(self) -> str:
        s = self._core.stats()
        return (
            f"<unirt.Arena {'pinned' if self._pinned else 'host'} reserved={s['bytes_reserved']}B "
            f"live={s['bytes_live']}B sessions={len(self._peaks)}>"
        )
