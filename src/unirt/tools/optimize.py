"""`unirt.tools.optimize`: simplify an ONNX model with onnxslim (constant folding, dead-node removal, shape
inference, fusions) and check on a backend that its outputs did not change."""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConversionError, UnsupportedOptionError
from ..formats import ModelFormat, PathLike, open_model
from . import onnx_model as om
from ._deps import require
from .compare import DEFAULT_REFERENCE, CompareReport, compare_models, pick_backends

__all__ = ["OptimizeReport", "optimize", "save_proto"]
log = logging.getLogger(__name__)
_TWO_GB = 2**31


@dataclass
class OptimizeReport:
    model: str
    output: str
    tool: str
    nodes_before: int
    nodes_after: int
    bytes_before: int | None
    bytes_after: int | None
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    check: CompareReport | None = None  # original vs optimized on one backend; None when not checked
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.check is None or self.check.passed

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k != "check"}
        d["check"] = self.check.to_dict() if self.check else None
        d["passed"] = self.passed
        return d


def _ops(proto: Any) -> dict[str, int]:
    return dict(Counter(n.op_type for g in om.walk_graphs(proto.graph) for n in g.node).most_common())


def save_proto(proto: Any, out: Path) -> None:
    """Save an ONNX model; weights go to `<out>.data` when the model is over protobuf's 2 GB limit."""
    onnx = om.onnx_module()
    out.parent.mkdir(parents=True, exist_ok=True)
    big = proto.ByteSize() >= _TWO_GB
    onnx.save_model(proto, str(out), save_as_external_data=big, location=out.name + ".data" if big else None)


def check_output_path(model_path: Path | None, out: PathLike) -> Path:
    out = Path(out)
    if model_path is not None and out.resolve() == model_path.resolve():
        raise UnsupportedOptionError(f"output {out} is the input model; write to another file")
    if out.is_dir():
        raise UnsupportedOptionError(f"output {out} is a directory; give a file name such as model.opt.onnx")
    return out


def optimize(
    model: PathLike | bytes,
    out: PathLike,
    *,
    check: bool = True,
    backend: str | None = None,
    shapes: Mapping[str, Any] | str | None = None,
    inputs: Any = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    skip_fusions: bool = False,
) -> OptimizeReport:
    """Write onnxslim's simplification of `model` to `out`; with `check`, run both on `backend` (default
    onnxruntime, else the first available) on the same inputs and compare every output within atol/rtol."""
    mf = open_model(model)
    if mf.format is not ModelFormat.ONNX:
        raise UnsupportedOptionError(f"optimize works on ONNX models; {mf.name} is a {mf.format} model")
    out = check_output_path(mf.path, out)
    slim = require("onnxslim", "unirt optimize")
    proto = om.load_proto(mf, with_weights=True)
    nodes_before, ops_before = om.node_count(proto), _ops(proto)
    kwargs = {"skip_optimizations": ["graph_fusion"]} if skip_fusions else {}
    try:
        with contextlib.redirect_stdout(io.StringIO()) as chatter:  # onnxslim prints tables and banners
            slimmed = slim.slim(proto, **kwargs)
    except Exception as exc:
        raise ConversionError(f"onnxslim failed on {mf.name}: {type(exc).__name__}: {exc}") from None
    log.debug("onnxslim said: %s", chatter.getvalue())
    if slimmed is None:
        raise ConversionError(f"onnxslim returned no model for {mf.name}")
    save_proto(slimmed, out)
    report = OptimizeReport(
        model=mf.name,
        output=str(out),
        tool=f"onnxslim {getattr(slim, '__version__', '?')}",
        nodes_before=nodes_before,
        nodes_after=om.node_count(slimmed),
        bytes_before=mf.size or om.model_size(mf.path),
        bytes_after=om.model_size(out),
        ops_before=ops_before,
        ops_after=_ops(slimmed),
    )
    if check:
        if backend is None:
            usable = pick_backends(mf, None)
            backend = DEFAULT_REFERENCE if DEFAULT_REFERENCE in usable else usable[0]
        report.check = compare_models(
            mf,
            out,
            backend=backend,
            labels=("original", "optimized"),
            atol=atol,
            rtol=rtol,
            shapes=shapes,
            inputs=inputs,
        )
    return report
