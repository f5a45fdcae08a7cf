"""The Ray replica (no Ray instance needed) on exporters' placeholder dims and on a model that does not batch
(issue 13 items 1 and 7): its spec says -1 for "?", and merged requests are answered as ONNX Runtime answers each."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from unirt.integrations.ray.options import ReplicaOptions
from unirt.integrations.ray.replica import Replica


def _save(graph, path) -> str:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return str(path)


def test_replica_on_placeholder_dims(tmp_path):
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])
    for vi, dims in ((x, ["?", 3, "?", "?"]), (y, ["?", 4, "?", "?"])):
        vi.type.tensor_type.shape.ClearField("dim")
        for d in dims:
            dim = vi.type.tensor_type.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d
    x.type.tensor_type.shape.dim[0].ClearField("dim_param")
    x.type.tensor_type.shape.dim[0].dim_value = -1  # paddle2onnx's [-1, 3, "?", "?"]
    path = _save(
        helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv", [x], [y], [w]),
        tmp_path / "paddle.onnx",
    )
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    requests = [{"x": rng.standard_normal(s).astype(np.float32)} for s in ((1, 3, 48, 192), (1, 3, 20, 36))]
    replica = Replica(ReplicaOptions(path, backend="onnxruntime"))
    try:
        assert list(replica.spec.inputs[0].dims) == [-1, 3, -1, -1] and replica.spec.max_batch_size == 0
        for request, got in zip(requests, replica.run_batch(requests)):
            np.testing.assert_allclose(got["y"], ref.run(None, request)[0], rtol=1e-4, atol=1e-4)
        assert replica.stats()["failed"] == 0
    finally:
        replica.close()


def test_replica_merges_requests_a_model_cannot_batch(tmp_path):
    """dim 0 named alike on input and output, but the output's rows are the input's nonzero entries: the merged
    run_many falls back to one run per request, and every request gets its own right answer."""
    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Transpose", ["nz"], ["y"], perm=[1, 0])],
        "nonzero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 2])],
    )
    path = _save(graph, tmp_path / "nonzero.onnx")
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    requests = [{"x": np.ones((n, 4), np.float32)} for n in (2, 3, 1)]
    replica = Replica(ReplicaOptions(path, backend="onnxruntime"))
    try:
        assert replica.session.batch.batched
        for request, got in zip(requests, replica.run_batch(requests)):
            np.testing.assert_array_equal(got["y"], ref.run(None, request)[0])
        stats = replica.stats()
        assert stats["failed"] == 0 and stats["session"]["unbatched_requests"] == 3
    finally:
        replica.close()
