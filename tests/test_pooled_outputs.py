"""Outputs written by the backend into pool memory (run_into), on real ONNX Runtime sessions."""

from __future__ import annotations

import gc
import threading

import numpy as np
import onnxruntime as ort
import pytest

import unirt
import unirt.testing
from unirt import InputError, UnsupportedOptionError


def ort_reference(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@pytest.fixture
def conv(conv_model):
    return conv_model("dynamic")


def test_steady_state_runs_allocate_no_new_output_memory(conv):
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    sess = unirt.Session(conv, backend="onnxruntime")  # features: 64 KiB a row, pooled under "auto"
    expected = ort_reference(conv, {"x": x})
    for _ in range(3):  # warm-up: the first runs fill the pool
        sess.run(x)
    before = sess.pool.stats()
    for _ in range(50):
        out = sess.run(x)
        np.testing.assert_allclose(out["features"], expected["features"], rtol=1e-5, atol=1e-6)
        del out
    after = sess.pool.stats()
    assert after.allocations == before.allocations, "steady-state runs took new memory for outputs"
    assert after.reuses - before.reuses == 50  # one block per run for `features`, always from the cache
    assert after.bytes_reserved == before.bytes_reserved


def test_pooled_outputs_true_pools_small_outputs_too(conv):
    x = np.ones((1, 3, 32, 32), np.float32)
    sess = unirt.Session(conv, backend="onnxruntime", pooled_outputs=True)
    for _ in range(3):
        out = sess.run(x)
        assert out["pooled"].ctypes.data % 64 == 0 and out["features"].ctypes.data % 64 == 0
        del out
    s = sess.pool.stats()
    assert s.allocations == 2 and s.reuses == 4  # features and pooled, each allocated once


def test_auto_leaves_small_outputs_to_the_engine_and_the_lean_path(model):
    sess = unirt.Session(model("dynamic_mlp"), backend="onnxruntime")  # outputs: 12 bytes a row
    out = sess.run(np.ones((5, 8), np.float32))
    assert out["probs"].shape == (5, 3) and sess.pool.stats().allocations == 0
    assert not sess._planned  # Session.run goes straight to the backend


def test_pooled_outputs_false_leaves_allocation_to_the_engine(conv):
    sess = unirt.Session(conv, backend="onnxruntime", pooled_outputs=False)
    sess.run(np.ones((4, 3, 32, 32), np.float32))
    assert sess.pool.stats().allocations == 0


def test_results_held_by_the_caller_are_never_overwritten(conv):
    sess = unirt.Session(conv, backend="onnxruntime")
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((4, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    held = [sess.run(x)["features"] for x in xs]
    assert len({h.ctypes.data for h in held}) == 4
    for x, h in zip(xs, held):
        np.testing.assert_allclose(h, ort_reference(conv, {"x": x})["features"], rtol=1e-5, atol=1e-6)


def test_an_output_outlives_its_session(conv):
    x = np.ones((4, 3, 32, 32), np.float32)
    sess = unirt.Session(conv, backend="onnxruntime")
    features = sess.run(x)["features"]
    expected = features.copy()
    sess.close()
    del sess
    gc.collect()
    np.testing.assert_array_equal(features, expected)


def test_shared_pool_between_sessions(conv, conv_model):
    pool = unirt.BufferPool()
    a = unirt.Session(conv, backend="onnxruntime", pool=pool)
    b = unirt.Session(conv_model("static"), backend="onnxruntime", pool=pool)
    assert a.pool is pool and b.pool is pool
    x = np.ones((4, 3, 32, 32), np.float32)
    first = a.run(x)["features"].copy()  # a's block goes back to the shared pool ...
    np.testing.assert_array_equal(b.run(x)["features"], first)
    assert pool.stats().reuses == 1  # ... and b's run takes it
    a.close()
    assert not pool.closed  # a shared pool is the caller's to close


def test_out_arrays_are_written_in_place(conv):
    sess = unirt.Session(conv, backend="onnxruntime")
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    features = np.empty((2, 16, 32, 32), np.float32)
    pooled = np.empty((2, 16, 1, 1), np.float32)
    out = sess.run(x, out={"features": features, "pooled": pooled})
    assert out["features"] is features and out["pooled"] is pooled
    expected = ort_reference(conv, {"x": x})
    np.testing.assert_allclose(features, expected["features"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled, expected["pooled"], rtol=1e-5, atol=1e-6)
    partial = sess.run(x, out={"pooled": np.empty((2, 16, 1, 1), np.float32)})  # IOBinding path
    np.testing.assert_allclose(partial["features"], expected["features"], rtol=1e-5, atol=1e-6)
    with pytest.raises(
        InputError,
        match=r"out\['features'\]: expected shape \[2, 16, 32, 32\] for these "
        r"inputs, got \[3, 16, 32, 32\]",
    ):
        sess.run(x, out={"features": np.empty((3, 16, 32, 32), np.float32)})


@pytest.mark.parametrize("pooled", ["auto", True, False])
def test_out_arrays_with_a_wrong_dynamic_dim_are_refused_before_the_run(model, pooled):
    """dynamic_mlp: probs is [N, 3]; N is read from x, so an out= array of another N is the caller's mistake."""
    sess = unirt.Session(model("dynamic_mlp"), backend="onnxruntime", pooled_outputs=pooled)
    x = np.ones((2, 8), np.float32)
    with pytest.raises(InputError, match=r"out\['probs'\]: expected shape \[2, 3\] for these inputs, got \[5, 3\]"):
        sess.run(x, out={"probs": np.empty((5, 3), np.float32)})
    with pytest.raises(InputError, match=r"out\['probs'\]: expected shape \[2, 3\].*got \[2, 4\]"):
        sess.run(x, out={"probs": np.empty((2, 4), np.float32)})
    probs = np.empty((2, 3), np.float32)
    assert sess.run(x, out={"probs": probs})["probs"] is probs
    np.testing.assert_allclose(probs, ort_reference(model("dynamic_mlp"), {"x": x})["probs"], rtol=1e-6)


def test_run_many_out_arrays_are_checked_past_the_batch_dim(tmp_path):
    """A request's out= array must match its H and W too, read from that request's input."""
    sess = unirt.Session(unirt.testing.batched_cnn(tmp_path / "conv_hw.onnx", size=None), backend="onnxruntime")
    xs = [np.ones((1, 3, 16, 16), np.float32), np.ones((2, 3, 8, 8), np.float32)]
    with pytest.raises(
        InputError,
        match=r"out\[1\]\['features'\]: expected shape \[2, 16, 8, 8\] for this "
        r"request, got \[2, 16, 16, 16\]",
    ):
        sess.run_many(xs, out=[None, {"features": np.empty((2, 16, 16, 16), np.float32)}])
    features = np.empty((2, 16, 8, 8), np.float32)
    many = sess.run_many(xs, out=[None, {"features": features}])
    assert many[1]["features"] is features
    np.testing.assert_allclose(features, sess.run(xs[1])["features"], rtol=1e-6)


def test_concurrent_runs_on_pooled_outputs(conv):
    sess = unirt.Session(conv, backend="onnxruntime", threads=1)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    expected = [ort_reference(conv, {"x": x})["features"] for x in xs]
    failures = []

    def worker(i: int) -> None:
        for _ in range(20):
            got = sess.run(xs[i])["features"]
            if not np.allclose(got, expected[i], rtol=1e-5, atol=1e-6):
                failures.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sess.pool.stats().bytes_live == 0


def test_pooled_outputs_option_is_checked(conv):
    with pytest.raises(UnsupportedOptionError, match="pooled_outputs"):
        unirt.Session(conv, backend="onnxruntime", pooled_outputs="yes")
    with pytest.raises(UnsupportedOptionError, match="pool must be a unirt.BufferPool"):
        unirt.Session(conv, backend="onnxruntime", pool=object())


def _gather_model(path):
    """y = table[idx]: [N, 64] float32, sized from idx's dim N. An index out of range is a real engine failure."""
    from onnx import TensorProto, helper, numpy_helper, save

    table = np.arange(10 * 64, dtype=np.float32).reshape(10, 64)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    save(m, str(path))
    return table


def test_a_real_engine_failure_is_raised_once_and_keeps_pooled_outputs(tmp_path, caplog, capfd):
    """Only BuffersRefusedError (the engine refusing unirt's output arrays) falls back to engine-allocated outputs;
    a failing run (an index out of range) is raised as it is: not run twice, pooling stays on."""
    table = _gather_model(tmp_path / "g.onnx")
    sess = unirt.Session(tmp_path / "g.onnx", backend="onnxruntime", pooled_outputs=True)
    pooled = sess._plan._sized
    assert pooled == ("y",)
    capfd.readouterr()
    with caplog.at_level("WARNING", logger="unirt.run_plan"):
        with pytest.raises(unirt.RunError) as info:
            sess.run({"idx": np.array([1, 99], np.int64)})
    assert not isinstance(info.value, unirt.BuffersRefusedError)
    assert capfd.readouterr().err.count("ExecuteKernel") == 1  # ONNX Runtime logs each failed run once: one run
    assert not any("refused outputs" in r.getMessage() for r in caplog.records)
    assert sess._plan._sized == pooled and sess._plan.batcher.writes_into
    idx = np.array([3, 0, 9], np.int64)
    np.testing.assert_array_equal(sess.run({"idx": idx})["y"], table[idx])


def test_the_engine_refusing_unirts_arrays_raises_buffers_refused(tmp_path):
    """ONNX Runtime given an output array of another shape than the run produces: the plugin says so with
    BuffersRefusedError (a RunError), which Session turns into engine-allocated outputs, once."""
    table = _gather_model(tmp_path / "g.onnx")
    sess = unirt.Session(tmp_path / "g.onnx", backend="onnxruntime")
    idx = np.array([1, 2], np.int64)
    with pytest.raises(unirt.BuffersRefusedError, match="onnxruntime"):
        sess._runner.run_into({"idx": idx}, ["y"], {"y": np.empty((3, 64), np.float32)})
    np.testing.assert_array_equal(sess.run({"idx": idx})["y"], table[idx])
