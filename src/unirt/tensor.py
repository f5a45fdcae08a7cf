"""`TensorInfo` (what a model input or output is) and turning array-likes into numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["Dim", "TensorInfo", "Quantization", "to_array", "normalize_dim", "is_placeholder_name"]

Dim = int | str | None  # a fixed size, a symbolic name, or unknown (anonymous dynamic)
_DLPACK_CPU = 1  # DLDeviceType kDLCPU
_DLPACK_CPU_LIKE = {1, 3}  # kDLCPU, kDLCUDAHost (pinned host memory is readable from the CPU)
_DLPACK_DEVICES = {2: "cuda", 4: "opencl", 7: "vulkan", 8: "metal", 10: "rocm", 13: "cuda (managed)", 14: "oneapi"}


# dim_param values exporters write where they mean "some size" rather than a name (paddle2onnx "?", "-1"; others
# "", "None", "null"...). Compared lower-cased and stripped; strings that are numbers ("3", "-1") are placeholders too.
_PLACEHOLDER_NAMES = frozenset({"", "none", "null", "nil", "undefined", "unknown", "unk", "dynamic", "any", "*"})


def is_placeholder_name(name: str) -> bool:
    """Whether a dim name is an exporter's placeholder for "dynamic" rather than a name that ties dims together.

    Placeholders: empty or whitespace, only question marks ("?"), "None"/"null"/"unknown"/..., and any number
    ("-1", "3", "2.0"; ONNX Runtime does not take a numeric dim_param as that size either). Names stay names,
    however they were made: torch's "batch_size"/"s0", keras2onnx's "N", tf2onnx's and ONNX shape inference's
    "unk__12", paddle2onnx's "p2o.DynamicDimension.0" — the generated ones are unique per dim, so they tie
    nothing, and where a name does appear twice the exporter says the sizes are equal.
    """
    text = name.strip().lower()
    if text in _PLACEHOLDER_NAMES or not text.strip("?"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def normalize_dim(d: Any) -> Dim:
    """One model dim as unirt holds it: a size >= 0 (int), a real name (str), or None for an anonymous dynamic dim.

    The one place that decides what a dim from a model file means; `TensorInfo` passes every dim through it, so
    every plugin gets the same answer. Negative sizes (`dim_value -1`, TFLite's and MNN's -1) and placeholder
    names (`is_placeholder_name`) become None; numpy integers become int.
    """
    if d is None:
        return None
    if isinstance(d, str):
        return None if is_placeholder_name(d) else str(d)
    if isinstance(d, (bytes, bytearray)):
        return normalize_dim(bytes(d).decode("utf-8", "replace"))
    if isinstance(d, (bool, np.bool_)):
        raise TypeError(f"a dim must be an int, a name or None, got {d!r}")
    if isinstance(d, (int, np.integer)):
        return int(d) if d >= 0 else None
    if isinstance(d, (float, np.floating)) and float(d).is_integer():
        return int(d) if d >= 0 else None
    raise TypeError(f"a dim must be an int, a name or None, got {type(d).__name__} {d!r}")


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of an integer tensor: real = scale * (q - zero_point), per tensor or along `axis`."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, shape and numpy dtype.

    Each dim is a size (int >= 0), a name (str: dims with the same name have the same size, e.g. a batch "N" on
    every input) or None (dynamic, anonymous: it ties to nothing). Dims are normalized on construction
    (`normalize_dim`): exporters' placeholders ("?", "", "-1", dim_value -1...) become None."""

    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype
    quantization: Quantization | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(normalize_dim(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_dynamic(self) -> bool:
        """True when any dim is unknown until run time."""
        return any(not isinstance(d, int) for d in self.shape)

    def shape_str(self) -> str:
        """e.g. "[N,3,?,?]": sizes, names as they are, "?" for an anonymous dynamic dim."""
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
            raise InputError(
                f"input {name!r}: the tensor lives on {where}:{index}; this session reads host memory. "
                "Move it to the CPU first (e.g. tensor.cpu())."
            )
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
    if natural.dtype.kind == "O" and expected.kind != "O":
        raise InputError(
            f"input {name!r}: cannot convert {type(value).__name__} to an array of {expected} "
            "(ragged nested sequences or mixed types?)"
        )
    if expected.kind in "OUS" and natural.dtype.kind in "US":
        return natural.astype(expected) if expected.kind == "O" else natural
    if natural.dtype == expected or not np.can_cast(natural.dtype, expected, casting="same_kind"):
        return natural  # the session's dtype check reports a mismatch
    if expected.kind in "iu" and natural.dtype.kind in "iu" and natural.size:
        info = np.iinfo(expected)
        low, high = natural.min(), natural.max()
        if low < info.min or high > info.max:
            raise InputError(f"input {name!r}: values {low}..{high} do not fit {expected} ({info.min}..{info.max})")
    return natural.astype(expected)
