"""KServe v2 / Triton tensor datatypes: names, numpy dtypes, config enums, and the raw (binary) encoding.

Raw encoding is the tensor's elements in row-major order, little-endian; a BYTES element is a 4-byte
little-endian length followed by that many bytes. BF16 needs `ml_dtypes` (a dependency of tritonclient).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import BadRequest

__all__ = [
    "DATATYPES",
    "to_numpy_dtype",
    "from_numpy_dtype",
    "config_type_to_datatype",
    "datatype_to_config_type",
    "element_count",
    "check_shape",
    "bytes_for_model",
    "decode_raw",
    "encode_raw",
    "decode_json_data",
    "encode_json_data",
    "json_array",
    "byte_size",
]

_NUMERIC: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
try:
    import ml_dtypes

    _NUMERIC["BF16"] = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover - ml_dtypes comes with tritonclient and onnx
    pass

# Float types narrower than a JSON number (float64), with their largest finite value.
_NARROW_FLOATS = {"FP16": 65504.0, "FP32": float(np.finfo(np.float32).max), "BF16": 3.3895313892515355e38}

_TO_NUMPY: dict[str, np.dtype] = {k: np.dtype(v).newbyteorder("<") for k, v in _NUMERIC.items()}
_TO_NUMPY["BYTES"] = np.dtype(object)
DATATYPES: tuple[str, ...] = tuple(_TO_NUMPY)
_FROM_NUMPY: dict[np.dtype, str] = {np.dtype(v): k for k, v in _NUMERIC.items()}
_FROM_NUMPY.update({np.dtype(object): "BYTES"})


def to_numpy_dtype(datatype: str) -> np.dtype:
    try:
        return _TO_NUMPY[datatype]
    except (KeyError, TypeError):
        raise BadRequest(f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}") from None


def from_numpy_dtype(dtype: np.dtype) -> str | None:
    """The v2 datatype name of a numpy dtype (str/bytes kinds are BYTES), or None if v2 has none."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OUS":
        return "BYTES"
    return _FROM_NUMPY.get(dtype.newbyteorder("="))


def config_type_to_datatype(name: str) -> str:
    """`TYPE_FP32` (config.pbtxt) -> `FP32` (protocol); `TYPE_STRING` -> `BYTES`."""
    short = name[len("TYPE_") :] if name.startswith("TYPE_") else name
    return "BYTES" if short == "STRING" else short


def datatype_to_config_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


# Largest product of a shape's non-zero dims: numpy refuses arrays whose size in bytes passes 2**63 - 1.
_MAX_ELEMENTS = 2**60


def element_count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def check_shape(name: str, shape: Sequence[int]) -> int:
    """The element count of a client-claimed shape; a negative dim or a shape no array could have is a bad
    request (checked before anything is allocated from it)."""
    n, empty = 1, False
    for d in shape:
        if type(d) is not int or d < 0:  # bool, a subclass of int, is refused too
            raise BadRequest(f"input {name!r}: shape {list(shape)} must hold non-negative integers")
        if d > 1:
            n *= d
            if n > _MAX_ELEMENTS:
                raise BadRequest(f"input {name!r}: shape {list(shape)} is too large (over {_MAX_ELEMENTS} elements)")
        elif not d:
            empty = True
    return 0 if empty else n


def byte_size(array: np.ndarray, datatype: str) -> int:
    """Size of `array` in raw encoding."""
    if datatype != "BYTES":
        return array.nbytes
    return sum(4 + len(_as_bytes(v)) for v in array.reshape(-1))


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, np.bytes_):
        return bytes(value)
    return str(value).encode("utf-8")


def decode_raw(name: str, datatype: str, shape: Sequence[int], data: bytes | memoryview) -> np.ndarray:
    """A tensor from its raw encoding, without a copy for fixed-size types (the array views `data`)."""
    dtype = to_numpy_dtype(datatype)
    count = check_shape(name, shape)
    if datatype == "BYTES":
        return _decode_bytes(name, shape, count, memoryview(data))
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise BadRequest(f"input {name!r}: {datatype}{list(shape)} needs {expected} bytes of data, got {len(data)}")
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
    if datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
        raise BadRequest(f"input {name!r}: BOOL data must be bytes 0 or 1")
    return array


def _decode_bytes(name: str, shape: Sequence[int], count: int, data: memoryview) -> np.ndarray:
    pos, end = 0, len(data)
    if count * 4 > end:  # checked before allocating: the count is the client's claim
        raise BadRequest(
            f"input {name!r}: BYTES{list(shape)} has {count} elements, which need at least "
            f"{count * 4} bytes (a 4-byte length each); the data has {end}"
        )
    out = np.empty(count, dtype=object)
    for i in range(count):
        if pos + 4 > end:
            raise BadRequest(f"input {name!r}: BYTES data ends inside the length of element {i} of {count}")
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if pos + length > end:
            raise BadRequest(f"input {name!r}: BYTES element {i} claims {length} bytes, only {end - pos} remain")
        out[i] = bytes(data[pos : pos + length])
        pos += length
    if pos != end:
        raise BadRequest(f"input {name!r}: {end - pos} bytes of data left over after {count} BYTES elements")
    return out.reshape(shape)


def bytes_for_model(name: str, array: np.ndarray) -> np.ndarray:
    """BYTES elements as `str`: backends take string tensors as Python str (ONNX Runtime would store
    str(b"ab") = "b'ab'" for a bytes object), so an element that is not UTF-8 text is refused, not mangled."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, v in enumerate(flat):
        try:
            out[i] = v.decode("utf-8") if isinstance(v, bytes) else v
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"input {name!r}: BYTES element {i} is not UTF-8 text ({exc.reason} at byte "
                f"{exc.start}); model string tensors hold text"
            ) from None
    return out.reshape(array.shape)


def encode_raw(array: np.ndarray, datatype: str) -> bytes | memoryview:
    """The raw encoding of `array` (a memoryview of it when it is already contiguous little-endian)."""
    if datatype == "BYTES":
        parts = []
        for v in array.reshape(-1):
            b = _as_bytes(v)
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    target = _TO_NUMPY[datatype]
    if array.dtype != target:
        array = array.astype(target)
    array = np.ascontiguousarray(array)
    return memoryview(array).cast("B") if array.size else b""


def decode_json_data(name: str, datatype: str, shape: Sequence[int], data: Any) -> np.ndarray:
    """A tensor from the JSON `data` field: a flat or nested list in row-major order."""
    dtype = to_numpy_dtype(datatype)
    count = check_shape(name, shape)
    if not isinstance(data, (list, np.ndarray)):  # an ndarray: numbers the HTTP codec read in C++ (float64)
        data = [data]
    try:
        if datatype == "BYTES":
            flat = np.array([_json_bytes(name, v) for v in _flatten(data)], dtype=object)
        else:
            flat = np.array(data, dtype=np.float64 if datatype in ("FP16", "BF16") else None).reshape(-1)
            if flat.dtype.kind not in "biuf":
                raise ValueError(f"elements must be numbers, got {flat.dtype}")
            if datatype == "BOOL" and flat.dtype.kind != "b":
                raise ValueError("BOOL elements must be true or false")
            if dtype.kind in "iu" and flat.dtype.kind == "f":
                raise ValueError(f"{datatype} elements must be integers")
            if dtype.kind in "iu" and flat.size:
                info = np.iinfo(dtype)
                if flat.min() < info.min or flat.max() > info.max:
                    raise ValueError(f"values {flat.min()}..{flat.max()} do not fit {datatype}")
            if datatype in _NARROW_FLOATS and flat.size:
                with np.errstate(over="ignore"):
                    narrow = flat.astype(dtype)
                overflow = np.isinf(narrow.astype(np.float64)) & np.isfinite(flat)  # 1e300 would become Infinity
                if overflow.any():
                    raise ValueError(
                        f"value {float(flat[overflow][0])!r} is outside the range of {datatype} "
                        f"(largest {_NARROW_FLOATS[datatype]:.6g})"
                    )
                flat = narrow
            else:
                flat = flat.astype(dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"input {name!r}: cannot read the JSON data as {datatype}: {exc}") from None
    if flat.size != count:
        raise BadRequest(f"input {name!r}: shape {list(shape)} has {count} elements, the data has {flat.size}")
    return flat.reshape(shape)


def _flatten(data: list) -> list:
    out: list = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _json_bytes(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):  # gRPC's bytes_contents
        return value
    raise BadRequest(f"input {name!r}: BYTES elements in JSON must be strings, got {type(value).__name__}")


def encode_json_data(array: np.ndarray, datatype: str) -> list:
    """The JSON `data` field of an output: a flat list in row-major order."""
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [_as_bytes(v).decode("utf-8", errors="replace") for v in flat]
    if datatype in ("FP16", "BF16"):
        return flat.astype(np.float32).tolist()
    return flat.tolist()


def json_array(array: np.ndarray, datatype: str) -> np.ndarray | None:
    """The JSON `data` field of an output as a flat, contiguous, native-order numpy array that a numpy-aware JSON
    writer (orjson) writes as `encode_json_data`'s list would be written; None where only the list will do (BYTES,
    and NaN or Infinity, which JSON has no numbers for)."""
    if datatype == "BYTES":
        return None
    flat = array.reshape(-1)
    if datatype in ("FP16", "BF16"):
        flat = flat.astype(np.float32)
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return None
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return np.ascontiguousarray(flat)
