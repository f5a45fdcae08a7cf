"""ExportedProgram -> ONNX with torch's dynamo exporter (`torch.onnx.export(ep, dynamo=True)`, needs onnxscript), so
every backend that reads ONNX runs a PyTorch model. The ONNX model keeps the program's input and output names (the
names the torch backend reports) and its dynamic dims. Called by an ONNX backend's `convert` (ONNX Runtime lists
`torch-export` in `converts_from`), inside unirt's conversion layer, which verifies the result against the torch
backend's own answer and caches it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from unirt import ConversionError, ModelFile, ModelFormat, open_model

__all__ = ["export_onnx", "INSTALL_HINT"]

INSTALL_HINT = "pip install './plugins/torch[engine]' (torch and onnxscript)"


def export_onnx(model: ModelFile, out_dir: Path, opset: int | None = None) -> ModelFile:
    """Write `model` (a torch.export archive) as `<out_dir>/<stem>.onnx` and return it."""
    if model.format is not ModelFormat.TORCH_EXPORT:
        raise ConversionError(
            f"{model.name}: only torch.export programs (.pt2) convert to ONNX; this is a "
            f"{model.format} model (an AOTInductor package is compiled code, TorchScript has no "
            "exported program: export the module with torch.export)"
        )
    try:
        import torch
    except ImportError:
        raise ConversionError(f"converting a PyTorch model to ONNX needs torch: {INSTALL_HINT}") from None
    try:
        import onnxscript  # noqa: F401 - the dynamo exporter's dependency, checked here for a clear message
    except ImportError:
        raise ConversionError(f"torch's ONNX exporter needs onnxscript: {INSTALL_HINT}") from None
    from .loaders import load_model

    loaded = load_model(model, torch.device("cpu"), {})
    ep = (
        torch.export.load(str(model.path))
        if model.path is not None
        else torch.export.load(__import__("io").BytesIO(model.read_bytes()))
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ((Path(model.path).stem if model.path is not None else "model") + ".onnx")
    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                ep,
                (),
                dynamo=True,
                input_names=[i.name for i in loaded.inputs],
                output_names=[o.name for o in loaded.outputs],
                verbose=False,
                **kwargs,
            )
            if program is None:  # only the non-dynamo exporter returns None
                raise RuntimeError("torch.onnx.export returned no ONNX program")
            program.save(str(path))
    except Exception as exc:
        raise ConversionError(
            f"{model.name}: torch.onnx.export (dynamo) failed: {type(exc).__name__}: {str(exc).strip()[:1500]}"
        ) from exc
    return open_model(path)
