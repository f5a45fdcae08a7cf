"""unirt's options in TensorRT's terms: builder flags for each precision and the backend_options. Pure logic."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from unirt import UnsupportedOptionError

OWN_KEYS = ("max_batch", "opt_batch", "shapes", "workspace", "engine_cache", "timing_cache",
            "builder_optimization_level")
DEFAULT_WORKSPACE = 1 << 30  # bytes of scratch memory the builder may use for tactics


@dataclass(frozen=True)
class BuildSettings:
    max_batch: int | None = None
    opt_batch: int | None = None
    shapes: Mapping[str, Any] = field(default_factory=dict)
    workspace: int = DEFAULT_WORKSPACE
    engine_cache: bool = True
    timing_cache: bool = True
    optimization_level: int | None = None

    def cache_fields(self) -> dict[str, Any]:
        """What, besides the profile and precision, makes one engine differ from another."""
        return {"workspace": self.workspace, "optimization_level": self.optimization_level}


def build_settings(options: Mapping[str, Any], max_batch: int | None = None) -> BuildSettings:
    """The build settings from `backend_options`; `max_batch` is the Session's (`LoadOptions.max_batch`): the
    profile's batch range when backend_options gives no max_batch of its own, which must not be smaller."""
    unknown = [k for k in options if k not in OWN_KEYS]
    if unknown:
        raise UnsupportedOptionError(f"tensorrt: unknown backend option {unknown[0]!r}; "
                                     f"use one of {', '.join(OWN_KEYS)}")
    workspace = options.get("workspace", DEFAULT_WORKSPACE)
    if isinstance(workspace, bool) or not isinstance(workspace, int) or workspace <= 0:
        raise UnsupportedOptionError(f"tensorrt: workspace must be a positive number of bytes, got {workspace!r}")
    level = options.get("builder_optimization_level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 5):
        raise UnsupportedOptionError(f"tensorrt: builder_optimization_level must be 0..5, got {level!r}")
    shapes = options.get("shapes", {})
    if not isinstance(shapes, Mapping):
        raise UnsupportedOptionError(f"tensorrt: shapes must be a dict {{input name: shape or range}}, got {shapes!r}")
    for key in ("engine_cache", "timing_cache"):
        if not isinstance(options.get(key, True), bool):
            raise UnsupportedOptionError(f"tensorrt: {key} must be True or False, got {options[key]!r}")
    own = options.get("max_batch")
    if max_batch is not None and isinstance(own, int) and not isinstance(own, bool) and own < max_batch:
        raise UnsupportedOptionError(f"tensorrt: backend_options max_batch {own} is smaller than the Session's "
                                     f"max_batch {max_batch}, which requests are split at; drop one or raise it")
    return BuildSettings(own if own is not None else max_batch, options.get("opt_batch"), dict(shapes), workspace,
                         options.get("engine_cache", True), options.get("timing_cache", True), level)


def builder_flags(precision: str, quantized: bool, compute_capability: str,
                  fast_fp16: bool) -> tuple[set[str], set[str]]:
    """(BuilderFlag names to set, names to clear) for a unirt precision on a GPU of `compute_capability`.

    fp32 clears TF32, which TensorRT enables by default on Ampere and later: fp32 must mean fp32.
    """
    major = int(compute_capability.split(".")[0]) if compute_capability[:1].isdigit() else 0
    supported = (["fp32"] + (["fp16"] if fast_fp16 else []) + (["bf16"] if major >= 8 else [])
                 + ["int8 (quantized models)"])
    if precision == "fp32":
        return set(), {"TF32"}
    if precision == "fp16":
        if not fast_fp16:
            raise UnsupportedOptionError(f"tensorrt: this GPU (sm {compute_capability}) has no fast fp16; it supports "
                                         f"{', '.join(supported)}")
        return {"FP16"}, {"TF32"}
    if precision == "bf16":
        if major < 8:
            raise UnsupportedOptionError(f"tensorrt: bf16 needs an Ampere or later GPU (sm 8.0+), this one is sm "
                                         f"{compute_capability}; it supports {', '.join(supported)}")
        return {"BF16"}, {"TF32"}
    if precision == "int8":
        if not quantized:
            raise UnsupportedOptionError("tensorrt runs int8 from a quantized (QDQ) ONNX model; this one has no "
                                         "QuantizeLinear/DequantizeLinear. It supports fp32, fp16, bf16 for it")
        return {"INT8"}, {"TF32"}
    raise UnsupportedOptionError(f"tensorrt: unknown precision {precision!r}; it supports {', '.join(supported)}")


def precision_info(precision: str, compute_capability: str, gpu: str) -> str:
    """How the precision of an engine built here was set: the BuilderFlags from `builder_flags`. A reduced-precision
    flag allows TensorRT to pick kernels of that precision where its timing finds them faster (layers whose
    reduced kernels are slower, or that lack them, stay fp32): the precision named is the one the engine may use."""
    if precision == "fp32":
        return f"fp32 (TensorRT BuilderFlag TF32 cleared; {gpu}, sm {compute_capability})"
    if precision == "int8":
        return f"int8 (TensorRT BuilderFlag INT8 on a QDQ model: the quantized layers; {gpu}, sm {compute_capability})"
    flag = precision.upper()
    why = "Builder.platform_has_fast_fp16" if precision == "fp16" else "bf16 tensor cores (sm 8.0+)"
    return (f"{precision} (TensorRT BuilderFlag {flag}, TF32 cleared; {gpu}, sm {compute_capability}, {why}: TensorRT "
            f"uses {precision} kernels per layer where they are faster, fp32 elsewhere)")


def check_engine_precision(model: str, precision: str) -> None:
    """A prebuilt engine runs in the precision it was built with: refuse asking for another one (fp32, the default,
    means "as built": repr shows that) rather than silently ignore it."""
    if precision != "fp32":
        raise UnsupportedOptionError(f"tensorrt: {model} is a prebuilt engine, whose precision was fixed when it was "
                                     f"built: precision={precision!r} cannot be applied to it. Load the ONNX model "
                                     "with that precision to build such an engine, or leave the default (fp32) to "
                                     "run this one as built")


def looks_quantized(onnx_bytes: bytes) -> bool:
    """An ONNX model with QDQ nodes (op types are stored as plain strings)."""
    return b"QuantizeLinear" in onnx_bytes or b"DequantizeLinear" in onnx_bytes
