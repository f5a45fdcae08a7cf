"""Tensors that live on a device (CUDA), given to `Session.run` through DLPack or `__cuda_array_interface__`.

A backend that runs on the GPU lists the device kinds it takes as they are (`BackendSession.device_inputs`, e.g.
{"cuda"}); unirt then checks a device tensor's dtype, shape and contiguity from its metadata, without copying it or
touching its memory, and hands the backend a `DeviceTensor` (the original object and what was read). A host-only
backend refuses a device tensor with an InputError that says to pass host memory, unless the session was opened
with `copy_device_inputs=True` (then it is copied to the host, said in the docs as the slow path it is).

Metadata comes from, in order: a torch tensor's own attributes, `__cuda_array_interface__` (CuPy, Numba, torch),
or the DLPack capsule's DLTensor read with ctypes (any DLPack producer: JAX, CuPy, ...). Nothing imports torch.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["DeviceTensor", "device_of", "describe", "host_copy"]

# DLDeviceType -> unirt device kind; kDLCPU (1) and kDLCUDAHost (3, pinned host memory) are host memory
_DLPACK_KINDS = {2: "cuda", 13: "cuda", 4: "opencl", 7: "vulkan", 8: "metal", 10: "rocm", 14: "oneapi"}
_HOST = (1, 3)


class _Flags:
    c_contiguous = True  # a DeviceTensor is checked to be C-contiguous when it is made


class DeviceTensor:
    """A checked device tensor: `value` (the caller's object, passed on as it is), `device` ("cuda:0"), `shape`,
    `dtype` (numpy), `ptr` (its data pointer, as the engine will see it)."""

    __slots__ = ("value", "device", "shape", "dtype", "ptr")
    flags = _Flags()

    def __init__(self, value: Any, device: str, shape: tuple[int, ...], dtype: np.dtype, ptr: int) -> None:
        self.value, self.device, self.shape, self.dtype, self.ptr = value, device, shape, dtype, ptr

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def to_torch(self, torch: Any) -> Any:
        """The tensor as a torch tensor on its device, sharing its memory (torch.from_dlpack or the CUDA array
        interface)."""
        if isinstance(self.value, torch.Tensor):
            return self.value
        if hasattr(self.value, "__dlpack__"):
            return torch.from_dlpack(self.value)
        return torch.as_tensor(self.value, device=self.device)

    def __repr__(self) -> str:
        return f"DeviceTensor({self.device}, {self.dtype}{list(self.shape)}, ptr=0x{self.ptr:x})"


def device_of(value: Any) -> tuple[str, int] | None:
    """(kind, index) of a tensor that lives on a device, None for host memory (or anything else)."""
    probe = getattr(value, "__dlpack_device__", None)
    if probe is not None:
        kind, index = probe()
        if int(kind) in _HOST:
            return None
        return _DLPACK_KINDS.get(int(kind), f"device type {int(kind)}"), int(index)
    if hasattr(type(value), "__cuda_array_interface__") or hasattr(value, "__cuda_array_interface__"):
        return "cuda", _cai_device(value)
    return None


def _cai_device(value: Any) -> int:
    """The CUDA device a `__cuda_array_interface__` pointer is on (0 where the CUDA driver is not loaded)."""
    ptr = value.__cuda_array_interface__["data"][0]
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    attr = ctypes.c_int()
    # CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9
    if cuda.cuPointerGetAttribute(ctypes.byref(attr), 9, ctypes.c_uint64(ptr)) != 0:
        return 0
    return attr.value


def _torch_meta(value: Any) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    name = str(value.dtype).removeprefix("torch.")
    try:
        dtype = np.dtype(name)
    except TypeError:
        import ml_dtypes

        dtype = np.dtype(getattr(ml_dtypes, name))
    return tuple(value.shape), dtype, value.data_ptr(), value.is_contiguous()


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    if strides is None:
        return True
    return all(s == c or n <= 1 for s, c, n in zip(strides, _c_strides(shape, itemsize), shape, strict=True))


def _cai_meta(cai: dict) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    shape = tuple(int(d) for d in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    return shape, dtype, int(cai["data"][0]), _contiguous(shape, tuple(strides) if strides else None, dtype.itemsize)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


_DL_CODES = {0: "i", 1: "u", 2: "f", 5: "c"}


def _dlpack_meta(value: Any) -> tuple[tuple[int, ...], np.dtype, int, bool]:
    """Read the DLTensor behind `value.__dlpack__()` (legacy "dltensor" capsule) without consuming it: the capsule's
    destructor gives it back to the producer."""
    capsule = value.__dlpack__()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    address = get(capsule, b"dltensor")
    t = _DLTensor.from_address(address)  # DLManagedTensor starts with its DLTensor
    shape = tuple(t.shape[k] for k in range(t.ndim))
    code, bits = t.dtype.code, t.dtype.bits
    if t.dtype.lanes != 1:
        raise TypeError(f"vector dtype (lanes={t.dtype.lanes})")
    if code == 6 or (code == 1 and bits == 1):
        dtype = np.dtype(np.bool_)
    elif code == 4 and bits == 16:
        import ml_dtypes

        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(f"{_DL_CODES[code]}{bits // 8}")
    strides = tuple(t.strides[k] * dtype.itemsize for k in range(t.ndim)) if t.strides else None
    return shape, dtype, (t.data or 0) + t.byte_offset, _contiguous(shape, strides, dtype.itemsize)


def describe(value: Any, name: str, kind: str, index: int) -> DeviceTensor:
    """A checked `DeviceTensor` for device tensor `value` (input `name`); InputError if it cannot be read or is not
    C-contiguous."""
    try:
        if type(value).__module__.startswith("torch"):
            meta = _torch_meta(value)
        elif hasattr(value, "__cuda_array_interface__"):
            meta = _cai_meta(value.__cuda_array_interface__)
        else:
            meta = _dlpack_meta(value)
    except Exception as exc:
        raise InputError(
            f"input {name!r}: cannot read the {type(value).__name__} on {kind}:{index} ({type(exc).__name__}: {exc})"
        ) from None
    shape, dtype, ptr, contiguous = meta
    if not contiguous:
        raise InputError(
            f"input {name!r}: the tensor on {kind}:{index} is not C-contiguous; pass a contiguous one "
            "(torch: x.contiguous(), CuPy: cupy.ascontiguousarray(x)): unirt does not copy device memory"
        )
    return DeviceTensor(value, f"{kind}:{index}", shape, dtype, ptr)


def host_copy(value: Any, name: str) -> np.ndarray:
    """A host copy of device tensor `value` (copy_device_inputs=True): DLPack's copy to the CPU, else the
    producer's own method (torch .cpu(), CuPy .get())."""
    try:
        return np.from_dlpack(value, device="cpu", copy=True)
    except Exception:
        pass
    for method in ("cpu", "get"):
        fn = getattr(value, method, None)
        if callable(fn):
            try:
                return np.asarray(fn())
            except Exception:
                continue
    raise InputError(
        f"input {name!r}: cannot copy the {type(value).__name__} to host memory (no DLPack copy to "
        "the CPU, no .cpu() or .get())"
    )
