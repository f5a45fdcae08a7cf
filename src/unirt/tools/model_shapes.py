"""Sizes a model file carries for its inputs' dynamic dims, for the tools that must make inputs up.

A dynamic dim has no size, but the file often says what it runs at:
- a conversion's sidecar (`<stem>.unirt.json`) records the shapes the conversion was made at;
- ONNX `metadata_props` written by exporters: ultralytics writes `imgsz` ("[640, 640]") and `batch`; others write
  `input_shape`/`input_shapes`/`<input>_shape` (a whole shape, or shapes by input name), `image_size`,
  `img_size`, `input_size` (H and W of an image input, one int for a square);
- the ONNX graph itself: a dim a constant fixes where the input is first used (a Conv's channels, a MatMul's or
  Gemm's inner dim, a broadcast against a constant, a Reshape to a constant shape that leaves one dim to solve);
- a TFLite file's `shape` where its `shape_signature` is -1 and the size is not the placeholder 1 (converters
  write the shape they were given there; a dynamic dim with no such shape is stored as 1).

`carried_shapes` returns, per input, one size or None per dim, and where it came from. Nothing here is a guess:
a dim the file does not fix stays None, and the tools ask for it.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..conversion.signature import read_sidecar
from ..formats import Format, ModelFile, ModelFormat, open_model
from ..tensor import TensorInfo

__all__ = ["Carried", "carried_shapes"]
log = logging.getLogger(__name__)

#: name -> (one size or None per dim, where the sizes came from)
Carried = dict[str, tuple[tuple[int | None, ...], str]]

_SHAPE_KEYS = ("input_shape", "input_shapes", "inputs_shape", "shape")
_IMAGE_KEYS = ("imgsz", "img_size", "image_size", "imagesize", "input_size", "input_resolution")
_CHANNELS = (1, 3, 4)


def _parse(text: str) -> Any:
    """A metadata value as Python data: JSON, a Python literal ("(640, 640)"), or sizes like "640x640"/"1,3,8,8"."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    parts = re.split(r"[x,\s]+", text.strip().strip("[]()").lower())
    if parts and all(re.fullmatch(r"-?\d+", p) for p in parts):
        return [int(p) for p in parts]
    return None


def _sizes(value: Any) -> list[int | None] | None:
    """A list of dim sizes (None for a dim it leaves open: -1, 0, a name, null), or None if `value` is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value if value > 0 else None]
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, str, type(None))) and not isinstance(v, bool) for v in value)
    ):
        return [v if isinstance(v, int) and v > 0 else None for v in value]
    return None


def _image_axes(info: TensorInfo) -> tuple[int, int] | None:
    """The H and W axes of a rank-4 image input: NCHW unless only the last dim looks like channels."""
    if info.rank != 4:
        return None
    c_first, c_last = info.shape[1], info.shape[3]
    if c_last in _CHANNELS and c_first not in _CHANNELS:
        return 1, 2
    return 2, 3


def _from_metadata(meta: Mapping[str, str], inputs: Sequence[TensorInfo]) -> dict[str, list[int | None]]:
    found: dict[str, list[int | None]] = {}
    single = len(inputs) == 1
    for info in inputs:
        if info.shape is None:
            continue
        dims: list[int | None] = [None] * info.rank
        for key in (f"{info.name.lower()}_shape", *_SHAPE_KEYS):
            value = _parse(meta[key]) if key in meta else None
            if isinstance(value, dict):  # shapes by input name
                value = value.get(info.name)
            elif not (single or key.startswith(info.name.lower())):
                continue  # one shape, several inputs: whose is it?
            sizes = _sizes(value)
            if sizes is not None and len(sizes) == info.rank:
                dims = [d if d is not None else s for d, s in zip(dims, sizes)]
        axes = _image_axes(info)
        if axes is not None:
            for key in _IMAGE_KEYS:
                value = _parse(meta[key]) if key in meta else None
                if isinstance(value, dict):
                    value = value.get(info.name)
                sizes = _sizes(value)
                if sizes is not None and len(sizes) in (1, 2):
                    h, w = (sizes * 2)[:2]
                    dims[axes[0]] = dims[axes[0]] or h
                    dims[axes[1]] = dims[axes[1]] or w
                    break
            batch = _sizes(_parse(meta["batch"])) if "batch" in meta else None
            if batch is not None and len(batch) == 1 and dims[0] is None:
                dims[0] = batch[0]
        if any(d is not None for d in dims):
            found[info.name] = dims
    return found


def _constants(graph: Any) -> dict[str, Any]:
    """Initializers and Constant outputs by name, as TensorProtos (values not read until needed)."""
    consts = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    consts[node.output[0]] = attr.t
    return consts


def _values(tensor: Any) -> list[int] | None:
    """A small int tensor's values (a Reshape's shape), or None where they are not stored inline."""
    if tensor.data_location == 1 or math.prod(tensor.dims) > 16:
        return None
    try:
        from onnx import numpy_helper

        return [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]
    except Exception:
        return None


def _attr(node: Any, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _implied(proto: Any, inputs: Sequence[TensorInfo]) -> dict[str, list[int | None]]:
    """Dims that a constant fixes where the input is read directly."""
    graph = proto.graph
    consts = _constants(graph)
    found: dict[str, list[int | None]] = {}
    by_name = {i.name: i for i in inputs if i.shape is not None and i.is_dynamic}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            info = by_name.get(name)
            if info is None:
                continue
            dims = found.setdefault(name, [d if isinstance(d, int) else None for d in info.shape])
            other = [consts.get(n) for n in node.input]
            op, rank = node.op_type, info.rank
            if op == "Conv" and slot == 0 and other[1] is not None and len(other[1].dims) == rank and rank >= 3:
                dims[1] = dims[1] or int(other[1].dims[1]) * _attr(node, "group", 1)
            elif op == "ConvTranspose" and slot == 0 and other[1] is not None and rank >= 3:
                dims[1] = dims[1] or int(other[1].dims[0])
            elif op == "MatMul" and rank >= 2 and len(other) == 2:
                peer = other[1 - slot]
                if peer is not None and len(peer.dims) >= 2:
                    if slot == 0:
                        dims[-1] = dims[-1] or int(peer.dims[-2])
                    else:
                        dims[-2] = dims[-2] or int(peer.dims[-1])
            elif op == "Gemm" and slot == 0 and rank == 2 and len(other) > 1 and other[1] is not None:
                inner = 0 if _attr(node, "transA", 0) else 1
                dims[inner] = dims[inner] or int(other[1].dims[1 if _attr(node, "transB", 0) else 0])
            elif op in ("Add", "Sub", "Mul", "Div", "Pow", "Where", "Max", "Min", "PRelu") and len(other) >= 2:
                for peer in (c for i, c in enumerate(other) if i != slot and c is not None):
                    for k in range(1, min(len(peer.dims), rank) + 1):  # right-aligned: a size > 1 must match
                        if int(peer.dims[-k]) > 1:
                            dims[-k] = dims[-k] or int(peer.dims[-k])
            elif op == "Reshape" and slot == 0 and len(other) == 2 and other[1] is not None:
                target = _values(other[1])
                if target and all(t > 0 for t in target) and _attr(node, "allowzero", 0) == 0:
                    unknown = [axis for axis, d in enumerate(dims) if d is None]
                    known = math.prod(d for d in dims if d is not None)
                    total = math.prod(target)
                    if len(unknown) == 1 and known and total % known == 0:
                        dims[unknown[0]] = total // known
    return {
        k: v
        for k, v in found.items()
        if any(d is not None and not isinstance(by_name[k].shape[a], int) for a, d in enumerate(v))
    }


def _onnx(model: ModelFile, inputs: Sequence[TensorInfo]) -> Carried:
    try:
        from .onnx_model import load_proto

        proto = load_proto(model)
    except Exception as exc:  # no onnx, or a file onnx cannot read: nothing carried
        log.debug("%s: no shapes read from the ONNX model: %s", model.name, exc)
        return {}
    carried: Carried = {}
    meta = {p.key.strip().lower(): p.value for p in proto.metadata_props}
    for name, dims in _from_metadata(meta, inputs).items():
        carried[name] = (tuple(dims), "the model's metadata")
    for name, dims in _implied(proto, inputs).items():
        have = carried.get(name)
        if have is None:
            carried[name] = (tuple(dims), "the model's graph")
        else:
            carried[name] = (
                tuple(a if a is not None else b for a, b in zip(have[0], dims)),
                "the model's metadata and graph",
            )
    return carried


def _tflite(model: ModelFile, inputs: Sequence[TensorInfo]) -> Carried:
    try:
        from ai_edge_litert import schema_py_generated as schema

        root = schema.Model.GetRootAs(model.read_bytes(), 0)
        graph = root.Subgraphs(0)
        tensors = [graph.Tensors(graph.Inputs(i)) for i in range(graph.InputsLength())]
    except Exception as exc:
        log.debug("%s: no shapes read from the TFLite model: %s", model.name, exc)
        return {}
    carried: Carried = {}
    for t in tensors:
        name = t.Name().decode("utf-8", "replace")
        shape, signature = (
            list(t.ShapeAsNumpy() if t.ShapeLength() else []),
            list(t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else []),
        )
        if len(signature) != len(shape):
            continue
        dims = [int(d) if s < 0 and d > 1 else None for d, s in zip(shape, signature)]
        if any(d is not None for d in dims):
            carried[name] = (tuple(dims), "the TFLite file's shapes")
    return carried


_READERS: dict[Format, Any] = {ModelFormat.ONNX: _onnx, ModelFormat.TFLITE: _tflite}


@functools.lru_cache(maxsize=16)
def _cached(path: str, size: int, mtime_ns: int, inputs: tuple[TensorInfo, ...]) -> Carried:
    return _read(open_model(path), inputs)


def _read(model: ModelFile, inputs: Sequence[TensorInfo]) -> Carried:
    carried: Carried = {}
    side = read_sidecar(model.path) if model.path is not None else None
    shapes = side.get("shapes") if side else None
    if isinstance(shapes, dict):
        for info in inputs:
            shape = _sizes(shapes.get(info.name))
            if info.shape is not None and shape is not None and len(shape) == info.rank:
                carried[info.name] = (tuple(shape), "the shapes the model was converted at")
    reader = _READERS.get(model.format)
    if reader is not None:
        for name, (dims, source) in reader(model, inputs).items():
            carried.setdefault(name, (dims, source))
    return carried


def carried_shapes(model: ModelFile | str | Path, inputs: Sequence[TensorInfo]) -> Carried:
    """Per input (by name): a size or None per dim, as far as the model file fixes them, and the source."""
    try:
        mf = model if isinstance(model, ModelFile) else open_model(model)
    except Exception as exc:
        log.debug("no shapes read from %s: %s", model, exc)
        return {}
    if mf.path is None:
        return _read(mf, inputs)
    try:
        st = mf.path.stat()
    except OSError:
        return {}
    try:
        return dict(_cached(str(mf.path), st.st_size, st.st_mtime_ns, tuple(inputs)))
    except TypeError:  # an unhashable TensorInfo (a quantization with lists): read it uncached
        return _read(mf, inputs)
