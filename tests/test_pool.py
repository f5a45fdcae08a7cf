"""unirt.BufferPool: size classes, zero-copy arrays with safe lifetimes, thread safety, stats, pinned memory."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import unirt
from unirt import BufferPool, UnsupportedOptionError


def test_size_classes_bound_the_slack():
    assert [BufferPool.size_class(n) for n in (0, 1, 64, 65, 256, 257, 320, 321, 4096, 4097)] == [
        64,
        64,
        64,
        128,
        256,
        320,
        320,
        384,
        4096,
        5120,
    ]
    for n in np.unique(np.geomspace(1, 1 << 30, 500).astype(np.int64)):
        cls = BufferPool.size_class(int(n))
        assert cls >= n and cls % 64 == 0 and cls <= max(256, n * 1.25 + 64), n
    assert BufferPool.size_class(100, alignment=4096) == 4096


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, np.int64, np.bool_, np.complex128])
def test_empty_is_aligned_writable_and_reused(dtype):
    pool = BufferPool()
    a = pool.empty((3, 5, 7), dtype)
    assert a.shape == (3, 5, 7) and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0
    a[...] = 1
    address = a.ctypes.data
    del a
    b = pool.empty((105,), dtype)  # same byte count -> same size class -> the same block
    assert b.ctypes.data == address
    s = pool.stats()
    assert (s.allocations, s.reuses, s.blocks_live) == (1, 1, 1)
    assert pool.empty(0, dtype).shape == (0,) and pool.empty((), dtype).shape == ()


def test_a_block_returns_only_when_no_array_views_it():
    pool = BufferPool()
    a = pool.empty((1000,), np.float64)
    a[:] = np.arange(1000)
    view = a[10:20]
    column = a.reshape(100, 10)[:, 3]
    del a
    gc.collect()
    assert pool.stats().blocks_live == 1  # the views still hold it
    junk = [pool.empty((1000,), np.float64) for _ in range(3)]  # must not get the viewed block
    for j in junk:
        j[:] = -1
    assert view[0] == 10 and column[99] == 993
    del view
    assert pool.stats().blocks_live == 4
    del column
    s = pool.stats()
    assert s.blocks_live == 3 and s.blocks_cached == 1 and s.releases == 1
    del junk


def test_arrays_outlive_their_pool():
    pool = BufferPool()
    a = pool.empty((256, 256), np.float32)
    a[:] = 7
    del pool
    gc.collect()
    junk = [np.full((256, 256), 1.0) for _ in range(20)]
    assert (a == 7).all() and len(junk) == 20
    b = a[1:]
    del a
    assert (b == 7).all()  # the block is freed with its last view, not before


def test_close_frees_the_cache_and_stops_caching():
    pool = BufferPool()
    kept = pool.empty(10_000, np.uint8)
    pool.empty(20_000, np.uint8)  # released at once -> cached
    assert pool.stats().bytes_cached > 0
    pool.close()
    s = pool.stats()
    assert pool.closed and s.bytes_cached == 0 and s.bytes_reserved == s.bytes_live
    kept[:] = 3  # still valid
    del kept
    s = pool.stats()
    assert s.blocks_cached == 0 and s.bytes_reserved == 0 and s.frees == 2


def test_trim_and_max_cached_bytes():
    pool = BufferPool(max_cached_bytes=100_000)
    arrays = [pool.empty(60_000, np.uint8) for _ in range(3)]
    del arrays  # only one 60 kB block fits the cache limit
    s = pool.stats()
    assert s.blocks_cached == 1 and s.frees == 2 and s.bytes_cached <= 100_000
    assert pool.trim() == s.bytes_cached
    assert pool.stats().bytes_reserved == 0


def test_stats_track_peaks():
    pool = BufferPool()
    a, b = pool.empty(1000, np.uint8), pool.empty(5000, np.uint8)
    cap = BufferPool.size_class(1000) + BufferPool.size_class(5000)
    del a, b
    s = pool.stats()
    assert s.peak_bytes_live == cap and s.peak_bytes_reserved == cap and s.bytes_live == 0 and s.bytes_cached == cap
    assert "host" in repr(pool)


def test_threads_hammering_acquire_and_release():
    pool = BufferPool()
    errors = []
    sizes = [64, 1000, 4096, 70_000, 1 << 20]

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        held = []
        try:
            for _ in range(400):
                n = int(rng.choice(sizes))
                a = pool.empty(n, np.uint8)
                a[:] = seed  # a block lent twice would be overwritten by the other thread
                held.append((a, seed))
                if len(held) > 4 or rng.random() < 0.5:
                    b, mark = held.pop(int(rng.integers(len(held))))
                    if not (b == mark).all():
                        errors.append("a block was shared between threads")
                    del b
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
        for b, mark in held:
            if not (b == mark).all():
                errors.append("a block was shared between threads")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    s = pool.stats()
    assert errors == []
    assert s.blocks_live == 0 and s.bytes_live == 0 and s.allocations + s.reuses == s.releases
    assert s.reuses > s.allocations  # the cache did its job


def test_bad_arguments_are_clear():
    with pytest.raises(UnsupportedOptionError, match="power of two"):
        BufferPool(alignment=48)
    with pytest.raises(UnsupportedOptionError, match="max_cached_bytes"):
        BufferPool(max_cached_bytes=-1)
    pool = BufferPool()
    with pytest.raises(ValueError, match=">= 0"):
        pool.empty((-1, 3))
    with pytest.raises(TypeError, match="Python objects"):
        pool.empty(3, object)


def test_pinned_memory_status_names_the_reason():
    available, detail = unirt.pinned_memory_status()
    assert isinstance(detail, str) and detail
    if available:
        assert "cudart" in detail
    else:  # no CUDA runtime library, or one that finds no usable device: say which
        assert "could not be loaded" in detail or "cudaGetDeviceCount failed" in detail or "no CUDA device" in detail
        with pytest.raises(UnsupportedOptionError, match="pinned host memory is unavailable"):
            BufferPool(pinned=True)
        with pytest.raises(UnsupportedOptionError, match="pinned host memory is unavailable"):
            unirt.Arena(pinned=True)


def test_pinned_memory_status_reads_a_named_library(monkeypatch, tmp_path):
    from unirt.pool import cuda_runtime_candidates

    fake = tmp_path / "libcudart.so.99"
    fake.write_bytes(b"not a library")
    monkeypatch.setenv("UNIRT_CUDART", str(fake))
    candidates = cuda_runtime_candidates()
    assert candidates[0] == str(fake) and "libcudart.so" in candidates


@pytest.mark.skipif(
    not unirt.pinned_memory_status()[0],
    reason=f"pinned host memory needs a CUDA device: {unirt.pinned_memory_status()[1]}",
)
def test_pinned_pool_allocates_page_locked_memory():
    pool = BufferPool(pinned=True, alignment=4096)
    a = pool.empty((1024, 1024), np.float32)
    assert pool.pinned and a.ctypes.data % 4096 == 0
    a[:] = 2
    del a
    b = pool.empty((1024, 1024), np.float32)
    assert pool.stats().reuses == 1 and b.shape == (1024, 1024)
