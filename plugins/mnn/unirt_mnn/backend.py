"""The loader: whether MNN is usable here, loading .mnn models, and converting ONNX with MNN's own converter."""

from __future__ import annotations

from pathlib import Path

from unirt import (
    Availability,
    Backend,
    BackendSession,
    ConversionError,
    FormatFacts,
    LoadOptions,
    ModelFile,
    ModelFormat,
    UnsupportedOptionError,
    open_model,
)
from unirt.backend import NUMERIC_DTYPES
from unirt.plugin_sdk import native_output_captured, native_output_silenced, onnx_quantization_ops


class MnnBackend(Backend):
    name = "mnn"
    formats = frozenset({ModelFormat.MNN})
    tensor_dtypes = NUMERIC_DTYPES  # no string tensors
    converts_from = frozenset({ModelFormat.ONNX})
    install_hint = "pip install ./plugins/mnn (from unirt's source checkout)"
    unirt_extras = ("convert",)  # converts ONNX on load
    format_facts = {ModelFormat.MNN: FormatFacts(("model.mnn",), "mnn")}
    # verification compares the numbers itself: float64 outputs, and fp16 weights stored for a CPU that computes fp32
    verification_options = {"allow_float64_as_float32": True, "allow_storage_only_precision": True}

    def probe(self) -> Availability:
        try:
            with native_output_silenced():  # MNN prints the CPU's features to stdout on import
                import MNN
        except Exception as exc:
            return Availability.missing(f"cannot import MNN: {type(exc).__name__}: {exc}")
        version = MNN.version() if hasattr(MNN, "version") else "unknown"
        return Availability(True, version=str(version), devices=("cpu",))

    def load(self, model: ModelFile, options: LoadOptions) -> BackendSession:
        from unirt.plugin_sdk import check_loads

        from .session import MnnSession

        # MNN's loader crashes on some damaged files that pass its FlatBuffer verifier and unirt's checks: the
        # first load of a file happens in a throwaway process (remembered per content).
        check_loads(model, self.name, self.probe().version or "", options)
        return MnnSession(model, options)

    def converter_version(self) -> str | None:
        """The converter (`_tools.mnnconvert`) ships in the MNN wheel: that wheel's version."""
        import importlib.metadata

        try:
            return f"mnnconvert from MNN {importlib.metadata.version('MNN')}"
        except importlib.metadata.PackageNotFoundError:
            return None

    def convert(self, model: ModelFile, out_dir: Path, options: LoadOptions) -> ModelFile:
        """ONNX -> model.mnn with the converter inside the MNN wheel (`_tools.mnnconvert`; the `mnnconvert`
        console script would also send usage telemetry). fp32 weights unless precision='fp16'."""
        if model.path is None:
            raise ConversionError("MNN's converter converts model files; save the model to a file first")
        qops = onnx_quantization_ops(model.path)
        if qops:  # measured with MNN 3.6.1 on `unirt quantize` output (tests/test_quantized_backends.py)
            raise ConversionError(
                f"mnn: MNN's ONNX converter cannot convert a quantized ONNX model ({'/'.join(qops)}): it aborts on "
                "static Q/DQ models (QuantizeLinear/DequantizeLinear) and has no ConvInteger/MatMulInteger for "
                "dynamic ones. Convert the fp32 model instead (MNN's int8 comes from its own quantization tool, "
                "mnnquant, which unirt does not run), or run this model on onnxruntime or openvino"
            )
        if options.precision == "int8":
            raise UnsupportedOptionError(
                "mnn: int8 needs a model quantized by MNN's own tool (mnnquant, with "
                "calibration images); unirt converts to fp32 or fp16 weights"
            )
        try:
            with native_output_silenced():
                import _tools  # the converter module bundled in the MNN wheel
        except ImportError as exc:
            raise ConversionError(f"this MNN wheel has no converter module (_tools): {exc}") from None
        target = out_dir / "model.mnn"
        args = [
            "mnnconvert",
            "-f",
            "ONNX",
            "--modelFile",
            str(model.path),
            "--MNNModel",
            str(target),
            "--bizCode",
            "unirt",  # not --keepInputFormat: the flag turns the default (keep NCHW) off
            # MNN fuses Erf-GELU into its tanh approximation by default: rel-L2 ~1e-4 per block, 1e-3..5e-2
            # on a trained transformer. ONNX says erf.
            "--useGeluApproximation",
            "0",
        ]
        if options.precision == "fp16":
            args.append("--fp16")
        args += [str(a) for a in options.backend_options.get("mnnconvert_args", ())]
        printed: list[str] = []
        try:
            with native_output_captured(printed):
                _tools.mnnconvert(args)
        except Exception as exc:
            raise ConversionError(f"MNN's converter failed: {exc}\n{''.join(printed)[-2000:]}") from None
        log = "".join(printed)
        if not target.is_file() or target.stat().st_size == 0 or "Converted Success" not in log:
            raise ConversionError("MNN's converter failed:\n" + "\n".join(log.strip().splitlines()[-20:]))
        # MNN's model keeps the ONNX model's dynamic dims (the session resizes to each input's shape): asked for a
        # second size, it is verified there too
        bo = options.backend_options
        shapes, shapes2 = dict(bo.get("input_shapes") or {}), dict(bo.get("input_shapes2") or {})
        dynamic = {
            name: [a for a, (d, d2) in enumerate(zip(shape, shapes2[name])) if d != d2]
            for name, shape in shapes.items()
            if name in shapes2 and list(shape) != list(shapes2[name])
        }
        from unirt.plugin_sdk import write_sidecar

        write_sidecar(target, [], [], dynamic_axes=dynamic)
        return open_model(target)
