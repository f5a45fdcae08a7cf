"""TensorRT data types as numpy dtypes, by the DataType member's name so no tensorrt import is needed."""

from __future__ import annotations

import numpy as np

TRT_TO_NUMPY: dict[str, np.dtype] = {
    name: np.dtype(t)
    for name, t in {
        "FLOAT": np.float32,
        "HALF": np.float16,
        "INT8": np.int8,
        "INT32": np.int32,
        "INT64": np.int64,
        "BOOL": np.bool_,
        "UINT8": np.uint8,
    }.items()
}
try:  # numpy lacks bf16/fp8; ml_dtypes provides them (TensorRT's FP8 is E4M3 with bias 7: float8_e4m3fn)
    import ml_dtypes

    TRT_TO_NUMPY.update({"BF16": np.dtype(ml_dtypes.bfloat16), "FP8": np.dtype(ml_dtypes.float8_e4m3fn)})
except ImportError:  # pragma: no cover
    pass

#: TensorRT types packed two to a byte (INT4, FP4): a numpy array holds one value per byte, so no copy between
#: them is right.
PACKED = frozenset({"INT4", "FP4"})


def numpy_dtype(trt_type_name: str, tensor: str) -> np.dtype:
    """The numpy dtype for a TensorRT DataType name ("FLOAT", "HALF", ...); a type numpy cannot hold as TensorRT
    lays it out (packed INT4/FP4, E8M0, BF16/FP8 without ml_dtypes) is a ModelLoadError naming the tensor."""
    from unirt import ModelLoadError

    dtype = TRT_TO_NUMPY.get(trt_type_name)
    if trt_type_name in PACKED:
        raise ModelLoadError(
            f"tensorrt: tensor {tensor!r} has TensorRT type {trt_type_name}, packed two values to a "
            "byte, which unirt cannot pass to or from numpy; use an int8/uint8 tensor at the model's "
            "boundary"
        )
    if dtype is None:
        raise ModelLoadError(
            f"tensorrt: tensor {tensor!r} has TensorRT type {trt_type_name}, which numpy cannot "
            "hold (install ml_dtypes for BF16/FP8)"
        )
    return dtype


def nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes a tensor of `shape` and `dtype` occupies on the device (one numpy itemsize per value)."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    return count * dtype.itemsize
