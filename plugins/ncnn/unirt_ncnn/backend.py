"""The loader: whether ncnn is usable here, loading .param/.bin models, and converting ONNX with pnnx."""

from __future__ import annotations

from pathlib import Path

from unirt import (Availability, Backend, BackendSession, ConversionError, LoadOptions, ModelFile, ModelFormat,
                   UnsupportedOptionError, open_model)

from .quiet import native_output_silenced


def _gpu_count(ncnn) -> int:
    try:
        with native_output_silenced():  # the Vulkan loader prints to stderr when there is no driver
            return int(ncnn.get_gpu_count())
    except Exception:
        return 0


class NcnnBackend(Backend):
    name = "ncnn"
    formats = frozenset({ModelFormat.NCNN})
    converts_from = frozenset({ModelFormat.ONNX})
    install_hint = "pip install unirt-ncnn"

    def probe(self) -> Availability:
        try:
            import ncnn
        except Exception as exc:
            return Availability.missing(f"cannot import ncnn: {type(exc).__name__}: {exc}")
        gpus = _gpu_count(ncnn)
        return Availability(True, version=getattr(ncnn, "__version__", "unknown"),
                            devices=tuple(f"gpu:{i}" for i in range(gpus)) + ("cpu",))

    def load(self, model: ModelFile, options: LoadOptions) -> BackendSession:
        from .session import NcnnSession

        return NcnnSession(model, options)

    def convert(self, model: ModelFile, out_dir: Path, options: LoadOptions) -> ModelFile:
        """ONNX -> model.param + model.bin with pnnx, at the shapes unirt's conversion layer passes; fp32 weights
        unless precision='fp16' (bf16 runs from fp32 weights with ncnn's bf16 storage)."""
        from .pnnx import run_pnnx

        if model.path is None:
            raise ConversionError("pnnx converts model files; save the model to a file first")
        if options.precision == "int8":
            raise UnsupportedOptionError("ncnn: pnnx writes fp32 or fp16 weights; int8 needs ncnn2int8 with "
                                         "calibration data")
        bo = options.backend_options
        param, weights = out_dir / "model.param", out_dir / "model.bin"
        run_pnnx(model.path, param, weights, dict(bo.get("input_shapes") or {}), dict(bo.get("input_dtypes") or {}),
                 fp16=options.precision == "fp16", timeout=float(bo.get("timeout", 600)))
        return open_model(param)
