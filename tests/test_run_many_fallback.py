"""`run_many` never fails where `run` works (issue 13 item 7): a model whose outputs do not keep the batch rows
(declared [N, seqlen], really rank 3 with one row whatever the batch) runs its requests one by one, counted in
`batch_stats().unbatched_requests` and warned once per session. Real ONNX Runtime on models built with onnx.helper."""

from __future__ import annotations

import numpy as np
import pytest

import unirt

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper


def rank_lie(path, batch, reshape) -> str:
    """y declared [batch, seqlen]; really Reshape(x, `reshape`), rank 3, behind an If whose branches differ in
    rank, so that no shape inference (ONNX's, ORT's) can see it: what the file says is all unirt knows."""
    then = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s3"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array(reshape, np.int64), "s3")],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "low"], ["c"]),  # always true on finite inputs
        helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other),
    ]
    graph = helper.make_graph(
        nodes,
        "rank_lie",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, "seqlen"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, "seqlen"])],
        initializer=[numpy_helper.from_array(np.array(-1e30, np.float32), "low")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return str(path)


def _requests(rows, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((r, n)).astype(np.float32)} for r, n in zip(rows, lengths)]


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("batch,reshape", [("N", [1, -1, 2]), (1, [2, 1, -1])], ids=["dynamic", "static1"])
def test_run_many_runs_one_by_one_where_packing_fails(tmp_path, caplog, batch, reshape, pooled):
    path = rank_lie(tmp_path / "m.onnx", batch, reshape)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    sess = unirt.Session(path, backend="onnxruntime", pooled_outputs=pooled)
    assert sess.batch.batched  # the declared shapes say so; the real outputs do not keep the rows
    reqs = _requests([1, 1, 1, 1], [8, 8, 6, 8])
    for r in reqs:  # run works on each ...
        np.testing.assert_array_equal(sess.run(r)["y"], ref.run(None, r)[0])
    with caplog.at_level("WARNING", logger="unirt.batch_runner"):
        first = sess.run_many(reqs)  # ... so run_many does too
        second = sess.run_many(reqs)
    for r, a, b in zip(reqs, first, second):
        expected = ref.run(None, r)[0]
        assert expected.ndim == 3
        np.testing.assert_array_equal(a["y"], expected)
        np.testing.assert_array_equal(b["y"], expected)
    assert sum("runs run_many's requests one by one" in rec.getMessage() for rec in caplog.records) == 1
    stats = sess.batch_stats()
    assert stats.unbatched_requests == 8
    assert stats.requests == 8 and stats.backend_runs == 8 and stats.rows == 8


def test_max_batch_in_the_fallback(tmp_path):
    path = rank_lie(tmp_path / "m.onnx", "N", [1, -1, 2])
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    sess = unirt.Session(path, backend="onnxruntime", max_batch=2)
    reqs = _requests([2, 1, 1], [4, 4, 4], seed=3)
    results = sess.run_many(reqs)
    for r, got in zip(reqs, results):
        np.testing.assert_array_equal(got["y"], ref.run(None, r)[0])
    assert sess.batch_stats().unbatched_requests == 3
    # a request above max_batch: run() splits it, which this model cannot take; run_many fails alike
    big = _requests([3], [4], seed=4)[0]
    with pytest.raises(unirt.RunError, match="does not keep the batch dim"):
        sess.run(big)
    with pytest.raises(unirt.RunError, match="does not keep the batch dim"):
        sess.run_many([big])


def test_models_that_batch_are_not_affected(tmp_path):
    """The same graph whose real output keeps the rows (Reshape [0, -1, 2]): packed into one run as before."""
    path = rank_lie(tmp_path / "m.onnx", "N", [0, -1, 2])
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    sess = unirt.Session(path, backend="onnxruntime")
    reqs = _requests([1, 2, 1], [6, 6, 6], seed=5)
    for r, got in zip(reqs, sess.run_many(reqs)):
        np.testing.assert_array_equal(got["y"], ref.run(None, r)[0])
    stats = sess.batch_stats()
    assert stats.backend_runs == 1 and stats.unbatched_requests == 0
