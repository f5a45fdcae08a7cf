"""One Session called from many threads (a web service's use): results never cross between threads, and a close()
from another thread ends each run in progress with its result or SessionClosedError, never another error."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

import unirt
from unirt import SessionClosedError
from unirt.testing.threads import run_concurrently

JOIN_SECONDS = 60  # a thread still running by then is a deadlock


class ClosesTheSession:
    """An input whose conversion to an array closes the session: the close lands after run() found the session
    open and before the backend runs, as a close from another thread may."""

    def __init__(self, array, sess):
        self._array, self._sess = array, sess

    def __array__(self, dtype=None, copy=None):
        self._sess.close()
        return self._array


@pytest.mark.parametrize("how", ["plain", "pooled", "out", "static_batch", "run_many", "isolated"])
def test_a_close_during_a_run_raises_session_closed(conv_model, how):
    kwargs = {
        "plain": {"pooled_outputs": False},
        "pooled": {"pooled_outputs": True},
        "static_batch": {"batched": True},
        "isolated": {"isolate": True},
    }.get(how, {})
    sess = unirt.Session(conv_model("static" if how == "static_batch" else "dynamic"), backend="onnxruntime", **kwargs)
    runner = sess._runner
    rows = 3 if how == "static_batch" else 2  # a static batch of 4 given 3 rows: padded
    x = ClosesTheSession(np.ones((rows, 3, 32, 32), np.float32), sess)
    with pytest.raises(SessionClosedError, match="closed"):
        if how == "out":
            sess.run(x, out={"pooled": np.empty((rows, 16, 1, 1), np.float32)})
        elif how == "run_many":
            sess.run_many([np.ones((1, 3, 32, 32), np.float32), x])
        else:
            sess.run(x)
    assert sess.closed
    if how == "isolated":
        assert runner.pid is None and runner.restarts == 0  # no child started for the closed session


def test_threads_get_their_own_results_on_a_shared_session(conv_model):
    """8 threads x 50 runs of their own inputs (batch 1-4) on one session, each result equal to a sequential run,
    and still equal after every other thread's later runs (pooled outputs are never reused while held)."""
    path = conv_model("dynamic")
    sess = unirt.Session(path, backend="onnxruntime", pooled_outputs=True)
    rng = np.random.default_rng(0)
    inputs = {
        (t, c): rng.standard_normal((1 + (t + c) % 4, 3, 32, 32)).astype(np.float32)
        for t in range(8)
        for c in range(50)
    }
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = {k: reference.run(None, {"x": x}) for k, x in inputs.items()}
    held = {}

    def work(t):
        for c in range(50):
            held[(t, c)] = sess.run(inputs[(t, c)])

    run_concurrently(work, 8, start_together=False)
    for key, (features, pooled) in expected.items():
        np.testing.assert_allclose(held[key]["features"], features, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(held[key]["pooled"], pooled, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("isolate", [False, True])
def test_a_close_from_another_thread_ends_runs_cleanly(conv_model, isolate):
    sess = unirt.Session(conv_model("dynamic"), backend="onnxruntime", isolate=isolate)
    runner = sess._runner
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = sess.run(x)["pooled"]
    started = threading.Barrier(5)
    outcomes = []

    def work(i):
        started.wait()
        while True:
            try:
                got = sess.run(x)["pooled"]
            except SessionClosedError:
                outcomes.append("closed")
                return
            np.testing.assert_array_equal(got, expected)

    def close_soon():
        started.wait()
        time.sleep(0.05)
        sess.close()

    closer = threading.Thread(target=close_soon, daemon=True)
    closer.start()
    run_concurrently(work, 4, start_together=False)
    closer.join(JOIN_SECONDS)
    assert outcomes == ["closed"] * 4
    if isolate:
        assert runner.pid is None  # no thread started a child after the close
