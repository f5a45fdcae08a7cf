"""The loader: says whether onnxruntime is usable here and loads sessions. onnxruntime is imported lazily."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from unirt import Availability, Backend, ConversionError, FormatFacts, LoadOptions, ModelFile, ModelFormat, hardware
from unirt.plugin_sdk import quiet_onnxruntime

from .providers import missing_gpu_note, offered_devices

if TYPE_CHECKING:
    from .session import OnnxRuntimeSession


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    formats = frozenset({ModelFormat.ONNX})
    install_hint = "pip install ./plugins/onnxruntime (from unirt's source checkout)"
    serve_platform = "onnxruntime_onnx"  # Triton's name for it
    format_facts = {ModelFormat.ONNX: FormatFacts(("model.onnx",), "onnx", "1")}
    #: PyTorch programs run here through ONNX: the torch plugin's exporter (torch.onnx dynamo), verified against
    #: torch by unirt's conversion layer.
    converts_from = frozenset({ModelFormat.TORCH_EXPORT})
    converts_through = {ModelFormat.TORCH_EXPORT: "torch"}
    convert_hint = (
        "PyTorch programs convert with the torch plugin installed: pip install './plugins/torch[engine]' "
        "(from unirt's source checkout)"
    )

    def probe(self) -> Availability:
        try:
            import onnxruntime as ort
        except Exception as exc:  # ImportError, or a broken native library
            return Availability.missing(f"cannot import onnxruntime: {type(exc).__name__}: {exc}")
        quiet_onnxruntime(ort)  # errors only, unless unirt logs verbosely or UNIRT_ENGINE_LOGS=1
        available = ort.get_available_providers()
        hw = hardware()
        return Availability(
            True,
            version=ort.__version__,
            devices=offered_devices(available, hw),
            device_note=missing_gpu_note(available, hw),
        )

    def load(self, model: ModelFile, options: LoadOptions) -> OnnxRuntimeSession:
        from .session import OnnxRuntimeSession

        return OnnxRuntimeSession(model, options)

    def convert(self, model: ModelFile, out_dir: Path, options: LoadOptions) -> ModelFile:
        """A torch.export program as ONNX, by the torch plugin's exporter (`unirt_torch.to_onnx`)."""
        try:
            from unirt_torch.to_onnx import export_onnx
        except ImportError:
            raise ConversionError(
                f"{model.name}: converting a {model.format} model to ONNX needs the torch plugin: "
                "pip install './plugins/torch[engine]' (from unirt's source checkout)"
            ) from None
        return export_onnx(model, out_dir, options.backend_options.get("opset"))

    def converter_version(self) -> str | None:
        try:
            import torch
        except ImportError:
            return None
        return f"torch.onnx dynamo exporter (torch {torch.__version__})"
