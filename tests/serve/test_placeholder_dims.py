"""`unirt serve` on a model whose dims are exporters' placeholders (paddle2onnx's [-1, 3, "?", "?"]): its metadata
says -1 (any size) for each, and HTTP inference at any size answers what ONNX Runtime answers by hand (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
httpclient = pytest.importorskip("tritonclient.http")
from onnx import TensorProto, helper, numpy_helper

from unirt.serve import ServeOptions, ServerThread

BATCHED = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4, -1, -1 ] } ]
"""


def placeholder_conv(path, dims_in=(-1, 3, "?", "?"), dims_out=("?", 4, "", "-1")) -> None:
    rng = np.random.default_rng(11)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])
    for vi, dims in ((x, dims_in), (y, dims_out)):
        vi.type.tensor_type.shape.ClearField("dim")
        for d in dims:
            dim = vi.type.tensor_type.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv", [x], [y], [w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))


def _input(array):
    tensor = httpclient.InferInput("x", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=True)
    return tensor


def test_http_inference_on_placeholder_dims(tmp_path, add_model):
    add_model(tmp_path, "paddle", placeholder_conv, 1)
    add_model(tmp_path, "paddle_batched", placeholder_conv, 1, BATCHED)
    options = ServeOptions(model_repository=tmp_path, http_port=0, grpc_port=None, metrics_port=None)
    rng = np.random.default_rng(0)
    with ServerThread(options) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}", network_timeout=60)
        try:
            assert client.is_server_ready()
            meta = client.get_model_metadata("paddle")
            assert meta["inputs"][0]["shape"] == [-1, 3, -1, -1] and meta["outputs"][0]["shape"] == [-1, 4, -1, -1]
            assert client.get_model_config("paddle").get("max_batch_size", 0) == 0  # "?" at dim 0 is no batch name
            for name in ("paddle", "paddle_batched"):
                reference = ort.InferenceSession(
                    str(tmp_path / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
                )
                for shape in ((1, 3, 48, 192), (2, 3, 20, 36)):
                    x = rng.standard_normal(shape).astype(np.float32)
                    got = client.infer(name, [_input(x)]).as_numpy("y")
                    np.testing.assert_allclose(got, reference.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)
        finally:
            client.close()
