"""A converted model's signature: the source model's input/output names, shapes and dtypes.

Converters rename tensors (pnnx calls them in0/out0) and forget dynamic dims (MNN stores a dynamic batch as 1), so
the conversion writes the ONNX signature into a JSON sidecar next to the converted model (`<stem>.unirt.json`).
A plugin loading that model reads it back to present the same inputs and outputs as the ONNX model. A plugin's
converter may first write notes of its own there (what only the converter knows, e.g. pnnx's batch axes): the
conversion layer keeps them (`plugin_notes`).
Reading a sidecar needs no onnx; `onnx_signature` (reading an ONNX model) imports onnx.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..tensor import TensorInfo

__all__ = [
    "SIDECAR_SUFFIX",
    "sidecar_path",
    "write_sidecar",
    "read_sidecar",
    "plugin_notes",
    "onnx_signature",
    "infos_to_json",
    "infos_from_json",
    "concrete_shape",
    "SPATIAL_DEFAULT",
    "needs_run_shapes",
    "second_shapes",
    "shapes_of",
    "format_shapes",
]

SIDECAR_SUFFIX = ".unirt.json"


def sidecar_path(model_path: Path) -> Path:
    """`dir/model.param` -> `dir/model.unirt.json` (also for `.mnn`, `.xml`, ...)."""
    return model_path.with_suffix(SIDECAR_SUFFIX)


def infos_to_json(infos: Sequence[TensorInfo]) -> list[dict[str, Any]]:
    return [{"name": i.name, "shape": list(i.shape), "dtype": np.dtype(i.dtype).name} for i in infos]


def infos_from_json(rows: Sequence[Mapping[str, Any]]) -> list[TensorInfo]:
    return [TensorInfo(str(r["name"]), tuple(r["shape"]), np.dtype(r["dtype"])) for r in rows]


def write_sidecar(model_path: Path, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], **extra: Any) -> Path:
    """Write the signature (and plugin-specific `extra`, e.g. a blob-name map) next to `model_path`."""
    path = sidecar_path(model_path)
    path.write_text(json.dumps({"inputs": infos_to_json(inputs), "outputs": infos_to_json(outputs), **extra}, indent=1))
    return path


def plugin_notes(model_path: Path) -> dict[str, Any]:
    """What a plugin's converter wrote into the sidecar itself (e.g. ncnn's batch axes, known only to pnnx): every
    key but the signature, which the conversion layer writes over it. Empty when there is none."""
    try:
        data = json.loads(sidecar_path(model_path).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if k not in ("inputs", "outputs")} if isinstance(data, dict) else {}


def read_sidecar(model_path: Path | None) -> dict[str, Any] | None:
    """The sidecar next to `model_path` as a dict with TensorInfo lists, or None when there is none or it is
    unreadable (a damaged sidecar must not stop a model from loading the plain way)."""
    if model_path is None:
        return None
    path = sidecar_path(model_path)
    try:
        data = json.loads(path.read_text())
        data["inputs"] = infos_from_json(data["inputs"])
        data["outputs"] = infos_from_json(data["outputs"])
        return data
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _dtype_of(elem_type: int) -> np.dtype:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        raise ConversionError(f"ONNX element type {elem_type} has no numpy equivalent") from None


def onnx_signature(model: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Graph inputs (initializers excluded) and outputs of an onnx.ModelProto as TensorInfo lists."""
    inits = {i.name for i in model.graph.initializer}

    def info(vi: Any) -> TensorInfo:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise ConversionError(f"tensor {vi.name!r} is not a tensor (sequence/map/optional): not convertible")
        dims: list[Any] = []
        for d in tt.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        return TensorInfo(vi.name, tuple(dims), _dtype_of(tt.elem_type))

    return ([info(v) for v in model.graph.input if v.name not in inits], [info(v) for v in model.graph.output])


#: The size a dynamic spatial dim gets when the user gives none (`concrete_shape`): what image models take.
SPATIAL_DEFAULT = {3: 224, 4: 224, 5: 32}


def concrete_shape(info: TensorInfo, given: Mapping[str, Sequence[int]] | None) -> tuple[int, ...]:
    """A concrete shape for `info`: the user's shape for it if given, else its static dims with 1 for each dynamic
    dim, except the spatial dims of a float [N, C, ...] input with static channels (rank 3 to 5): 1x1 is no
    image (a 3x3 convolution refuses it), so those get `SPATIAL_DEFAULT`. ConversionError when a given shape
    contradicts the model."""
    if given and info.name in given:
        shape = tuple(int(d) for d in given[info.name])
        if len(shape) != info.rank or any(isinstance(d, int) and d != s for d, s in zip(info.shape, shape)):
            raise ConversionError(
                f"input_shapes[{info.name!r}] = {list(shape)} does not fit the model's {info.shape_str()}"
            )
        return shape
    image = info.rank in SPATIAL_DEFAULT and info.dtype.kind == "f" and isinstance(info.shape[1], int)
    spatial = SPATIAL_DEFAULT[info.rank] if image else 1
    return tuple(d if isinstance(d, int) else spatial if axis >= 2 else 1 for axis, d in enumerate(info.shape))


def needs_run_shapes(info: TensorInfo) -> bool:
    """Whether `info` has a dynamic dim a conversion cannot guess: any beyond dim 0 (an image's H and W, a
    sequence length), or the only dim of a rank-1 input. A dynamic dim 0 of a higher rank is a batch dim, which
    the converters handle whatever size it was converted at (verified at two batch sizes)."""
    if info.shape is None:
        return True
    dims = info.shape if info.rank == 1 else info.shape[1:]
    return any(not isinstance(d, int) for d in dims)


def second_shapes(
    inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]]
) -> dict[str, tuple[int, ...]] | None:
    """A second size for the dims a converter could keep dynamic (each dynamic dim beyond a batch dim 0, doubled:
    a stride-32 detector still takes it), for pnnx's `inputshape2` and verification at two sizes; None when the
    model has no such dim. Dims sharing a name stay equal (each is doubled alike)."""
    out: dict[str, tuple[int, ...]] = {}
    changed = False
    for info in inputs:
        shape = tuple(int(d) for d in shapes[info.name])
        if info.shape is None or len(shape) != info.rank:
            out[info.name] = shape
            continue
        first = 0 if info.rank == 1 else 1
        new = tuple(
            s * 2 if axis >= first and not isinstance(d, int) else s
            for axis, (d, s) in enumerate(zip(info.shape, shape))
        )
        changed |= new != shape
        out[info.name] = new
    return out if changed else None


def shapes_of(feeds: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(d) for d in np.shape(v)) for k, v in feeds.items()}


def format_shapes(shapes: Mapping[str, Sequence[int]]) -> str:
    """{"x": (1, 3, 320, 320)} -> "x:1x3x320x320" (the CLI's --shape syntax)."""
    return ",".join(f"{k}:{'x'.join(str(int(d)) for d in v) or 'scalar'}" for k, v in shapes.items())
