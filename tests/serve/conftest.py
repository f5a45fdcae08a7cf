"""A real model repository (models built with onnx.helper) and a real server on free loopback ports, shared by
the serve tests; every server a test starts is stopped by its fixture."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest

from unirt.testing import models

BATCHED_CONFIG = """
name: "batched"
backend: "onnxruntime"
max_batch_size: 8
version_policy { all {} }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 8 ] } ]
output [ { name: "probs" data_type: TYPE_FP32 dims: [ 3 ] },
         { name: "logits" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 200000 }
instance_group [ { count: 2 kind: KIND_CPU } ]
model_warmup [ { name: "zeros" batch_size: 2
                 inputs { key: "x" value { data_type: TYPE_FP32 dims: [ 8 ] zero_data: true } } } ]
"""

STATIC_CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { max_queue_delay_microseconds: 100000 }
"""

RESHAPED_CONFIG = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2, 4 ] reshape { shape: [ 8 ] } } ]
"""

CLASSIFY_CONFIG = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 8 ] } ]
output [ { name: "probs" data_type: TYPE_FP32 dims: [ 3 ] label_filename: "labels.txt" } ]
"""

UNBATCHED_CONFIG = "max_batch_size: 0\n"

PAIRS_CONFIG = """
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] reshape { shape: [ 2, -1 ] } } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] reshape { shape: [ 2, -1 ] } } ]
"""

BATCHED_PAIRS_CONFIG = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] reshape { shape: [ 2, -1 ] } } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2, -1 ] } ]
"""

BROKEN_CONFIG = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 7 ] } ]
"""


def doubler(path: Path, shape: list) -> Path:
    """y = 2 * x, float32 of `shape` (ints and dim names)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "doubler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.array(2, np.float32), "two")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _model(repo: Path, name: str, builder, version: int = 1, config: str | None = None, **kw) -> Path:
    d = repo / name / str(version)
    d.mkdir(parents=True, exist_ok=True)
    builder(d / "model.onnx", **kw)
    if config is not None:
        (repo / name / "config.pbtxt").write_text(config)
    return d / "model.onnx"


def build_repository(repo: Path) -> Path:
    _model(repo, "mlp", models.dynamic_mlp, 1, seed=1)
    _model(repo, "mlp", models.dynamic_mlp, 2, seed=2)
    _model(repo, "batched", models.dynamic_mlp, 1, BATCHED_CONFIG, seed=3)
    _model(repo, "batched", models.dynamic_mlp, 2, seed=4)
    _model(repo, "multi", models.multi_io)
    _model(repo, "strings", models.string_concat)
    _model(repo, "strings_flat", models.string_concat, 1, UNBATCHED_CONFIG)  # any number of elements
    _model(repo, "images", models.unknown_dims, 1, UNBATCHED_CONFIG)  # float32[?, 3, H, W]
    _model(repo, "static", models.matmul_relu, 1, STATIC_CONFIG, n=4)
    _model(repo, "reshaped", models.dynamic_mlp, 1, RESHAPED_CONFIG)
    _model(repo, "classify", models.dynamic_mlp, 1, CLASSIFY_CONFIG)
    _model(repo, "pairs", doubler, 1, PAIRS_CONFIG, shape=[2, "W"])
    _model(repo, "batched_pairs", doubler, 1, BATCHED_PAIRS_CONFIG, shape=["N", 2, "W"])
    (repo / "classify" / "labels.txt").write_text("cat\ndog\nbird\n")
    _model(repo, "broken_config", models.dynamic_mlp, 1, BROKEN_CONFIG)
    garbage = repo / "garbage" / "1"
    garbage.mkdir(parents=True)
    (garbage / "model.onnx").write_bytes(b"\x08\x07this is not an onnx model")
    return repo


@pytest.fixture(scope="session")
def add_model():
    """add_model(repo, name, builder, version=1, config=None, **builder_args) -> the model file written."""
    return _model


@pytest.fixture(scope="session")
def repository(tmp_path_factory) -> Path:
    return build_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
def server(repository):
    """One server for the protocol tests: explicit model control (load/unload allowed), every model loaded."""
    from unirt.serve import ServeOptions, ServerThread

    options = ServeOptions(
        model_repository=repository,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        model_control_mode="explicit",
        load_models=["*"],
        drain_timeout=10,
    )
    with ServerThread(options) as running:
        yield running


@pytest.fixture(scope="session")
def http_client(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}", network_timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc_client(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    yield client
    client.close()


class RawHTTP:
    """Plain HTTP requests, for what tritonclient would never send (malformed bodies, odd paths)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None
    ) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def error(
        self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None, status: int = 400
    ) -> str:
        got, _, data = self.request(method, path, body, headers)
        assert got == status, (got, data)
        return json.loads(data)["error"]


@pytest.fixture(scope="session")
def raw_http_to():
    """raw_http_to(port) -> RawHTTP for a server a test starts itself."""
    return RawHTTP


@pytest.fixture(scope="session")
def raw_http(server) -> RawHTTP:
    return RawHTTP(server.ports["http"])
