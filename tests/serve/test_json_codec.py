"""The v2 JSON codec on its paths: orjson (the serve extra; data arrays parsed in C, numeric outputs written from
numpy), the standard library (the fallback), and big requests whose number arrays the C++ core reads
(`FAST_NUMBERS_MIN`; forced here for every request). All must give the same tensors and the same errors."""

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

NO_ORJSON = pytest.mark.skipif(orjson is None, reason="orjson not installed")
PATHS = [
    pytest.param((orjson, False), id="orjson", marks=NO_ORJSON),
    pytest.param((None, False), id="stdlib"),
    pytest.param((orjson, True), id="orjson+core-numbers", marks=NO_ORJSON),
    pytest.param((None, True), id="stdlib+core-numbers"),
]


@pytest.fixture(params=PATHS)
def codec(request, monkeypatch):
    module, core_numbers = request.param
    monkeypatch.setattr(http_codec, "orjson", module)
    if core_numbers:
        monkeypatch.setattr(http_codec, "FAST_NUMBERS_MIN", 0)
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


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", []),
        (" \n\t", []),
        ("0", [0.0]),
        ("-0", [-0.0]),
        ("1, 2 ,3", [1.0, 2.0, 3.0]),
        (" -0.5e-3 , 2E+4 ", [-0.0005, 20000.0]),
        ("0.1,3.4028234663852886e38,5e-324", [0.1, 3.4028234663852886e38, 5e-324]),
    ],
)
def test_core_reads_json_number_arrays_as_python_does(text, expected):
    from unirt._core import json_numbers

    data = f"[{text}]".encode()
    found = json_numbers(data, 1, len(data) - 1)
    assert found is not None
    array, integral = found
    assert array.dtype == np.float64 and array.tolist() == [float(v) for v in json.loads(f"[{text}]")] == expected
    assert integral == all(isinstance(v, int) for v in json.loads(f"[{text}]"))


@pytest.mark.parametrize(
    "text",
    ["[1]", "1,", ",1", "1,,2", "01", "+1", ".5", "1.", "1e", "-", "NaN", "Infinity", "1e400", '"1"', "1 2", "true"],
)
def test_core_refuses_what_is_not_a_flat_array_of_json_numbers(text):
    """Left to the JSON parser, which reads it or says what is wrong: the core road never changes a meaning."""
    from unirt._core import json_numbers

    assert json_numbers(text.encode(), 0, len(text)) is None


def test_big_float_requests_take_the_core_road_and_decode_exactly(monkeypatch):
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    body = _request([{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}])
    assert len(body) >= http_codec.FAST_NUMBERS_MIN
    request = http_codec.parse_infer_request(body, None, "m", "1")
    assert isinstance(request.inputs[0].json, np.ndarray)  # read by the core, not as a list
    (got,) = [decode_json_data(t.name, t.datatype, t.shape, t.json) for t in request.inputs]
    assert got.dtype == np.float32 and np.array_equal(got, x)


def test_core_road_keeps_integers_exact_and_leaves_other_data_keys_alone(monkeypatch):
    monkeypatch.setattr(http_codec, "FAST_NUMBERS_MIN", 0)
    big = [2**62 + 1, -(2**63), 2**63 - 1]  # not representable as float64
    body = json.dumps(
        {
            "parameters": {"data": [1, 2, 3]},  # a "data" key that is not an input's: the whole body is read again
            "inputs": [
                {"name": "i", "datatype": "INT64", "shape": [3], "data": big},
                {"name": "f", "datatype": "FP64", "shape": [2], "data": [0.25, 1e300]},
            ],
        }
    ).encode()
    request = http_codec.parse_infer_request(body, None, "m", "1")
    assert request.parameters == {"data": [1, 2, 3]}
    i, f = (decode_json_data(t.name, t.datatype, t.shape, t.json) for t in request.inputs)
    assert i.tolist() == big and f.tolist() == [0.25, 1e300]
    body = json.dumps({"inputs": [{"name": "i", "datatype": "INT64", "shape": [3], "data": big}]}).encode()
    (t,) = http_codec.parse_infer_request(body, None, "m", "1").inputs
    assert decode_json_data(t.name, t.datatype, t.shape, t.json).tolist() == big


def test_a_request_naming_the_marker_cannot_borrow_another_inputs_data(monkeypatch):
    monkeypatch.setattr(http_codec, "FAST_NUMBERS_MIN", 0)
    guess = http_codec._MARK.replace("\x00", "") + "0"
    body = json.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2], "data": [1.5, 2.5]},
                {"name": "b", "datatype": "BYTES", "shape": [1], "data": [guess]},
            ]
        }
    ).encode()
    a, b = (
        decode_json_data(t.name, t.datatype, t.shape, t.json)
        for t in http_codec.parse_infer_request(body, None, "m", "1").inputs
    )
    assert a.tolist() == [1.5, 2.5] and b.tolist() == [guess.encode()]
