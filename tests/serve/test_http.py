"""The HTTP/REST v2 API through the real `tritonclient.http` client (and raw requests for malformed input)."""

from __future__ import annotations

import gzip
import json
import struct
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import unirt
from unirt.serve import ServeOptions, ServerThread
from unirt.testing import models


def _input(name, array, datatype, binary=True):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _reference(repository, name, version, feeds):
    with unirt.Session(repository / name / str(version) / "model.onnx", backend="onnxruntime") as sess:
        return sess.run(feeds)


def test_health_and_server_metadata(http_client):
    assert http_client.is_server_live()
    assert not http_client.is_server_ready()  # strict readiness: broken_config and garbage failed to load
    meta = http_client.get_server_metadata()
    assert meta["name"] == "unirt" and meta["version"] == unirt.__version__
    assert {"binary_tensor_data", "system_shared_memory", "model_repository", "statistics"} <= set(meta["extensions"])


def test_model_metadata_and_autocompleted_config(http_client):
    meta = http_client.get_model_metadata("mlp")
    assert meta == {
        "name": "mlp",
        "versions": ["2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 8]}],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "probs", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    config = http_client.get_model_config("mlp")
    # Triton's auto-complete: a batchable model gets the default max_batch_size and the dynamic batcher
    assert config["max_batch_size"] == 4 and "dynamic_batching" in config
    assert config["input"][0]["dims"] == [8] and config["input"][0]["data_type"] == "TYPE_FP32"
    assert http_client.is_model_ready("mlp") and http_client.is_model_ready("mlp", "2")
    assert not http_client.is_model_ready("mlp", "1")  # version_policy default: latest 1
    assert not http_client.is_model_ready("no_such_model")


@pytest.mark.parametrize("binary", [True, False])
def test_infer_matches_session(http_client, repository, binary):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    outputs = [
        httpclient.InferRequestedOutput("probs", binary_data=binary),
        httpclient.InferRequestedOutput("logits", binary_data=binary),
    ]
    result = http_client.infer("mlp", [_input("x", x, "FP32", binary)], outputs=outputs, request_id="r-7")
    expected = _reference(repository, "mlp", 2, {"x": x})
    np.testing.assert_allclose(result.as_numpy("probs"), expected["probs"], rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("logits"), expected["logits"], rtol=1e-6)
    response = result.get_response()
    assert response["id"] == "r-7" and response["model_version"] == "2"


def test_big_json_request_is_read_off_the_loop_by_the_core_and_matches_session(http_client, repository):
    """An all-JSON body past PARSE_IN_THREAD_MIN: parsed on a worker thread, its numbers read by the C++ core."""
    from unirt.serve.http_app import PARSE_IN_THREAD_MIN

    x = np.random.default_rng(5).standard_normal((1, 3, 96, 128)).astype(np.float32)
    assert x.size * 12 > PARSE_IN_THREAD_MIN  # each float is written with 12+ characters
    result = http_client.infer("images", [_input("x", x, "FP32", False)])
    expected = _reference(repository, "images", 1, {"x": x})
    assert expected
    for name, value in expected.items():
        np.testing.assert_allclose(result.as_numpy(name), value, rtol=1e-6)


def test_infer_specific_version_and_all_outputs_binary_by_default(http_client, repository):
    x = np.ones((2, 8), np.float32)
    result = http_client.infer("mlp", [_input("x", x, "FP32")], model_version="2")
    assert [o["name"] for o in result.get_response()["outputs"]] == ["logits", "probs"]
    np.testing.assert_allclose(
        result.as_numpy("logits"), _reference(repository, "mlp", 2, {"x": x})["logits"], rtol=1e-6
    )
    with pytest.raises(InferenceServerException, match="has no version 1") as info:
        http_client.infer("mlp", [_input("x", x, "FP32")], model_version="1")
    assert info.value.status() == "404"


def test_multi_io_scalar_int_and_bool(http_client, repository):
    rng = np.random.default_rng(1)
    feeds = {
        "a": rng.standard_normal((2, 4)).astype(np.float32),
        "b": rng.standard_normal((2, 4)).astype(np.float32),
        "idx": np.array([1, 0, 1], np.int64),
        "scale": np.array(2.5, np.float32),
    }
    inputs = [
        _input("a", feeds["a"], "FP32"),
        _input("b", feeds["b"], "FP32", binary=False),
        _input("idx", feeds["idx"], "INT64", binary=False),
        _input("scale", feeds["scale"], "FP32"),
    ]
    result = http_client.infer("multi", inputs)
    expected = _reference(repository, "multi", 1, feeds)
    for name in ("sum", "picked", "count", "mask"):
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])
    assert result.as_numpy("mask").dtype == np.bool_ and result.as_numpy("count").shape == ()


def test_bytes_tensors(http_client):
    values = np.array([b"hello", "h\u00e9llo".encode(), b""], dtype=object)
    for binary in (True, False):
        out = http_client.infer(
            "strings",
            [_input("s", values, "BYTES", binary)],
            outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)],
        )
        got = list(out.as_numpy("y"))
        assert got == (list(values) if binary else [v.decode() for v in values])  # JSON carries BYTES as text


def test_compressed_request_and_response(http_client, repository):
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    for algorithm in ("gzip", "deflate"):
        result = http_client.infer(
            "mlp",
            [_input("x", x, "FP32")],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        np.testing.assert_allclose(
            result.as_numpy("probs"), _reference(repository, "mlp", 2, {"x": x})["probs"], rtol=1e-6
        )


def test_reshape_and_static_batch_padding(http_client, repository):
    x = np.random.default_rng(3).standard_normal((3, 2, 4)).astype(np.float32)
    out = http_client.infer("reshaped", [_input("x", x, "FP32")]).as_numpy("probs")
    np.testing.assert_allclose(out, _reference(repository, "reshaped", 1, {"x": x.reshape(3, 8)})["probs"], rtol=1e-6)
    # the static model's batch dim is fixed at 4: one row is padded to 4 and the answer is that row's
    row = np.random.default_rng(4).standard_normal((1, 4)).astype(np.float32)
    out = http_client.infer("static", [_input("x", row, "FP32")]).as_numpy("y")
    full = np.concatenate([row, np.zeros((3, 4), np.float32)])
    np.testing.assert_allclose(out, _reference(repository, "static", 1, {"x": full})["y"][:1], rtol=1e-6)


def test_reshape_the_request_cannot_fill_is_400(http_client):
    """A config `reshape` with a -1 takes any multiple of its fixed sizes; other sizes are the request's mistake
    (400 naming the input, its shape and the reshape), not a backend failure."""
    x = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(http_client.infer("pairs", [_input("x", x, "FP32")]).as_numpy("y"), 2 * x)
    rows = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(
        http_client.infer("batched_pairs", [_input("x", rows, "FP32")]).as_numpy("y"), 2 * rows.reshape(2, 2, 3)
    )
    before = http_client.get_inference_statistics("pairs")["model_stats"][0]["inference_stats"]["fail"]["count"]
    for name, bad, match in (
        (
            "pairs",
            np.ones(3, np.float32),
            r"shape \[3\] \(3 elements\) cannot be reshaped to "
            r"\[2, -1\]",
        ),
        (
            "batched_pairs",
            np.ones((2, 5), np.float32),
            r"shape \[2, 5\] \(10 elements\) cannot "
            r"be reshaped to \[2, 2, -1\]",
        ),
    ):
        with pytest.raises(
            InferenceServerException, match=rf"input 'x': {match} .*reshape {{ shape: \[2, -1\] }}"
        ) as info:
            http_client.infer(name, [_input("x", bad, "FP32")])
        assert info.value.status() == "400"
    stats = http_client.get_inference_statistics("pairs")["model_stats"][0]["inference_stats"]
    assert stats["fail"]["count"] == before + 1


def test_classification(http_client, repository):
    x = np.random.default_rng(5).standard_normal((2, 8)).astype(np.float32)
    result = http_client.infer(
        "classify", [_input("x", x, "FP32")], outputs=[httpclient.InferRequestedOutput("probs", class_count=2)]
    )
    probs = _reference(repository, "classify", 1, {"x": x})["probs"]
    labels = ["cat", "dog", "bird"]
    got = result.as_numpy("probs")
    assert got.shape == (2, 2)
    for row, p in zip(got, probs):
        top = np.argsort(-p)[:2]
        assert [v.decode().split(":")[1:] for v in row] == [[str(i), labels[i]] for i in top]
        np.testing.assert_allclose([float(v.decode().split(":")[0]) for v in row], p[top], rtol=1e-5)


@pytest.mark.parametrize(
    "shape,datatype,match",
    [
        ([3, 7], "FP32", r"shape \[3, 7\], expected \[-1, 8\]"),
        ([3, 8], "FP64", "datatype FP64, expected FP32"),
        ([9, 8], "FP32", r"batch size 9 is outside 1..max_batch_size \(4\)"),
        ([8], "FP32", "the batch dim first"),
    ],
)
def test_wrong_shapes_and_datatypes_are_400(http_client, shape, datatype, match):
    dtype = np.float64 if datatype == "FP64" else np.float32
    with pytest.raises(InferenceServerException, match=match) as info:
        http_client.infer("mlp", [_input("x", np.zeros(shape, dtype), datatype)])
    assert info.value.status() == "400"


def test_unknown_model_input_and_output(http_client):
    x = _input("x", np.zeros((1, 8), np.float32), "FP32")
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as info:
        http_client.infer("nope", [x])
    assert info.value.status() == "404"
    with pytest.raises(InferenceServerException, match="unexpected input 'z'"):
        http_client.infer("mlp", [x, _input("z", np.zeros((1, 8), np.float32), "FP32")])
    with pytest.raises(InferenceServerException, match="unexpected output 'nah'"):
        http_client.infer("mlp", [x], outputs=[httpclient.InferRequestedOutput("nah")])
    with pytest.raises(InferenceServerException, match="missing input"):
        http_client.infer("multi", [_input("a", np.zeros((1, 4), np.float32), "FP32")])


def test_failed_models_report_why_and_others_serve(http_client):
    index = {(row["name"], row.get("version")): row for row in http_client.get_model_repository_index()}
    assert index[("mlp", "2")]["state"] == "READY"
    broken = index[("broken_config", "1")]
    assert broken["state"] == "UNAVAILABLE" and "input[0].dims[0] is 7" in broken["reason"]
    assert "garbage" in index[("garbage", "1")]["reason"] or "onnx" in index[("garbage", "1")]["reason"]
    with pytest.raises(InferenceServerException, match="not ready") as info:
        http_client.infer("broken_config", [_input("x", np.zeros((1, 8), np.float32), "FP32")])
    assert info.value.status() == "503"


def test_malformed_json_and_framing(raw_http):
    infer = "/v2/models/mlp/infer"
    assert "malformed JSON" in raw_http.error("POST", infer, b"{not json")
    assert "expected a JSON object" in raw_http.error("POST", infer, b"[1, 2]")
    assert "'inputs' must be a list" in raw_http.error("POST", infer, b"{}")
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "parameters": {"binary_data_size": 32}}]}
    ).encode()
    assert "runs past" in raw_http.error(
        "POST", infer, header + b"\0" * 16, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert "not claimed" in raw_http.error(
        "POST", infer, header + b"\0" * 40, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert "outside the body" in raw_http.error(
        "POST", infer, header, {"Inference-Header-Content-Length": str(len(header) + 5)}
    )
    assert "must be an integer" in raw_http.error("POST", infer, header, {"Inference-Header-Content-Length": "x"})
    data = json.dumps({"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [1.0] * 7}]})
    assert "has 8 elements, the data has 7" in raw_http.error("POST", infer, data)
    data = json.dumps({"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": ["a"] * 8}]})
    assert "cannot read the JSON data as FP32" in raw_http.error("POST", infer, data)
    data = json.dumps({"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [1e300] + [0.0] * 7}]})
    assert "input 'x': cannot read the JSON data as FP32: value 1e+300 is outside the range of FP32" in raw_http.error(
        "POST", infer, data
    )  # not silently Infinity
    data = json.dumps({"inputs": [{"name": "x", "shape": [1, -8], "datatype": "FP32", "data": []}]})
    assert "non-negative integers" in raw_http.error("POST", infer, data)
    assert "not valid gzip" in raw_http.error("POST", infer, b"plain", {"Content-Encoding": "gzip"})
    assert "Content-Encoding 'br'" in raw_http.error("POST", infer, b"{}", {"Content-Encoding": "br"})


@pytest.mark.parametrize("count", [10**9, 10**11, 2**62, 2**70])
def test_claimed_shape_is_checked_against_the_data_before_allocating(raw_http, count):
    """A few bytes claiming a huge BYTES tensor are refused at once (no count-sized allocation); so are shapes
    no array could have, whatever the data source."""
    raw = struct.pack("<I", 1) + b"a"
    header = json.dumps(
        {"inputs": [{"name": "s", "shape": [count], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()
    start = time.perf_counter()
    error = raw_http.error(
        "POST", "/v2/models/strings_flat/infer", header + raw, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert time.perf_counter() - start < 5
    assert "input 's'" in error and ("the data has 5" in error or "too large" in error), error
    for data in ([], [1.0]):
        body = json.dumps({"inputs": [{"name": "x", "shape": [0, 3, count, count], "datatype": "FP32", "data": data}]})
        assert "too large" in raw_http.error("POST", "/v2/models/images/infer", body)
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [1, 3, count, count], "datatype": "FP32", "parameters": {"binary_data_size": 4}}
            ]
        }
    ).encode()
    assert "too large" in raw_http.error(
        "POST", "/v2/models/images/infer", header + b"\0" * 4, {"Inference-Header-Content-Length": str(len(header))}
    )


def test_body_size_limit_and_bombs(repository, raw_http_to):
    limit = 1 << 20
    options = ServeOptions(
        model=repository / "mlp" / "2" / "model.onnx",
        http_port=0,
        grpc_port=None,
        metrics_port=None,
        max_request_bytes=limit,
    )
    with ServerThread(options) as small:
        raw = raw_http_to(small.ports["http"])
        status, headers, body = raw.request(
            "POST", "/v2/models/model/infer", b"\0" * 1024, {"Content-Length": str(limit + 1)}
        )
        assert status == 413 and "exceeds the server's limit" in json.loads(body)["error"]
        assert headers.get("connection") == "close"
        chunks = iter([b"\0" * (limit // 2)] * 2 + [b"\0" * 16])  # chunked, no length given: counted as read
        assert "exceeds the server's limit" in raw.error("POST", "/v2/models/model/infer", chunks, status=413)
        bomb = gzip.compress(b"\0" * (limit * 8))  # small on the wire, over the limit once inflated
        assert len(bomb) < limit
        assert "decompressed request body exceeds" in raw.error(
            "POST", "/v2/models/model/infer", bomb, {"Content-Encoding": "gzip"}, status=413
        )
        assert raw.request("GET", "/v2/health/live")[0] == 200  # and the server carries on


def test_client_vanishing_mid_body_leaves_the_server_serving(server, http_client, caplog):
    import socket

    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.ports["http"]), timeout=10) as sock:
            sock.sendall(b'POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"inp')
    assert http_client.is_server_live() and http_client.is_model_ready("mlp")
    assert not [r for r in caplog.records if r.levelname == "ERROR" and "internal error" in r.getMessage()]


def test_model_names_cannot_leave_the_repository(raw_http):
    for path in ("/v2/models/..%2F..%2Fetc/config", "/v2/models/.hidden/config", "/v2/models/%2e%2e/config"):
        status, _, body = raw_http.request("GET", path)
        assert status in (400, 404) and "error" in json.loads(body)
    assert "invalid model name" in raw_http.error("GET", "/v2/models/.hidden/config")
    assert "invalid model version" in raw_http.error("GET", "/v2/models/mlp/versions/x1/config")
    assert "no such endpoint" in raw_http.error("GET", "/v2/nothing/here", status=404)
    assert "not allowed" in raw_http.error("GET", "/v2/models/mlp/infer", status=405)


def test_statistics_count_inferences_and_executions(http_client):
    x = _input("x", np.zeros((3, 8), np.float32), "FP32")
    before = http_client.get_inference_statistics("mlp")["model_stats"][0]
    http_client.infer("mlp", [x])
    after = http_client.get_inference_statistics("mlp", "2")["model_stats"][0]
    assert after["name"] == "mlp" and after["version"] == "2"
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] - before["execution_count"] == 1
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert any(b["batch_size"] == 3 for b in after["batch_stats"])
    every = http_client.get_inference_statistics()["model_stats"]
    assert {"mlp", "batched", "multi"} <= {s["name"] for s in every}
    with pytest.raises(InferenceServerException, match="unknown model"):
        http_client.get_inference_statistics("nope")


def test_cuda_shared_memory_is_refused_clearly(http_client):
    with pytest.raises(InferenceServerException, match="CUDA shared memory is not supported"):
        http_client.get_cuda_shared_memory_status()


def _usable(backend):
    from unirt import registry

    found = registry.availability(backend)
    return pytest.param(backend, marks=pytest.mark.skipif(not found.available, reason=f"{backend}: {found.reason}"))


@pytest.mark.parametrize("backend", [_usable("openvino"), _usable("ncnn")])
def test_backend_that_converts_onnx_serves_a_model_onnx(tmp_path, add_model, backend):
    """`backend: "ncnn"` (or openvino, mnn) with only a model.onnx: the Session converts it on load, so the
    repository takes model.onnx when the backend's own files are not there."""
    path = add_model(tmp_path, "m", models.dynamic_mlp, 1, f'backend: "{backend}"', seed=7)
    x = np.random.default_rng(7).standard_normal((2, 8)).astype(np.float32)
    options = ServeOptions(model_repository=tmp_path, http_port=0, grpc_port=None, metrics_port=None)
    with ServerThread(options) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        try:
            assert client.is_server_ready() and client.get_model_config("m")["backend"] == backend
            probs = client.infer("m", [_input("x", x, "FP32")]).as_numpy("probs")
        finally:
            client.close()
    with unirt.Session(path, backend="onnxruntime") as reference:
        np.testing.assert_allclose(probs, reference.run({"x": x})["probs"], rtol=1e-4, atol=1e-6)
