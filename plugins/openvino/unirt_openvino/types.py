"""OpenVINO element types as numpy dtypes. `ov.Type.to_dtype()` maps bf16 to float16 (same size, other values):
unirt maps by name instead, with ml_dtypes for the types numpy lacks."""

from __future__ import annotations

import numpy as np

OV_TYPES: dict[str, np.dtype] = {
    name: np.dtype(t)
    for name, t in {
        "f32": np.float32,
        "f64": np.float64,
        "f16": np.float16,
        "i8": np.int8,
        "i16": np.int16,
        "i32": np.int32,
        "i64": np.int64,
        "u8": np.uint8,
        "u16": np.uint16,
        "u32": np.uint32,
        "u64": np.uint64,
        "boolean": np.bool_,
        "string": np.object_,
    }.items()
}
try:
    import ml_dtypes

    OV_TYPES.update(
        {
            "bf16": np.dtype(ml_dtypes.bfloat16),
            "f8e4m3": np.dtype(ml_dtypes.float8_e4m3fn),
            "f8e5m2": np.dtype(ml_dtypes.float8_e5m2),
            "i4": np.dtype(ml_dtypes.int4),
            "u4": np.dtype(ml_dtypes.uint4),
        }
    )
except ImportError:  # pragma: no cover - ml_dtypes comes with onnx and ai-edge-litert
    pass

#: numpy dtypes OpenVINO can wrap without a copy (ov.Tensor(array, shared_memory=True)).
SHAREABLE = frozenset(
    np.dtype(t)
    for t in (
        np.float32,
        np.float64,
        np.float16,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.bool_,
    )
)


def numpy_dtype(type_name: str) -> np.dtype | None:
    """The numpy dtype for an OpenVINO type name (`ov.Type.get_type_name()`), None if numpy cannot hold it."""
    return OV_TYPES.get(type_name)
