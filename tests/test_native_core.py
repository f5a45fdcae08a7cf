"""unirt._core: the compiled part, built by scikit-build-core on every install."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from unirt import _core, hardware


def test_cpu_info_reads_the_hardware():
    info = _core.cpu_info()
    assert set(info) == {"arch", "vendor", "brand", "features"}
    assert info["arch"] in ("x86_64", "aarch64", "x86", "arm")
    if info["arch"] == "x86_64":
        assert info["vendor"] in ("GenuineIntel", "AuthenticAMD", "HygonGenuine") or info["vendor"]
        assert "sse2" in info["features"]  # part of x86-64 itself
    hw = hardware()
    assert hw.cpu_features == frozenset(info["features"]) and hw.cpu_count >= 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.uint16, np.bool_, np.complex64])
@pytest.mark.parametrize("alignment", [64, 128, 4096])
def test_aligned_empty(dtype, alignment):
    a = _core.aligned_empty((3, 5), dtype, alignment)
    assert a.shape == (3, 5) and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % alignment == 0 and _core.is_aligned(a, alignment)
    a[...] = 1
    assert (a == 1).all()
    assert _core.aligned_empty((0,), dtype).shape == (0,)


def test_aligned_empty_rejects_bad_arguments():
    with pytest.raises(ValueError):
        _core.aligned_empty((-1, 2), np.float32)
    with pytest.raises(ValueError):
        _core.aligned_empty((2,), np.float32, 48)
    with pytest.raises(TypeError):
        _core.aligned_empty((2,), object)
    with pytest.raises(ValueError):
        _core.aligned_empty((2**62, 2**62), np.float32)


VIEWS = {
    "transposed": lambda a: a.T,
    "every_other_column": lambda a: a[:, ::2],
    "reversed": lambda a: a[::-1, ::-1],
    "broadcast": lambda a: np.broadcast_to(a[:1], a.shape),
    "fortran": np.asfortranarray,
    "scalar": lambda a: a[0, 0, ...],
    "empty": lambda a: a[:0],
    "4d_slice": lambda a: a.reshape(2, 3, 2, 4)[:, 1:, ::-1, 1::2],
}


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8, np.float16, np.bool_, np.complex128])
def test_contiguous_copy_matches_numpy(view, dtype):
    base = (np.arange(48).reshape(6, 8) % 7).astype(dtype)
    src = VIEWS[view](base)
    out = _core.contiguous_copy(src)
    assert out.flags.c_contiguous and out.dtype == src.dtype and out.shape == src.shape
    np.testing.assert_array_equal(out, src)
    assert not np.shares_memory(out, base)


def test_contiguous_copy_keeps_memory_alive_after_source_dies():
    out = _core.contiguous_copy(np.arange(1000.0).reshape(10, 100)[:, ::3])
    gc.collect()
    junk = [np.full(10_000, 7.0) for _ in range(50)]  # reuse freed memory if it had been freed
    assert out[9, 33] == 999.0 and len(junk) == 50
    view = out[2:4]
    del out
    gc.collect()
    assert view[1, 0] == 300.0  # a view keeps the capsule-owned buffer alive


def test_contiguous_copy_runs_in_parallel_threads():
    src = np.random.default_rng(0).standard_normal((512, 512))[::2, ::2]
    results = []
    threads = [threading.Thread(target=lambda: results.append(_core.contiguous_copy(src))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(np.array_equal(r, src) for r in results)


def test_contiguous_copy_rejects_objects():
    with pytest.raises(TypeError):
        _core.contiguous_copy(np.array(["a", None], dtype=object))


@pytest.mark.parametrize("threads", [1, 4])
def test_gather_refuses_a_part_that_views_the_destination(threads):
    """memcpy from memory it writes (on several threads at once) is undefined: refused before any copy."""
    out = np.arange(8 * 1024, dtype=np.float32).reshape(8, 1024)
    before = out.copy()
    for part in (out[2:4], out[6:], out[:1]):
        with pytest.raises(ValueError, match=r"parts\[1\] shares memory with the destination"):
            _core.gather([np.ones((1, 1024), np.float32), part], out, threads)
        np.testing.assert_array_equal(out, before)  # nothing was written
    other = np.zeros((8, 1024), np.float32)
    assert _core.gather([out[2:4], out[6:]], other, threads) == 4  # the same parts into another array: fine
    np.testing.assert_array_equal(other[:4], np.concatenate([before[2:4], before[6:]]))


@pytest.mark.parametrize("threads", [1, 4])
def test_scatter_refuses_destinations_that_overlap_the_batch_or_each_other(threads):
    batch = np.arange(6 * 512, dtype=np.float64).reshape(6, 512)
    before = batch.copy()
    with pytest.raises(ValueError, match=r"outs\[0\] shares memory with the batch"):
        _core.scatter(batch, [batch[3:5]], threads)
    target = np.zeros((5, 512), np.float64)
    with pytest.raises(ValueError, match=r"outs\[0\] and outs\[1\] share memory"):
        _core.scatter(batch, [target[0:3], target[2:5]], threads)
    np.testing.assert_array_equal(batch, before)
    assert not target.any()
    a, b = target[0:2], target[2:5]  # adjacent, not overlapping
    assert _core.scatter(batch, [b, a], threads) == 5
    np.testing.assert_array_equal(b, before[0:3])
    np.testing.assert_array_equal(a, before[3:5])


def test_unirt_gather_and_scatter_say_overlap_as_input_errors():
    import unirt

    out = np.zeros((4, 3), np.float32)
    with pytest.raises(unirt.InputError, match="shares memory"):
        unirt.gather([out[1:2]], out=out)
    with pytest.raises(unirt.InputError, match="shares memory"):
        unirt.scatter(out, [out[:2], np.zeros((2, 3), np.float32)])


def test_threaded_copies_reuse_workers_across_calls_threads_and_a_fork():
    """Large gathers and scatters run on workers started once (not a thread per call): many calls, from several
    Python threads at once (one uses the workers, the others copy alone), and in a forked child (which has none of
    the parent's threads and starts its own) all copy right."""
    import os

    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((1, 1 << 20)).astype(np.float32) for _ in range(4)]  # 16 MiB: threaded
    expected = np.concatenate(parts)
    out = np.empty_like(expected)
    for _ in range(20):
        out.fill(0)
        assert _core.gather(parts, out, 4) == 4
        np.testing.assert_array_equal(out, expected)
    errors = []

    def work():
        mine = np.empty_like(expected)
        back = [np.empty_like(p) for p in parts]
        for _ in range(10):
            _core.gather(parts, mine, 4)
            _core.scatter(mine, back, 4)
            if not (np.array_equal(mine, expected) and all(np.array_equal(a, b) for a, b in zip(back, parts))):
                errors.append("wrong copy")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    if not hasattr(os, "fork"):
        return
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if its threaded copies work
        ok = False
        try:
            child = np.empty_like(expected)
            _core.gather(parts, child, 4)
            ok = np.array_equal(child, expected)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
