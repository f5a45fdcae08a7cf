"""The v2 HTTP infer body: JSON, or JSON followed by raw tensor bytes (the binary tensor data extension).

Request: the JSON header is the first `Inference-Header-Content-Length` bytes of the body (the whole body when
that header is absent); inputs with `parameters.binary_data_size` take their bytes from what follows, in input
order. Response: outputs asked for as binary carry `parameters.binary_data_size` and their bytes follow the JSON.

JSON goes through orjson when it is installed (the `serve` extra brings it): it parses a tensor's `data` array in
C, and writes numeric outputs straight from their numpy arrays, with no Python object per element. A document
orjson refuses is read again by the standard library, which also accepts the NaN/Infinity literals that Python
clients send; outputs holding NaN or Infinity are written by the standard library too, as before.

Big request headers take a faster road for their tensors' `data`: each flat array of JSON numbers is read by the
C++ core straight into a float64 array (strict JSON grammar, the GIL released, no Python object per element) and
replaced by a marker before the rest of the document is parsed; an array the core cannot read (nested lists,
strings, NaN) is left to the JSON parser, and a document whose markers do not all land on an input's `data` is
parsed again whole, so the fast road never changes what a request means.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from .._core import json_numbers
from .datatypes import DATATYPES, check_shape, encode_json_data, encode_raw, json_array

try:
    import orjson
except ImportError:  # pragma: no cover - the serve extra installs it; the standard library does the same work
    orjson = None
from .errors import BadRequest, Unsupported
from .inference import InferRequest, InferResponse, InputTensor, RequestedOutput

__all__ = ["parse_infer_request", "encode_infer_response", "parse_json_object"]


def parse_json_object(data: bytes | memoryview, what: str) -> dict:
    if not len(data):
        return {}
    try:
        value = parse_json_value(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{what}: malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _param(params: dict, key: str, kind: type | tuple, what: str, default: Any = None) -> Any:
    value = params.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadRequest(f"{what}: parameter {key!r} must be {names}, got {value!r}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{what} must be an integer, got {value!r}")
    return value


def _shm_ref(params: dict, what: str) -> tuple[str, int, int] | None:
    region = params.get("shared_memory_region")
    if region is None:
        return None
    if not isinstance(region, str):
        raise BadRequest(f"{what}: shared_memory_region must be a string")
    if "shared_memory_byte_size" not in params:
        raise BadRequest(f"{what}: shared_memory_byte_size is required with shared_memory_region")
    size = _int(params["shared_memory_byte_size"], f"{what}: shared_memory_byte_size")
    offset = _int(params.get("shared_memory_offset", 0), f"{what}: shared_memory_offset")
    return region, offset, size


#: A request header at least this big has its tensors' number arrays read by the C++ core (`_lift_numbers`)
FAST_NUMBERS_MIN = 16 * 1024
_DATA_KEY = re.compile(rb'"data"\s*:\s*\[')
_FLOAT_TYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})
_MARK = "\x00unirt-numbers-" + os.urandom(6).hex() + "-"  # a client cannot send it by chance


def _lift_numbers(header: bytes | memoryview) -> tuple[dict, dict[str, tuple[Any, bool, Any]]] | None:
    """The request document with each flat number array under a `data` key replaced by a marker string, and what
    each marker stands for: (float64 array, every number an integer, the array's JSON text). None when there was
    nothing to lift or the markers did not all land on an input's `data` (the caller parses the whole header)."""
    data = bytes(header)
    parts: list[bytes] = []
    lifted: dict[str, tuple[Any, bool, Any]] = {}
    pos = search = 0
    while (match := _DATA_KEY.search(data, search)) is not None:
        start = search = match.end()
        stop = data.find(b"]", start)
        if stop < 0:
            return None
        found = json_numbers(data, start, stop)
        if found is None:
            continue
        search = stop + 1
        mark = f"{_MARK}{len(lifted)}"
        parts += [data[pos : start - 1], b'"' + mark.encode().replace(b"\x00", b"\\u0000") + b'"']
        lifted[mark] = (found[0], found[1], memoryview(data)[start - 1 : stop + 1])
        pos = stop + 1
    if not lifted:
        return None
    parts.append(data[pos:])
    try:
        doc = parse_json_object(b"".join(parts), "inference request")
    except BadRequest:
        return None
    inputs = doc.get("inputs")
    landed = 0
    if isinstance(inputs, list):
        landed = sum(1 for item in inputs if isinstance(item, dict) and _is_mark(item.get("data"), lifted))
    return (doc, lifted) if landed == len(lifted) else None


def _is_mark(value: Any, lifted: dict) -> bool:
    return isinstance(value, str) and value in lifted


def _lifted_data(value: Any, datatype: str, lifted: dict[str, tuple[Any, bool, Any]]) -> Any:
    """An input's `data` as the decoder takes it: a lifted float array for a float tensor; the JSON parser's list
    for any other (integers past 2**53 must stay exact), or the value itself when it was not lifted."""
    entry = lifted.get(value) if isinstance(value, str) else None
    if entry is None:
        return value
    array, _integral, text = entry
    if datatype in _FLOAT_TYPES:
        return array
    return parse_json_value(text)


def parse_json_value(data: bytes | memoryview) -> Any:
    """Any JSON value: orjson first; what it refuses, the standard library says what is wrong with, or reads
    (NaN/Infinity, which Python clients send)."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(bytes(data))


def parse_infer_request(body: bytes, header_length: str | None, model_name: str, model_version: str) -> InferRequest:
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {length} is outside the body's {len(body)} bytes")
        view = memoryview(body)
        header, binary = view[:length], view[length:]
    lifted_doc = _lift_numbers(header) if len(header) >= FAST_NUMBERS_MIN else None
    if lifted_doc is not None:
        doc, lifted = lifted_doc
    else:
        doc, lifted = parse_json_object(header, "inference request"), {}
    request = InferRequest(model_name, model_version)
    rid = doc.get("id", "")
    if not isinstance(rid, str):
        raise BadRequest(f"inference request: id must be a string, got {rid!r}")
    request.id = rid
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise BadRequest("inference request: parameters must be a JSON object")
    if params.get("sequence_id") not in (None, 0, ""):
        raise Unsupported("sequence_id: sequence batching is not supported by unirt serve")
    request.parameters = params
    request.binary_output = bool(_param(params, "binary_data_output", bool, "inference request", False))
    inputs = doc.get("inputs")
    if not isinstance(inputs, list):
        raise BadRequest("inference request: 'inputs' must be a list")
    pos = 0
    for i, item in enumerate(inputs):
        what = f"inputs[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{what} must be a JSON object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{what}: 'name' must be a non-empty string")
        what = f"input {name!r}"
        if datatype not in DATATYPES:
            raise BadRequest(f"{what}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
        if isinstance(shape, list) and any(isinstance(d, float) and d >= 2**63 and d.is_integer() for d in shape):
            # orjson reads integers past 64 bits as floats; the standard library kept them as ints
            check_shape(name, [int(d) if isinstance(d, float) else d for d in shape])
        if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            raise BadRequest(f"{what}: 'shape' must be a list of non-negative integers, got {shape!r}")
        tparams = item.get("parameters", {})
        if not isinstance(tparams, dict):
            raise BadRequest(f"{what}: parameters must be a JSON object")
        tensor = InputTensor(name, datatype, tuple(shape))
        shm = _shm_ref(tparams, what)
        size = tparams.get("binary_data_size")
        sources = (shm is not None) + (size is not None) + ("data" in item)
        if sources != 1:
            raise BadRequest(
                f"{what}: give exactly one of 'data', parameters.binary_data_size or "
                f"parameters.shared_memory_region (got {sources})"
            )
        if shm is not None:
            tensor.shm = shm
        elif size is not None:
            size = _int(size, f"{what}: binary_data_size")
            if size < 0 or pos + size > len(binary):
                raise BadRequest(
                    f"{what}: binary_data_size {size} runs past the {len(binary)} bytes of binary data "
                    f"after the JSON header (offset {pos})"
                )
            tensor.raw = binary[pos : pos + size]
            pos += size
        else:
            tensor.json = _lifted_data(item["data"], datatype, lifted) if lifted else item["data"]
        request.inputs.append(tensor)
    if pos != len(binary):
        raise BadRequest(
            f"inference request: {len(binary) - pos} bytes of binary data after the JSON header are not "
            "claimed by any input's binary_data_size"
        )
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest("inference request: 'outputs' must be a list")
        request.outputs = []
        for i, item in enumerate(outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise BadRequest(f"outputs[{i}] must be a JSON object with a string 'name'")
            oparams = item.get("parameters", {})
            if not isinstance(oparams, dict):
                raise BadRequest(f"output {item['name']!r}: parameters must be a JSON object")
            what = f"output {item['name']!r}"
            request.outputs.append(
                RequestedOutput(
                    item["name"],
                    _param(oparams, "binary_data", bool, what),
                    _int(oparams.get("classification", 0), f"{what}: classification"),
                    _shm_ref(oparams, what),
                )
            )
    return request


def encode_infer_response(response: InferResponse) -> tuple[list[bytes | memoryview], int | None]:
    """The body as chunks (JSON header first) and the header's length when binary data follows."""
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    outputs, chunks = [], []
    numpy_ok = True  # every JSON tensor is a numpy array orjson writes as the standard library would
    for out in response.outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if out.shm is not None:
            entry["parameters"] = {"shared_memory_region": out.shm[0], "shared_memory_byte_size": out.shm[1]}
        elif out.binary:
            raw = encode_raw(out.array, out.datatype)
            chunks.append(raw)
            entry["parameters"] = {"binary_data_size": memoryview(raw).nbytes}
        else:
            array = json_array(out.array, out.datatype) if orjson is not None else None
            if array is not None:
                entry["data"] = array
            else:
                entry["data"] = encode_json_data(out.array, out.datatype)
                numpy_ok = False
        outputs.append(entry)
    doc["outputs"] = outputs
    if orjson is not None and numpy_ok:
        header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        header = json.dumps(doc, separators=(",", ":"), default=_plain).encode()
    if not chunks:
        return [header], None
    return [header, *chunks], len(header)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):  # an array json_array passed before a later output needed the fallback
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
