"""TensorRT data types as numpy dtypes, by the DataType member's name so no tensorrt import is needed."""

from __future__ import annotations

import numpy as np

TRT_TO_NUMPY: dict[str, np.dtype] = {
    name: np.dtype(t) for name, t in {
        "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
        "BOOL": np.bool_, "UINT8": np.uint8,
    }.items()
}
try:  # numpy lacks bf16/fp8/int4; ml_dtypes provides them
    import ml_dtypes

    TRT_TO_NUMPY.update({"BF16": np.dtype(ml_dtypes.bfloat16), "FP8": np.dtype(ml_dtypes.float8_e4m3fn),
                         "INT4": np.dtype(ml_dtypes.int4)})
except ImportError:  # pragma: no cover
    pass


def numpy_dtype(trt_type_name: str, tensor: str) -> np.dtype:
    """The numpy dtype for a TensorRT DataType name ("FLOAT", "HALF", ...); UnsupportedOptionError-free: a type
    numpy cannot hold (FP4, packed INT4 without ml_dtypes) is a ModelLoadError naming the tensor."""
    from unirt import ModelLoadError

    dtype = TRT_TO_NUMPY.get(trt_type_name)
    if dtype is None:
        raise ModelLoadError(f"tensorrt: tensor {tensor!r} has TensorRT type {trt_type_name}, which numpy cannot "
                             "hold (install ml_dtypes for BF16/FP8/INT4)")
    return dtype


def nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes a tensor of `shape` and `dtype` occupies on the device (packed int4 takes half a byte)."""
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if dtype.name == "int4":
        return (count + 1) // 2
    return count * dtype.itemsize
