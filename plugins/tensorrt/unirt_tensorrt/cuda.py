"""The few CUDA runtime calls the runner needs, through cuda-python, each checked: device and pinned host memory,
a stream, async copies. Imported only where a GPU and cuda-python are present."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

try:  # cuda-python >= 12.6 moved the runtime bindings to cuda.bindings
    from cuda.bindings import runtime as cudart
except ImportError:  # pragma: no cover - older cuda-python
    from cuda import cudart

from .errors import cuda_failure

H2D = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
D2H = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost


def check(result: tuple[Any, ...], call: str, during_run: bool = False) -> Any:
    """cuda-python returns (cudaError_t, *values): raise a unirt error unless it is cudaSuccess."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise cuda_failure(call, err.name if hasattr(err, "name") else str(err), during_run)
    return values[0] if len(values) == 1 else tuple(values)


def set_device(index: int) -> None:
    check(cudart.cudaSetDevice(index), "cudaSetDevice")


def device_properties(index: int) -> tuple[str, str]:
    """(GPU name, compute capability "8.9")."""
    props = check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 "), f"{props.major}.{props.minor}"


class DeviceBuffer:
    """cudaMalloc'd memory, grown on demand, freed on close."""

    def __init__(self) -> None:
        self.ptr, self.size = 0, 0

    def ensure(self, size: int, during_run: bool) -> int:
        if size > self.size or not self.ptr:  # a zero-size tensor still gets a real address
            self.close()
            self.ptr = int(check(cudart.cudaMalloc(max(size, 1)), "cudaMalloc", during_run))
            self.size = max(size, 1)
        return self.ptr

    def close(self) -> None:
        if self.ptr:
            cudart.cudaFree(self.ptr)
        self.ptr, self.size = 0, 0


class PinnedBuffer:
    """Page-locked host memory for async copies, viewed as numpy arrays (views never outlive a run)."""

    def __init__(self) -> None:
        self.ptr, self.size = 0, 0

    def ensure(self, size: int, during_run: bool) -> int:
        if size > self.size or not self.ptr:  # a zero-size tensor still gets a real address
            self.close()
            self.ptr = int(check(cudart.cudaMallocHost(max(size, 1)), "cudaMallocHost", during_run))
            self.size = max(size, 1)
        return self.ptr

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            cudart.cudaFreeHost(self.ptr)
        self.ptr, self.size = 0, 0


class Stream:
    def __init__(self) -> None:
        self.handle = check(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def copy_in(self, device_ptr: int, host_ptr: int, size: int) -> None:
        check(cudart.cudaMemcpyAsync(device_ptr, host_ptr, size, H2D, self.handle), "cudaMemcpyAsync", True)

    def copy_out(self, host_ptr: int, device_ptr: int, size: int) -> None:
        check(cudart.cudaMemcpyAsync(host_ptr, device_ptr, size, D2H, self.handle), "cudaMemcpyAsync", True)

    def synchronize(self) -> None:
        check(cudart.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize", True)

    def close(self) -> None:
        if self.handle is not None:
            cudart.cudaStreamDestroy(self.handle)
            self.handle = None
