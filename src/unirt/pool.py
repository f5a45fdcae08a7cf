"""`unirt.BufferPool`: aligned host buffers reused across runs, handed out as numpy arrays without a copy.

    pool = unirt.BufferPool()
    y = pool.empty((64, 1024, 1024), np.float32)   # a 256 MiB block, aligned to 64 bytes
    del y                                           # the block goes back to the pool ...
    y = pool.empty((64, 1024, 1024), np.float32)   # ... and is reused: no new allocation, no page faults
    pool.stats()                                    # allocations, reuses, bytes live / cached / reserved, peaks

A block returns to the pool only when the array and every view of it are gone, so no use-after-free is possible
from Python, and an array may outlive its pool and its session. Pools are thread-safe. Every `Session` has one
for its outputs (`Session.pool`); pass `pool=` to share one between sessions.

`pinned=True` allocates page-locked memory with the CUDA runtime (cudaHostAlloc), for fast host<->GPU copies;
the CUDA runtime is loaded when first asked for, so unirt needs no CUDA to build or run.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from .errors import UnsupportedOptionError

__all__ = ["BufferPool", "PoolStats", "pinned_memory_status", "cuda_runtime_candidates"]

_DEFAULT_ALIGNMENT = 64
ENV_CUDART = "UNIRT_CUDART"  # a path to libcudart, tried first


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's counters. `allocations` counts blocks taken from the system; `reuses` counts
    requests served from the cache. `bytes_reserved` = `bytes_live` (lent out) + `bytes_cached` (kept for reuse)."""

    allocations: int
    reuses: int
    releases: int
    frees: int
    blocks_live: int
    blocks_cached: int
    bytes_live: int
    peak_bytes_live: int
    bytes_cached: int
    bytes_reserved: int
    peak_bytes_reserved: int


def cuda_runtime_candidates() -> list[str]:
    """Where to look for the CUDA runtime: $UNIRT_CUDART, the pip wheels' copies (nvidia-cuda-runtime-cu1x, as
    torch installs them), then the system's library names."""
    found: list[str] = []
    if os.environ.get(ENV_CUDART):
        found.append(os.environ[ENV_CUDART])
    if sys.platform.startswith("linux"):
        for entry in sys.path:
            found += sorted(
                glob.glob(os.path.join(entry, "nvidia", "cuda_runtime", "lib", "libcudart.so*")), reverse=True
            )
            found += sorted(glob.glob(os.path.join(entry, "nvidia", "cu*", "lib", "libcudart.so*")), reverse=True)
        found += ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    elif os.name == "nt":
        found += ["cudart64_13.dll", "cudart64_12.dll", "cudart64_110.dll"]
    return list(dict.fromkeys(found))


def pinned_memory_status() -> tuple[bool, str]:
    """(available, detail): whether pinned host memory can be allocated here; detail names the CUDA runtime
    library loaded, or says exactly why not."""
    status = _core.cuda_host_status(cuda_runtime_candidates())
    return bool(status["available"]), (status["library"] if status["available"] else status["reason"])


def _check_alignment(alignment: Any) -> int:
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment < 8 or alignment & (alignment - 1):
        raise UnsupportedOptionError(f"alignment must be a power of two >= 8, got {alignment!r}")
    return alignment


class BufferPool:
    """A thread-safe pool of aligned host buffers in size classes (at most 25% slack), reused across runs.

    `max_cached_bytes` bounds what the pool keeps for reuse (default: unbounded); `pinned=True` uses page-locked
    CUDA host memory and raises UnsupportedOptionError saying why where it is unavailable.
    """

    __slots__ = ("_core_pool", "empty_raw", "_pinned", "__weakref__")

    def __init__(
        self, *, alignment: int = _DEFAULT_ALIGNMENT, max_cached_bytes: int | None = None, pinned: bool = False
    ) -> None:
        alignment = _check_alignment(alignment)
        if max_cached_bytes is not None and (not isinstance(max_cached_bytes, int) or max_cached_bytes < 0):
            raise UnsupportedOptionError(
                f"max_cached_bytes must be a non-negative int or None, got {max_cached_bytes!r}"
            )
        kwargs: dict[str, Any] = {"alignment": alignment, "pinned": bool(pinned)}
        if max_cached_bytes is not None:
            kwargs["max_cached_bytes"] = max_cached_bytes
        if pinned:
            kwargs["cuda_libraries"] = cuda_runtime_candidates()
        try:
            self._core_pool = _core.BufferPool(**kwargs)
        except RuntimeError as exc:
            raise UnsupportedOptionError(str(exc)) from None
        self._pinned = bool(pinned)
        #: `empty` without argument checks, for callers that pass a tuple shape and a numpy dtype (the Session).
        self.empty_raw = self._core_pool.empty

    def empty(self, shape: int | Sequence[int], dtype: Any = np.float32) -> np.ndarray:
        """An uninitialised C-contiguous array over a pool block (like `numpy.empty`)."""
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        return self._core_pool.empty(shape, np.dtype(dtype))

    def empty_like(self, array: np.ndarray) -> np.ndarray:
        return self._core_pool.empty(array.shape, array.dtype)

    def stats(self) -> PoolStats:
        return PoolStats(**self._core_pool.stats())

    def trim(self) -> int:
        """Free every cached block (blocks in use are untouched); returns the bytes freed."""
        return self._core_pool.trim()

    def close(self) -> None:
        """Free the cache and stop caching. Arrays still in use stay valid and free their block when they go."""
        self._core_pool.close()

    @property
    def closed(self) -> bool:
        return self._core_pool.closed

    @property
    def pinned(self) -> bool:
        return self._pinned

    @property
    def alignment(self) -> int:
        return self._core_pool.alignment

    @staticmethod
    def size_class(nbytes: int, alignment: int = _DEFAULT_ALIGNMENT) -> int:
        """The capacity of the block a request of `nbytes` gets."""
        return _core.BufferPool.size_class(nbytes, alignment)

    def __repr__(self) -> str:
        s = self._core_pool.stats()
        return (
            f"<unirt.BufferPool {'pinned' if self._pinned else 'host'} live={s['bytes_live']}B "
            f"cached={s['bytes_cached']}B allocations={s['allocations']} reuses={s['reuses']}>"
        )
