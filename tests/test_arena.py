"""unirt.Arena: one region shared by sessions that run one after another."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

import unirt
from unirt import Arena, ArenaBusyError, UnsupportedOptionError

KIB = 1024


def test_pieces_are_carved_reused_and_coalesced():
    arena = Arena(reserve=256 * KIB)
    a = arena.empty(100 * KIB, np.uint8)
    b = arena.empty(100 * KIB, np.uint8)
    assert a.ctypes.data % 64 == 0 and b.ctypes.data % 64 == 0
    assert not np.shares_memory(a, b)
    first = a.ctypes.data
    del a, b  # the two pieces merge back into one free range
    c = arena.empty(200 * KIB, np.uint8)
    assert c.ctypes.data == first
    s = arena.stats()
    assert s.chunks == 1 and s.chunk_allocations == 1 and s.bytes_reserved == 256 * KIB and s.leases == 3


def test_arena_grows_then_settles_on_one_chunk():
    arena = Arena()
    small = arena.empty(10 * KIB, np.uint8)
    big = arena.empty(300 * KIB, np.uint8)  # does not fit the first chunk: a chunk for both is added
    assert arena.stats().chunks == 2
    del small, big
    s = arena.stats()
    assert s.chunks == 1 and s.chunk_frees == 1  # the emptied smaller chunk went back
    again = [arena.empty(10 * KIB, np.uint8), arena.empty(300 * KIB, np.uint8)]
    assert arena.stats().chunk_allocations == 2 and len(again) == 2  # now everything fits the one chunk


def test_an_array_outlives_the_arena():
    arena = Arena()
    a = arena.empty((64, 64), np.float64)
    a[:] = 5
    del arena
    gc.collect()
    junk = [np.ones((64, 64)) for _ in range(50)]
    assert (a == 5).all() and len(junk) == 50


def test_threads_hammering_a_shared_arena():
    arena = Arena()
    errors = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        held = []
        for _ in range(300):
            a = arena.empty(int(rng.integers(1, 50_000)), np.uint8)
            a[:] = seed
            held.append(a)
            if len(held) > 3:
                b = held.pop(0)
                if not (b == seed).all():
                    errors.append("two live pieces overlap")
        for b in held:
            if not (b == seed).all():
                errors.append("two live pieces overlap")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.collect()
    assert errors == [] and arena.stats().bytes_live == 0


@pytest.fixture
def conv_sessions(conv_model):
    def make(arena, n=4, **kw):
        return [unirt.Session(conv_model("dynamic"), backend="onnxruntime", arena=arena, **kw) for _ in range(n)]

    return make


def test_sessions_in_one_arena_reserve_the_largest_need_not_the_sum(conv_sessions, conv_model):
    arena = Arena()
    sessions = conv_sessions(arena)
    rng = np.random.default_rng(0)
    ref = ort.InferenceSession(str(conv_model("dynamic")), providers=["CPUExecutionProvider"])
    for rows, sess in zip((1, 2, 3, 4), sessions):  # one after another, each result consumed before the next run
        x = rng.standard_normal((rows, 3, 32, 32)).astype(np.float32)
        out = sess.run(x)
        np.testing.assert_allclose(out["features"], ref.run(["features"], {"x": x})[0], rtol=1e-5, atol=1e-6)
        del out
    report = arena.report()
    per_row = (16 * 32 * 32 + 16) * 4  # features + pooled, float32
    assert len(report.per_session) == 4
    assert report.separate_bytes >= (1 + 2 + 3 + 4) * per_row
    assert report.shared_peak_bytes < report.separate_bytes  # sized for the largest run (4 rows) ...
    assert report.shared_peak_bytes <= 4 * per_row + 64 * KIB  # ... only (chunks come in 64 KiB steps)
    assert "without sharing" in str(report) and report.saved_bytes > 0


def test_outputs_kept_across_runs_are_never_overwritten(conv_sessions):
    arena = Arena()
    det, rec = conv_sessions(arena, n=2)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    first = det.run(x)["features"]
    snapshot = first.copy()
    second = rec.run(first[:, :3].copy())["features"]  # the recognizer runs while the detector's output lives
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, snapshot)


def test_sessions_on_threads_serialize_on_the_arena(conv_sessions, conv_model):
    arena = Arena()
    sessions = conv_sessions(arena, n=3)
    ref = ort.InferenceSession(str(conv_model("dynamic")), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((2, 3, 32, 32)).astype(np.float32) for _ in sessions]
    expected = [ref.run(["pooled"], {"x": x})[0] for x in xs]
    failures = []

    def worker(i: int) -> None:
        for _ in range(15):
            got = sessions[i].run(xs[i])["pooled"]
            if not np.allclose(got, expected[i], rtol=1e-5, atol=1e-6):
                failures.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_non_blocking_arena_refuses_a_second_user():
    arena = Arena(blocking=False)
    held = threading.Event()
    release = threading.Event()

    def holder():
        with arena.use("detector"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(ArenaBusyError, match="in use by 'detector'"):
            with arena.use("recognizer"):
                pass
    finally:
        release.set()
        t.join()
    with arena.use("recognizer") as use:  # free again
        use.empty((4,), np.float32)
    assert arena.report().per_session["recognizer"] == 16


def test_blocking_arena_waits_for_the_holder():
    arena = Arena()
    order = []
    held = threading.Event()

    def holder():
        with arena.use("first"):
            held.set()
            time.sleep(0.1)
            order.append("first done")

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    with arena.use("second"):
        order.append("second")
    t.join()
    assert order == ["first done", "second"]


def test_static_batch_staging_comes_from_the_arena(conv_model):
    arena = Arena()
    sess = unirt.Session(conv_model("static"), backend="onnxruntime", arena=arena, batched=True)
    x = np.ones((6, 3, 32, 32), np.float32)
    out = sess.run(x)
    assert out["features"].shape == (6, 16, 32, 32)
    assert arena.stats().leases >= 3  # the padded staging input and both outputs
    assert sess.pool.stats().allocations == 0


def test_bad_arena_options():
    with pytest.raises(UnsupportedOptionError, match="reserve"):
        Arena(reserve=-1)
    with pytest.raises(UnsupportedOptionError, match="power of two"):
        Arena(alignment=3)
    with pytest.raises(UnsupportedOptionError, match="arena must be a unirt.Arena"):
        unirt.Session(b"x", arena="big")
