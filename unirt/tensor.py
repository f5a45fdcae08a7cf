"""`TensorInfo` (what a model input or output is) and turning array-likes into numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from .errors import InputError

__all__ = ["Dim", "TensorInfo", "Quantization", "to_array"]

Dim = Union[int, str, None]  # a fixed size, a symbolic name, or unknown
_DLPACK_CPU = 1  # DLDeviceType kDLCPU
_DLPACK_CPU_LIKE = {1, 3}  # kDLCPU, kDLCUDAHost (pinned host memory is readable from the CPU)
_DLPACK_DEVICES = {2: "cuda", 4: "opencl", 7: "vulkan", 8: "metal", 10: "rocm", 13: "cuda (managed)", 14: "oneapi"}


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of an integer tensor: real = scale * (q - zero_point), per tensor or along `axis`."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, shape (ints, symbolic names or None for dynamic dims) and numpy dtype."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype
    quantization: Quantization | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_dynamic(self) -> bool:
        """True when any dim is unknown until run time."""
        return any(not isinstance(d, int) for d in self.shape)

    def shape_str(self) -> str:
        return "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"

    def __repr__(self) -> str:
        extra = f", quantization={self.quantization}" if self.quantization else ""
        return f"TensorInfo({self.name!r}, {self.dtype}{self.shape_str()}{extra})"


def _dlpack_to_numpy(value: Any, name: str) -> np.ndarray:
    device = getattr(value, "__dlpack_device__", None)
    if device is not None:
        kind, index = device()
        if int(kind) not in _DLPACK_CPU_LIKE:
            where = _DLPACK_DEVICES.get(int(kind), f"device type {int(kind)}")
            raise InputError(f"input {name!r}: the tensor lives on {where}:{index}; this session reads host memory. "
                             "Move it to the CPU first (e.g. tensor.cpu()).")
    try:
        return np.from_dlpack(value)
    except (BufferError, RuntimeError, TypeError) as exc:
        # e.g. torch refuses tensors that require grad; fall back to the array protocol where it exists.
        if hasattr(value, "__array__"):
            try:
                return np.asarray(value)
            except Exception:
                pass
        raise InputError(f"input {name!r}: cannot read the {type(value).__name__} through DLPack ({exc})") from None


def to_array(value: Any, name: str, expected: np.dtype) -> np.ndarray:
    """Any array-like as a numpy array, without copying where the producer allows.

    numpy arrays pass through; DLPack producers (torch, jax, cupy-on-host...) are wrapped without a copy;
    objects with `__array__` use it. Python scalars and lists have no dtype of their own, so they take the
    model's dtype when that conversion loses no kind (int -> float is fine, float -> int is an error).
    """
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    if hasattr(value, "__dlpack__") and not isinstance(value, (bytes, str)):
        return _dlpack_to_numpy(value, name)
    if hasattr(value, "__array__") or hasattr(value, "__array_interface__"):
        try:
            return np.asarray(value)
        except Exception as exc:
            raise InputError(f"input {name!r}: cannot convert {type(value).__name__} to an array ({exc})") from None
    # Python objects (numbers, nested lists): no dtype of their own.
    try:
        natural = np.asarray(value)
    except Exception as exc:
        raise InputError(f"input {name!r}: cannot convert {type(value).__name__} to an array ({exc})") from None
    if natural.dtype == object and expected != object:
        raise InputError(f"input {name!r}: cannot convert {type(value).__name__} to an array of {expected} "
                         "(ragged nested sequences or mixed types?)")
    if expected.kind in "OUS" and natural.dtype.kind in "US":
        return natural.astype(expected) if expected == object else natural
    if natural.dtype == expected or not np.can_cast(natural.dtype, expected, casting="same_kind"):
        return natural  # the session's dtype check reports a mismatch
    if expected.kind in "iu" and natural.dtype.kind in "iu" and natural.size:
        info = np.iinfo(expected)
        low, high = natural.min(), natural.max()
        if low < info.min or high > info.max:
            raise InputError(f"input {name!r}: values {low}..{high} do not fit {expected} "
                             f"({info.min}..{info.max})")
    return natural.astype(expected)
