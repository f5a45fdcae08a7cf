"""Repository control (index, load with a config override, unload) and the control-mode rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from unirt.serve import ServeOptions, ServerThread
from unirt.serve.errors import NotFound
from unirt.testing import models


def _infer_http(client, name, rows=1):
    tensor = httpclient.InferInput("x", [rows, 8], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, 8), np.float32))
    return client.infer(name, [tensor])


@pytest.fixture
def control_server(tmp_path, add_model):
    add_model(tmp_path, "a", models.dynamic_mlp, 1)
    add_model(tmp_path, "b", models.dynamic_mlp, 1)
    options = ServeOptions(
        model_repository=tmp_path,
        http_port=0,
        grpc_port=0,
        metrics_port=None,
        model_control_mode="explicit",
        load_models=["a"],
        drain_timeout=5,
    )
    with ServerThread(options) as running:
        yield running, tmp_path


def test_explicit_load_unload_over_http(control_server):
    server, repo = control_server
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    try:
        assert client.is_server_ready()
        assert client.get_model_repository_index() == [{"name": "a", "version": "1", "state": "READY"}, {"name": "b"}]
        assert client.get_model_repository_index(query_params=None) and not client.is_model_ready("b")
        client.load_model("b")
        assert client.is_model_ready("b") and _infer_http(client, "b").as_numpy("probs").shape == (1, 3)
        # reload with an override config: no batching, instances 2
        client.load_model(
            "b", config=json.dumps({"max_batch_size": 0, "instance_group": [{"count": 2, "kind": "KIND_CPU"}]})
        )
        assert client.get_model_config("b")["max_batch_size"] == 0
        # a failed reload leaves the old version serving
        with pytest.raises(InferenceServerException, match=r"input\[0\].dims"):
            client.load_model(
                "b",
                config=json.dumps(
                    {"max_batch_size": 2, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [5]}]}
                ),
            )
        assert client.is_model_ready("b") and client.get_model_config("b")["max_batch_size"] == 0
        with pytest.raises(InferenceServerException, match=r"model_warmup\[0\].inputs: input 'x' is missing"):
            client.load_model("b", config=json.dumps({"model_warmup": [{"name": "w", "batch_size": 1}]}))
        # warm-up from a file in <model>/warmup/, and random data
        (repo / "b" / "warmup").mkdir()
        (repo / "b" / "warmup" / "x.bin").write_bytes(np.ones((2, 8), np.float32).tobytes())
        warm = {
            "name": "w",
            "batch_size": 2,
            "count": 2,
            "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [8], "input_data_file": "x.bin"}},
        }
        rand = {
            "name": "r",
            "batch_size": 1,
            "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [8], "random_data": True}},
        }
        client.load_model("b", config=json.dumps({"max_batch_size": 2, "model_warmup": [warm, rand]}))
        assert client.is_model_ready("b") and len(client.get_model_config("b")["model_warmup"]) == 2
        warm["inputs"]["x"]["input_data_file"] = "../../a/1/model.onnx"
        with pytest.raises(InferenceServerException, match="is outside"):
            client.load_model("b", config=json.dumps({"max_batch_size": 2, "model_warmup": [warm]}))
        warm["batch_size"], warm["inputs"]["x"]["input_data_file"] = 1, "x.bin"  # 64 bytes for 32
        with pytest.raises(InferenceServerException, match=r"model_warmup\[0\].inputs\[x\].input_data_file: .*32"):
            client.load_model("b", config=json.dumps({"max_batch_size": 2, "model_warmup": [warm]}))
        client.unload_model("b")
        assert not client.is_model_ready("b")
        with pytest.raises(InferenceServerException, match="not ready: unloaded") as info:
            _infer_http(client, "b")
        assert info.value.status() == "503"
        assert {
            "name": "b",
            "version": "1",
            "state": "UNAVAILABLE",
            "reason": "unloaded",
        } in client.get_model_repository_index()
        with pytest.raises(InferenceServerException, match="unknown model 'zzz'"):
            client.unload_model("zzz")
        with pytest.raises(InferenceServerException, match="no model named 'zzz'"):
            client.load_model("zzz")
        with pytest.raises(InferenceServerException, match="invalid model name"):
            client.load_model("a;rm -rf")
        with pytest.raises(InferenceServerException, match="no such endpoint"):
            client.load_model("../a")  # '/' is kept by the client's quoting: matches no route
    finally:
        client.close()


def test_explicit_load_unload_over_grpc(control_server):
    server, _ = control_server
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    try:
        client.load_model("b", config=json.dumps({"max_batch_size": 2}))
        assert client.is_model_ready("b") and client.get_model_config("b").config.max_batch_size == 2
        ready = client.get_model_repository_index().models
        assert {(m.name, m.state) for m in ready} >= {("a", "READY"), ("b", "READY")}
        client.unload_model("b")
        assert not client.is_model_ready("b")
    finally:
        client.close()


BAD_CONFIGS = [
    ("{not json", "config override"),
    ('{"max_batch_sise": 2}', "max_batch_sise"),
    ('{"input": [{"name": "x", "data_type": "TYPE_INT32", "dims": [8]}]}', r"input\[0\].data_type: TYPE_INT32"),
    ('{"backend": "python"}', "'python' is not served by unirt"),
    ('{"parameters": {"precision": {"string_value": "fp7"}}}', r"parameters\[precision\]"),
]


def test_a_load_that_fails_is_the_clients_error(control_server):
    """A bad config override (or any model that fails to load) answers 400 / INVALID_ARGUMENT, as Triton does,
    and the version already loaded goes on serving."""
    server, _ = control_server
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    try:
        for config, match in BAD_CONFIGS:
            with pytest.raises(InferenceServerException, match=match) as info:
                client.load_model("a", config=config)
            assert info.value.status() == "400", config
            with pytest.raises(InferenceServerException, match=match) as info:
                grpc.load_model("a", config=config)
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT", config
        assert _infer_http(client, "a").as_numpy("probs").shape == (1, 3)
    finally:
        client.close()
        grpc.close()


def test_a_backend_failure_while_running_is_still_500(tmp_path):
    """The other side of the line: inputs that pass every check but make the backend fail are the server's
    error (500 / INTERNAL), not the client's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "pairs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["L"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "H"])],
        [numpy_helper.from_array(np.array([2, -1], np.int64), "shape")],
    )
    path = tmp_path / "pairs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with ServerThread(ServeOptions(model=path, http_port=0, grpc_port=0, metrics_port=None)) as server:
        x = httpclient.InferInput("x", [3], "FP32")
        x.set_data_from_numpy(np.ones(3, np.float32))
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        try:
            with pytest.raises(InferenceServerException) as info:
                client.infer("pairs", [x])
            assert info.value.status() == "500"
            gx = grpcclient.InferInput("x", [3], "FP32")
            gx.set_data_from_numpy(np.ones(3, np.float32))
            with pytest.raises(InferenceServerException) as info:
                grpc.infer("pairs", [gx])
            assert info.value.status() == "StatusCode.INTERNAL"
            x = httpclient.InferInput("x", [4], "FP32")
            x.set_data_from_numpy(np.arange(4, dtype=np.float32))
            np.testing.assert_array_equal(client.infer("pairs", [x]).as_numpy("y"), [[0, 1], [2, 3]])
        finally:
            client.close()
            grpc.close()


def test_loading_an_unknown_model_leaves_no_trace(control_server):
    """A typo in a load request is a 404 and nothing more: the server stays ready, the index does not grow."""
    server, _ = control_server
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    try:
        index = client.get_model_repository_index()
        for name in ("typo", "typo2", "typo"):
            with pytest.raises(InferenceServerException, match=f"no model named '{name}'") as info:
                client.load_model(name)
            assert info.value.status() == "404"
        with pytest.raises(InferenceServerException, match="no model named 'typo3'") as info:
            grpc.load_model("typo3")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert client.is_server_ready() and grpc.is_server_ready()
        assert client.get_model_repository_index() == index
        with pytest.raises(InferenceServerException, match="unknown model 'typo'") as info:
            _infer_http(client, "typo")
        assert info.value.status() == "404"
    finally:
        client.close()
        grpc.close()


def test_startup_with_an_unknown_model_to_load_fails(tmp_path, add_model):
    add_model(tmp_path, "a", models.dynamic_mlp, 1)
    options = ServeOptions(
        model_repository=tmp_path,
        http_port=0,
        grpc_port=None,
        metrics_port=None,
        model_control_mode="explicit",
        load_models=["a", "b"],
    )
    with pytest.raises(NotFound, match=r"--load-model 'b': no such model in the repository; its models are: a"):
        ServerThread(options)


def test_control_mode_none_refuses_load_and_unload(repository):
    options = ServeOptions(
        model=repository / "mlp" / "2" / "model.onnx",
        model_name="single",
        http_port=0,
        grpc_port=None,
        metrics_port=None,
    )
    with ServerThread(options) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        try:
            assert client.is_server_ready() and client.get_model_metadata("single")["versions"] == ["1"]
            assert _infer_http(client, "single", 2).as_numpy("logits").shape == (2, 3)
            for call in (lambda: client.load_model("single"), lambda: client.unload_model("single")):
                with pytest.raises(InferenceServerException, match="model-control-mode=explicit"):
                    call()
        finally:
            client.close()
