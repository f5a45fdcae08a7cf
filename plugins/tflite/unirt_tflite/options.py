"""unirt's options in LiteRT's terms. Pure logic (no ai_edge_litert import)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unirt import Quantization, UnsupportedOptionError

OWN_KEYS = ("xnnpack", "delegates", "op_resolver", "preserve_all_tensors")
OP_RESOLVERS = {
    "auto": "AUTO",
    "builtin": "BUILTIN",
    "builtin_ref": "BUILTIN_REF",
    "builtin_without_default_delegates": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
}


@dataclass(frozen=True)
class InterpreterSettings:
    """Keyword arguments for `Interpreter`, except the delegates, which are loaded by the runner."""

    op_resolver: str = "AUTO"
    preserve_all_tensors: bool = False
    delegates: tuple[Any, ...] = field(default_factory=tuple)


def interpreter_settings(options: Mapping[str, Any]) -> InterpreterSettings:
    """Check backend_options: xnnpack (bool, default True), delegates (library paths, {"library", "options"} dicts
    or loaded Delegate objects), op_resolver, preserve_all_tensors."""
    unknown = [k for k in options if k not in OWN_KEYS]
    if unknown:
        raise UnsupportedOptionError(f"tflite: unknown backend option {unknown[0]!r}; use one of {', '.join(OWN_KEYS)}")
    xnnpack = options.get("xnnpack", True)
    if not isinstance(xnnpack, bool):
        raise UnsupportedOptionError(f"tflite: xnnpack must be True or False, got {xnnpack!r}")
    resolver = options.get("op_resolver")
    if resolver is not None and resolver not in OP_RESOLVERS:
        raise UnsupportedOptionError(f"tflite: op_resolver must be one of {', '.join(OP_RESOLVERS)}, got {resolver!r}")
    if resolver is None:
        resolver = "auto" if xnnpack else "builtin_without_default_delegates"
    elif not xnnpack and resolver in ("auto", "builtin"):
        raise UnsupportedOptionError(f"tflite: op_resolver {resolver!r} applies XNNPACK; it contradicts xnnpack=False")
    delegates = options.get("delegates", ())
    if isinstance(delegates, (str, Mapping)) or not isinstance(delegates, Sequence):
        delegates = (delegates,)
    for d in delegates:
        if isinstance(d, Mapping) and "library" not in d:
            raise UnsupportedOptionError(
                f"tflite: a delegate given as a dict needs a 'library' key (and optional 'options'), got {dict(d)!r}"
            )
    return InterpreterSettings(
        OP_RESOLVERS[resolver], bool(options.get("preserve_all_tensors", False)), tuple(delegates)
    )


def precision_in_force(requested: str, quantized: bool) -> str:
    """TFLite on the CPU computes float models in fp32 and quantized models in int8; it has no switch for fp16 or
    bf16 arithmetic on an fp32 model. A quantized model runs int8 whatever was asked: that is the model itself."""
    if requested in ("fp16", "bf16"):
        raise UnsupportedOptionError(
            f"tflite cannot run a model in {requested} on the cpu; it supports fp32, and "
            "int8 for quantized models (convert the model with fp16 or int8 quantization "
            "instead)"
        )
    if requested == "int8" and not quantized:
        raise UnsupportedOptionError(
            "tflite runs int8 only from a quantized model (int8/uint8 tensors with scales); "
            "this model is float. It supports fp32 here; quantize the model when converting"
        )
    return "int8" if quantized else "fp32"


def quantization(params: Mapping[str, Any] | None, dtype: np.dtype) -> Quantization | None:
    """unirt's Quantization from an interpreter's `quantization_parameters` (None for float tensors)."""
    if not params or dtype.kind not in "iu":
        return None
    scales = np.asarray(params.get("scales", ()), dtype=np.float64)
    if scales.size == 0:
        return None
    zero_points = np.asarray(params.get("zero_points", ()), dtype=np.int64)
    if zero_points.size == 0:
        zero_points = np.zeros_like(scales, dtype=np.int64)
    axis = int(params.get("quantized_dimension", 0)) if scales.size > 1 else None
    return Quantization(tuple(float(s) for s in scales), tuple(int(z) for z in zero_points), axis)


def dims(signature: Sequence[int]) -> tuple[int | None, ...]:
    """A shape_signature (-1 for dynamic dims) as unirt dims (None for dynamic)."""
    return tuple(None if int(d) < 0 else int(d) for d in signature)
