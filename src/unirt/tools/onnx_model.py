"""ONNX model access for the tools (onnx imported lazily): loading, I/O as TensorInfo, shape inference."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelLoadError
from ..formats import ModelFile
from ..tensor import TensorInfo, normalize_dim
from ..unknown_rank import UnknownRankInfo
from ._deps import require

__all__ = [
    "load_proto",
    "graph_inputs",
    "graph_outputs",
    "infer_shapes",
    "tensor_shape",
    "dtype_bits",
    "walk_graphs",
    "node_count",
    "elem_dtype_name",
    "UnknownRankInfo",
]
log = logging.getLogger(__name__)

# Bits per element of each ONNX tensor type, by TensorProto.DataType name (None: variable size, e.g. strings).
_BITS = {
    "FLOAT": 32,
    "UINT8": 8,
    "INT8": 8,
    "UINT16": 16,
    "INT16": 16,
    "INT32": 32,
    "INT64": 64,
    "STRING": None,
    "BOOL": 8,
    "FLOAT16": 16,
    "DOUBLE": 64,
    "UINT32": 32,
    "UINT64": 64,
    "COMPLEX64": 64,
    "COMPLEX128": 128,
    "BFLOAT16": 16,
    "FLOAT8E4M3FN": 8,
    "FLOAT8E4M3FNUZ": 8,
    "FLOAT8E5M2": 8,
    "FLOAT8E5M2FNUZ": 8,
    "FLOAT8E8M0": 8,
    "UINT4": 4,
    "INT4": 4,
    "FLOAT4E2M1": 4,
    "UINT2": 2,
    "INT2": 2,
}


def onnx_module() -> Any:
    return require("onnx", "reading ONNX models in unirt's tools")


def load_proto(model: ModelFile, *, with_weights: bool = False) -> Any:
    """The model's ModelProto; weights kept in external files stay there unless `with_weights`."""
    onnx = onnx_module()
    try:
        if model.path is not None:
            return onnx.load(str(model.path), load_external_data=with_weights)
        return onnx.load_from_string(model.read_bytes())
    except Exception as exc:  # a damaged file that still passed format detection
        raise ModelLoadError(f"{model.name}: onnx cannot parse this model: {type(exc).__name__}: {exc}") from None


def _type_name(elem_type: int) -> str:
    onnx = onnx_module()
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"TYPE{elem_type}"


def elem_dtype_name(elem_type: int) -> str:
    """numpy's name for an ONNX element type where numpy has one (float32, int8), else ONNX's (float4e2m1)."""
    name = _type_name(elem_type)
    if name in ("STRING", "UNDEFINED") or name.startswith("TYPE"):
        return name.lower()
    dtype = _np_dtype(elem_type)
    return name.lower() if dtype == np.dtype(object) else str(dtype)


def dtype_bits(elem_type: int) -> int | None:
    return _BITS.get(_type_name(elem_type))


def _np_dtype(elem_type: int) -> np.dtype:
    onnx = onnx_module()
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return np.dtype(object)


def tensor_shape(value_info: Any) -> tuple[Any, ...] | None:
    """Dims of a ValueInfoProto: ints, symbolic names, or None for unknown; None when the rank is unknown."""
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(
        normalize_dim(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        for d in t.tensor_type.shape.dim
    )


def _clear_placeholder_dims(graph: Any) -> None:
    """Make exporters' placeholder dims (`dim_value -1`, `dim_param "?"`...) plain unknown dims in `graph` and its
    subgraphs, so that shape inference at given input sizes does not take them for facts that contradict it."""
    for g in walk_graphs(graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            t = vi.type
            if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
                continue
            for d in t.tensor_type.shape.dim:
                value = d.dim_value if d.HasField("dim_value") else (d.dim_param if d.HasField("dim_param") else None)
                if value is not None and normalize_dim(value) is None:
                    d.ClearField("dim_value")
                    d.ClearField("dim_param")


def _info(value_info: Any) -> TensorInfo:
    shape = tensor_shape(value_info)
    dtype = _np_dtype(value_info.type.tensor_type.elem_type)
    if shape is None:
        return UnknownRankInfo(value_info.name, (), dtype)
    return TensorInfo(value_info.name, shape, dtype)


def graph_inputs(proto: Any) -> list[TensorInfo]:
    """The model's real inputs (graph inputs that are not initializers)."""
    inits = {i.name for i in proto.graph.initializer}
    return [_info(vi) for vi in proto.graph.input if vi.name not in inits]


def graph_outputs(proto: Any) -> list[TensorInfo]:
    return [_info(vi) for vi in proto.graph.output]


def walk_graphs(graph: Any) -> Iterator[Any]:
    """`graph` and every subgraph in it (If/Loop/Scan bodies), depth first."""
    onnx = onnx_module()
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from walk_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from walk_graphs(g)


def node_count(proto: Any) -> int:
    return sum(len(g.node) for g in walk_graphs(proto.graph))


def _with_input_shapes(proto: Any, shapes: Mapping[str, tuple[int, ...]]) -> Any:
    onnx = onnx_module()
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    _clear_placeholder_dims(copy.graph)  # a declared -1 or "?" is no fact to contradict the given sizes
    for vi in copy.graph.input:
        if vi.name in shapes:  # the whole shape: also where the model gives none (rank unknown)
            shape = vi.type.tensor_type.shape
            shape.ClearField("dim")
            for size in shapes[vi.name]:
                shape.dim.add().dim_value = int(size)
    return copy


def infer_shapes(proto: Any, shapes: Mapping[str, tuple[int, ...]], name: str) -> tuple[Any, list[str]]:
    """The model with inputs fixed to `shapes` and every inferable tensor shape filled in, plus notes.

    Strict inference first; when that fails with the given shapes but succeeds with the model's own, the shapes
    contradict the model (InputError). When it fails either way, non-strict inference fills in what it can.
    """
    onnx = onnx_module()
    si = onnx.shape_inference
    fixed = _with_input_shapes(proto, shapes)
    try:
        return si.infer_shapes(fixed, check_type=True, strict_mode=True, data_prop=True), []
    except Exception as exc:  # onnx raises InferenceError, ValidationError or RuntimeError
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    try:
        si.infer_shapes(_with_input_shapes(proto, {}), strict_mode=True, data_prop=True)
    except Exception:
        log.debug("%s: strict shape inference fails on the model itself; falling back to non-strict", name)
    else:
        pretty = ", ".join(f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items())
        raise InputError(f"{name}: the input shapes {pretty} contradict the model ({error})")
    try:
        return si.infer_shapes(fixed, strict_mode=False, data_prop=True), [
            f"shape inference is incomplete for this model ({error}); counts skip what it could not infer"
        ]
    except Exception as exc:
        return fixed, [f"shape inference failed ({type(exc).__name__}: {exc}); counts need shapes and are partial"]


def numel(dims: Any) -> int:
    return math.prod(int(d) for d in dims)


def model_size(path: Path | None) -> int | None:
    return path.stat().st_size if path is not None and path.exists() else None
