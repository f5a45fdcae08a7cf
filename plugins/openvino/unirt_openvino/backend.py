"""The loader: says whether OpenVINO is usable here, loads sessions, converts ONNX/TFLite to IR. openvino is
imported lazily."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from unirt import (
    Availability,
    Backend,
    ConversionError,
    FormatFacts,
    LoadOptions,
    ModelFile,
    ModelFormat,
    ModelLoadError,
    open_model,
)
from unirt.backend import NUMERIC_DTYPES

from .options import offered_devices

if TYPE_CHECKING:
    from .session import OpenVinoSession


class OpenVinoBackend(Backend):
    name = "openvino"
    formats = frozenset({ModelFormat.OPENVINO, ModelFormat.ONNX, ModelFormat.TFLITE})
    converts_from = frozenset({ModelFormat.ONNX, ModelFormat.TFLITE})
    #: ONNX and TFLite are read through OpenVINO's frontends: verified against the format's reference engine.
    native_formats = frozenset({ModelFormat.OPENVINO})
    tensor_dtypes = NUMERIC_DTYPES  # no string tensors
    install_hint = "pip install ./plugins/openvino (from unirt's source checkout)"
    gpu_vendor = "intel"  # its "gpu" is an Intel GPU, not a Ray/KServe "GPU"
    format_facts = {ModelFormat.OPENVINO: FormatFacts(("model.xml",), "openvino")}

    def probe(self) -> Availability:
        try:
            import openvino

            from .session import shared_core

            devices = offered_devices(list(shared_core().available_devices))
        except Exception as exc:  # ImportError, or a device plugin that fails to load
            return Availability.missing(f"cannot import openvino: {type(exc).__name__}: {exc}")
        if not devices:
            return Availability.missing("openvino found no device (CPU, GPU or NPU) it can use here")
        return Availability(True, version=openvino.get_version().split("-")[0], devices=devices)

    def load(self, model: ModelFile, options: LoadOptions) -> OpenVinoSession:
        from .session import OpenVinoSession

        return OpenVinoSession(model, options)

    def convert(self, model: ModelFile, out_dir: Path, options: LoadOptions) -> ModelFile:
        """ONNX or TFLite -> OpenVINO IR (`model.xml` + `model.bin`). Weights stay fp32 unless precision="fp16"
        asks for fp16 weights (OpenVINO's own default, compress_to_fp16=True, would halve them silently)."""
        import openvino as ov

        from .session import _message, read_model, shared_core

        if model.format not in self.converts_from:
            raise ConversionError(
                f"openvino converts {', '.join(sorted(f.value for f in self.converts_from))} models, not {model.format}"
            )
        target = Path(out_dir) / "model.xml"
        try:
            with read_model(shared_core(), model) as ov_model:
                try:
                    ov.save_model(ov_model, str(target), compress_to_fp16=options.precision == "fp16")
                except Exception as exc:
                    raise ConversionError(f"{model.name}: openvino could not save the IR: {_message(exc)}") from None
        except ModelLoadError as exc:
            raise ConversionError(str(exc)) from None
        return open_model(target)
