"""The loader: says whether onnxruntime is usable here and loads sessions. onnxruntime is imported lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unirt import Availability, Backend, LoadOptions, ModelFile, ModelFormat, hardware

from .providers import missing_gpu_note, offered_devices

if TYPE_CHECKING:
    from .session import OnnxRuntimeSession


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    formats = frozenset({ModelFormat.ONNX})
    install_hint = "pip install unirt-onnxruntime"

    def probe(self) -> Availability:
        try:
            import onnxruntime as ort
        except Exception as exc:  # ImportError, or a broken native library
            return Availability.missing(f"cannot import onnxruntime: {type(exc).__name__}: {exc}")
        available = ort.get_available_providers()
        hw = hardware()
        return Availability(True, version=ort.__version__, devices=offered_devices(available, hw),
                            device_note=missing_gpu_note(available, hw))

    def load(self, model: ModelFile, options: LoadOptions) -> OnnxRuntimeSession:
        from .session import OnnxRuntimeSession

        return OnnxRuntimeSession(model, options)
