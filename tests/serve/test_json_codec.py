"""The v2 JSON codec on both of its paths: orjson (the serve extra; data arrays parsed in C, numeric outputs written
from numpy) and the standard library (the fallback). Both must give the same tensors and the same errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from unirt.serve import http_codec
from unirt.serve.datatypes import decode_json_data, encode_json_data, json_array
from unirt.serve.errors import BadRequest
from unirt.serve.inference import InferResponse, OutputTensor

try:
    import orjson
except ImportError:  # the fallback path is still tested
    orjson = None

PATHS = [
    pytest.param(orjson, id="orjson", marks=pytest.mark.skipif(orjson is None, reason="orjson not installed")),
    pytest.param(None, id="stdlib"),
]


@pytest.fixture(params=PATHS)
def codec(request, monkeypatch):
    monkeypatch.setattr(http_codec, "orjson", request.param)
    return http_codec


def _request(inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def _decode(codec, body: bytes | str):
    request = codec.parse_infer_request(body.encode() if isinstance(body, str) else body, None, "m", "1")
    return [decode_json_data(t.name, t.datatype, t.shape, t.json) for t in request.inputs]


def _encode(codec, outputs: list[OutputTensor]) -> dict:
    chunks, length = codec.encode_infer_response(InferResponse("m", "1", "r1", outputs))
    assert length is None and len(chunks) == 1
    return json.loads(bytes(chunks[0]))


@pytest.mark.parametrize(
    "datatype,dtype",
    [
        ("FP32", np.float32),
        ("FP64", np.float64),
        ("INT64", np.int64),
        ("INT8", np.int8),
        ("UINT16", np.uint16),
        ("BOOL", np.bool_),
    ],
)
def test_nested_and_flat_data_round_trip_exactly(codec, datatype, dtype):
    rng = np.random.default_rng(1)
    if dtype is np.bool_:
        x = rng.integers(0, 2, (2, 3, 4)).astype(bool)
    elif np.dtype(dtype).kind == "f":
        x = (rng.standard_normal((2, 3, 4)) * 10.0 ** rng.integers(-30, 30, (2, 3, 4))).astype(dtype)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, (2, 3, 4), dtype=dtype, endpoint=True)
    for data in (x.tolist(), x.reshape(-1).tolist()):
        (got,) = _decode(codec, _request([{"name": "x", "datatype": datatype, "shape": [2, 3, 4], "data": data}]))
        assert got.dtype == dtype and np.array_equal(got, x)
    doc = _encode(codec, [OutputTensor("y", datatype, x.shape, x)])
    (out,) = doc["outputs"]
    assert out["shape"] == [2, 3, 4] and out["datatype"] == datatype and doc["id"] == "r1"
    assert np.array_equal(np.array(out["data"], dtype=dtype).reshape(x.shape), x)  # float32 values exactly


def test_narrow_floats_are_written_as_their_float32_values(codec):
    import ml_dtypes

    for datatype, dtype in (("FP16", np.float16), ("BF16", ml_dtypes.bfloat16)):
        x = np.array([[0.1, -2.5, 65504.0 if datatype == "FP16" else 3.0e38]], dtype=dtype)
        (out,) = _encode(codec, [OutputTensor("y", datatype, x.shape, x)])["outputs"]
        assert np.array_equal(np.array(out["data"], np.float32), x.astype(np.float32).reshape(-1))
        assert np.array_equal(np.array(out["data"], np.float32), np.array(encode_json_data(x, datatype), np.float32))


def test_non_finite_outputs_and_inputs_keep_the_standard_library_literals(codec):
    """Python clients (tritonclient) write and read NaN/Infinity; JSON has no such numbers, so orjson would write
    null: those tensors go through the standard library, and requests holding them are read by it."""
    x = np.array([1.0, np.nan, np.inf, -np.inf], np.float32)
    chunks, _ = codec.encode_infer_response(
        InferResponse(
            "m",
            "1",
            "",
            [OutputTensor("y", "FP32", (4,), x), OutputTensor("z", "INT32", (2,), np.array([1, 2], np.int32))],
        )
    )
    text = bytes(chunks[0]).decode()
    assert "NaN" in text and "Infinity" in text and "null" not in text
    y, z = json.loads(text)["outputs"]
    assert np.array_equal(np.array(y["data"], np.float32), x, equal_nan=True) and z["data"] == [1, 2]
    body = '{"inputs":[{"name":"x","datatype":"FP32","shape":[3],"data":[NaN, Infinity, -1.5]}]}'
    (got,) = _decode(codec, body)
    assert np.isnan(got[0]) and got[1] == np.inf and got[2] == -1.5


def test_bytes_outputs_stay_strings(codec):
    x = np.array([b"ab", "cé".encode()], dtype=object)
    (out,) = _encode(codec, [OutputTensor("s", "BYTES", (2,), x)])["outputs"]
    assert out["data"] == ["ab", "cé"]
    (got,) = _decode(codec, _request([{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["ab", "cé"]}]))
    assert got.tolist() == [b"ab", "cé".encode()]


@pytest.mark.parametrize(
    "body,message",
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b"\xff\xfe{}", "malformed JSON"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1180591620717411303424], "data": [1.0]}]}',
            "too large",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1.5], "data": [1.0]}]}',
            "'shape' must be a list of non-negative integers",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, "a"]}]}',
            "cannot read the JSON data as FP32",
        ),
        (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}]}', "do not fit INT8"),
        (b'{"inputs": [{"name": "x", "datatype": "FP16", "shape": [1], "data": [1e10]}]}', "outside the range of FP16"),
        (b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1e400]}]}', "cannot read"),
    ],
)
def test_malformed_requests_answer_the_same_error_on_both_paths(codec, body, message):
    with pytest.raises(BadRequest, match=message):
        _decode(codec, body)


def test_json_array_only_where_it_writes_what_the_list_would():
    assert json_array(np.array(["a"], dtype=object), "BYTES") is None
    assert json_array(np.array([1.0, np.nan], np.float32), "FP32") is None
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    out = json_array(big_endian, "INT32")
    assert out.dtype.isnative and out.flags.c_contiguous and out.tolist() == encode_json_data(big_endian, "INT32")
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    assert json_array(strided, "FP32").tolist() == encode_json_data(strided, "FP32")
    assert math.isclose(json_array(np.array([0.1], np.float16), "FP16")[0], 0.0999755859375)
