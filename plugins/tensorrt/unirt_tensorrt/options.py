"""unirt's options in TensorRT's terms: the backend_options, the prebuilt-engine precision check, and whether a model
is quantized (Q/DQ). Pure logic (the builder flags per precision and TensorRT version are in plan.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from unirt import ModelFile, UnsupportedOptionError

OWN_KEYS = (
    "max_batch",
    "opt_batch",
    "shapes",
    "workspace",
    "engine_cache",
    "timing_cache",
    "builder_optimization_level",
)
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
        raise UnsupportedOptionError(
            f"tensorrt: unknown backend option {unknown[0]!r}; use one of {', '.join(OWN_KEYS)}"
        )
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
        raise UnsupportedOptionError(
            f"tensorrt: backend_options max_batch {own} is smaller than the Session's "
            f"max_batch {max_batch}, which requests are split at; drop one or raise it"
        )
    return BuildSettings(
        own if own is not None else max_batch,
        options.get("opt_batch"),
        dict(shapes),
        workspace,
        options.get("engine_cache", True),
        options.get("timing_cache", True),
        level,
    )


def check_engine_precision(model: str, precision: str) -> None:
    """A prebuilt engine runs in the precision it was built with: refuse asking for another one (fp32, the default,
    means "as built": repr shows that) rather than silently ignore it."""
    if precision != "fp32":
        raise UnsupportedOptionError(
            f"tensorrt: {model} is a prebuilt engine, whose precision was fixed when it was "
            f"built: precision={precision!r} cannot be applied to it. Load the ONNX model "
            "with that precision to build such an engine, or leave the default (fp32) to "
            "run this one as built"
        )


_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _graph_has_qdq(graph: Any) -> bool:
    for node in graph.node:
        if node.op_type in _QDQ_OPS and node.domain in ("", "ai.onnx", "com.microsoft"):
            return True
        for attr in node.attribute:  # If/Loop/Scan bodies
            if attr.HasField("g") and _graph_has_qdq(attr.g):
                return True
            if any(_graph_has_qdq(g) for g in attr.graphs):
                return True
    return False


def model_has_qdq(model: ModelFile | bytes) -> bool:
    """Whether an ONNX model has QuantizeLinear/DequantizeLinear nodes (explicit quantization: what TensorRT builds
    int8 from). Read with onnx (the graph only, no external weights); without onnx, by the op type strings the
    graph stores (a node or tensor named after them would count too)."""
    data = model if isinstance(model, (bytes, bytearray)) else None
    try:
        import onnx
    except ImportError:
        raw = bytes(data) if data is not None else model.read_bytes()  # type: ignore[union-attr]
        return any(op.encode() in raw for op in _QDQ_OPS)
    if data is None and model.path is not None:  # type: ignore[union-attr]
        proto = onnx.load(str(model.path), load_external_data=False)  # type: ignore[union-attr]
    else:
        proto = onnx.load_from_string(bytes(data) if data is not None else model.read_bytes())  # type: ignore
    return _graph_has_qdq(proto.graph) or any(_graph_has_qdq(f) for f in proto.functions)
