"""The element types of a model's inputs and outputs, read without loading the model: what backend selection
checks against each backend's `Backend.tensor_dtypes` (e.g. string tensors, which OpenVINO does not take).

ONNX only: the file's protobuf wire format is scanned for the graph's `input` and `output` entries, skipping every
other field by its length (initializers included), so a large model costs a few reads of a memory map, not a parse
of its weights. Other formats: None (not known before loading; the backend's load refuses what it cannot take).
"""

from __future__ import annotations

import functools
import mmap
from pathlib import Path

from .formats import ModelFile, ModelFormat

__all__ = ["io_dtypes", "ONNX_TYPE_NAMES"]

#: ONNX TensorProto.DataType numbers -> the names backends declare (numpy's where numpy has one)
ONNX_TYPE_NAMES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
}

_MODEL_GRAPH, _GRAPH_INPUT, _GRAPH_OUTPUT = 7, 11, 12  # ModelProto.graph, GraphProto.input / output
_VALUE_TYPE, _TYPE_TENSOR, _TENSOR_ELEM = 2, 1, 1  # ValueInfoProto.type, TypeProto.tensor_type, .elem_type


def io_dtypes(model: ModelFile) -> frozenset[str] | None:
    """The type names of `model`'s graph inputs and outputs ("float32", "string", ...); None when unknown (not
    ONNX, unreadable, or a tensor whose type the file does not state)."""
    if model.format is not ModelFormat.ONNX:
        return None
    try:
        if model.data is not None:
            return _scan(memoryview(model.data))
        if model.path is None:
            return None
        stat = model.path.stat()
        return _from_file(model.path, stat.st_size, stat.st_mtime_ns)
    except (OSError, ValueError, IndexError):
        return None


@functools.lru_cache(maxsize=64)
def _from_file(path: Path, size: int, mtime_ns: int) -> frozenset[str] | None:
    if size == 0:
        return None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            return _scan(view)
        finally:
            view.release()


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _fields(buf: memoryview, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited field) of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _sub(buf: memoryview, span: tuple[int, int], number: int) -> tuple[int, int] | None:
    return next((v for n, w, v in _fields(buf, *span) if n == number and w == 2), None)


def _scan(buf: memoryview) -> frozenset[str] | None:
    graph = _sub(buf, (0, len(buf)), _MODEL_GRAPH)
    if graph is None:
        return None
    names = set()
    for number, wire, span in _fields(buf, *graph):
        if wire != 2 or number not in (_GRAPH_INPUT, _GRAPH_OUTPUT):
            continue
        type_span = _sub(buf, span, _VALUE_TYPE)
        tensor = _sub(buf, type_span, _TYPE_TENSOR) if type_span is not None else None
        if tensor is None:  # a sequence, map or optional: not a plain tensor
            return None
        elem = next((v for n, w, v in _fields(buf, *tensor) if n == _TENSOR_ELEM and w == 0), 0)
        if not elem:
            return None
        names.add(ONNX_TYPE_NAMES.get(elem, f"onnx-type-{elem}"))
    return frozenset(names)
