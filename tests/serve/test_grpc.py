"""The gRPC v2 API through the real `tritonclient.grpc` client: same semantics as HTTP."""

from __future__ import annotations

import queue
import struct

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import unirt


def _input(name, array, datatype):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _reference(repository, name, version, feeds):
    with unirt.Session(repository / name / str(version) / "model.onnx", backend="onnxruntime") as sess:
        return sess.run(feeds)


def test_health_metadata_config(grpc_client):
    assert grpc_client.is_server_live()
    assert not grpc_client.is_server_ready()  # two models of the repository failed to load
    meta = grpc_client.get_server_metadata()
    assert meta.name == "unirt" and "system_shared_memory" in meta.extensions
    model = grpc_client.get_model_metadata("batched", "1")
    assert model.name == "batched" and model.versions == ["1", "2"] and model.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("x", "FP32", [-1, 8])]
    config = grpc_client.get_model_config("batched").config
    assert config.max_batch_size == 8 and list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.instance_group[0].count == 2
    assert grpc_client.is_model_ready("batched", "2") and not grpc_client.is_model_ready("garbage")


def test_infer_matches_session(grpc_client, repository):
    x = np.random.default_rng(10).standard_normal((4, 8)).astype(np.float32)
    result = grpc_client.infer(
        "mlp", [_input("x", x, "FP32")], request_id="g1", outputs=[grpcclient.InferRequestedOutput("probs")]
    )
    np.testing.assert_allclose(result.as_numpy("probs"), _reference(repository, "mlp", 2, {"x": x})["probs"], rtol=1e-6)
    assert result.get_response().id == "g1" and result.as_numpy("logits") is None


def test_multi_io_and_bytes(grpc_client, repository):
    rng = np.random.default_rng(11)
    feeds = {
        "a": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal((3, 4)).astype(np.float32),
        "idx": np.array([2, 0], np.int64),
        "scale": np.array(-1.5, np.float32),
    }
    result = grpc_client.infer("multi", [_input(k, v, "INT64" if k == "idx" else "FP32") for k, v in feeds.items()])
    expected = _reference(repository, "multi", 1, feeds)
    for name in expected:
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])
    words = np.array([b"a", "\u00fcnicode".encode(), b"longer text"], dtype=object)
    assert list(grpc_client.infer("strings", [_input("s", words, "BYTES")]).as_numpy("y")) == list(words)
    binary = np.array([b"\xff\x00binary"], dtype=object)  # refused rather than stored as "b'\\xff...'"
    with pytest.raises(InferenceServerException, match="BYTES element 0 is not UTF-8 text"):
        grpc_client.infer("strings", [_input("s", binary, "BYTES")])


def test_errors_carry_grpc_codes(grpc_client):
    x = _input("x", np.zeros((1, 8), np.float32), "FP32")
    cases = [
        (lambda: grpc_client.infer("nope", [x]), "StatusCode.NOT_FOUND", "unknown model"),
        (
            lambda: grpc_client.infer("mlp", [_input("x", np.zeros((1, 5), np.float32), "FP32")]),
            "StatusCode.INVALID_ARGUMENT",
            r"expected \[-1, 8\]",
        ),
        (lambda: grpc_client.infer("mlp", [x], model_version="1"), "StatusCode.NOT_FOUND", "no version 1"),
        (lambda: grpc_client.infer("broken_config", [x]), "StatusCode.UNAVAILABLE", "not ready"),
        (lambda: grpc_client.infer("mlp", [x], sequence_id=3), "StatusCode.UNIMPLEMENTED", "sequence"),
        (lambda: grpc_client.get_model_metadata("../etc"), "StatusCode.INVALID_ARGUMENT", "invalid model name"),
        (lambda: grpc_client.get_cuda_shared_memory_status(), "StatusCode.UNIMPLEMENTED", "CUDA"),
    ]
    for call, code, match in cases:
        with pytest.raises(InferenceServerException, match=match) as info:
            call()
        assert info.value.status() == code


def test_typed_contents_instead_of_raw_bytes(server, repository):
    """Clients other than tritonclient may send InferTensorContents (fp32_contents, ...): same answer."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    x = np.random.default_rng(12).standard_normal((2, 8)).astype(np.float32)
    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="mlp")
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 8])
        tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
        response = stub.ModelInfer(request, timeout=30)
        names = [o.name for o in response.outputs]
        probs = np.frombuffer(response.raw_output_contents[names.index("probs")], np.float32).reshape(2, 3)
        np.testing.assert_allclose(probs, _reference(repository, "mlp", 2, {"x": x})["probs"], rtol=1e-6)
        tensor.contents.fp32_contents.append(1.0)  # 17 values for 16 elements
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "the data has 17" in info.value.details()


def test_claimed_shape_is_checked_against_the_data_before_allocating(server):
    """gRPC's int64 shape: a huge BYTES count with a few bytes of data, or a shape whose product no array could
    have, is INVALID_ARGUMENT at once, not a count-sized allocation."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.ports['grpc']}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for model, name, datatype, shape, match in (
            ("strings_flat", "s", "BYTES", [10**9], "the data has 5"),
            ("strings_flat", "s", "BYTES", [2**62], "too large"),
            ("images", "x", "FP32", [0, 3, 2**62, 2**62], "too large"),
            ("images", "x", "FP32", [1, 3, 2**40, 2**40], "too large"),
        ):
            request = service_pb2.ModelInferRequest(model_name=model)
            request.inputs.add(name=name, datatype=datatype, shape=shape)
            request.raw_input_contents.append(struct.pack("<I", 1) + b"a")
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and match in info.value.details()
        request = service_pb2.ModelInferRequest(model_name="strings_flat")  # typed contents: checked the same
        request.inputs.add(name="s", datatype="BYTES", shape=[2**62]).contents.bytes_contents.append(b"a")
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "too large" in info.value.details()


def test_stream_infer(grpc_client, repository):
    answers: queue.Queue = queue.Queue()
    grpc_client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        xs = [np.random.default_rng(20 + i).standard_normal((1, 8)).astype(np.float32) for i in range(5)]
        for i, x in enumerate(xs):
            grpc_client.async_stream_infer("mlp", [_input("x", x, "FP32")], request_id=str(i))
        grpc_client.async_stream_infer("nope", [_input("x", xs[0], "FP32")], request_id="bad")
        got, errors = {}, []
        for _ in range(6):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("probs")
    finally:
        grpc_client.stop_stream()
    assert len(errors) == 1 and "unknown model" in errors[0]
    for i, x in enumerate(xs):
        np.testing.assert_allclose(got[str(i)], _reference(repository, "mlp", 2, {"x": x})["probs"], rtol=1e-6)


def test_statistics_and_index(grpc_client):
    grpc_client.infer("mlp", [_input("x", np.zeros((2, 8), np.float32), "FP32")])
    stats = grpc_client.get_inference_statistics("mlp").model_stats[0]
    assert stats.name == "mlp" and stats.inference_count >= 2 and stats.execution_count >= 1
    assert stats.inference_stats.success.count >= 1 and stats.inference_stats.compute_infer.ns > 0
    index = grpc_client.get_model_repository_index()
    states = {(m.name, m.version): m.state for m in index.models}
    assert states[("mlp", "2")] == "READY" and states[("garbage", "1")] == "UNAVAILABLE"
