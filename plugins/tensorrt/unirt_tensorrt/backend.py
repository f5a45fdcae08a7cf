"""The loader: says whether TensorRT can run here (and exactly why not), loads engines and ONNX models, converts
ONNX to a serialized engine. tensorrt and cuda-python are imported lazily: the plugin installs and reports
itself without them."""

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
    hardware,
    open_model,
)
from unirt.backend import NUMERIC_DTYPES

from .plan import version_problem

if TYPE_CHECKING:
    from .session import TensorRTSession

ENGINE_EXTRA = (
    "pip install './plugins/tensorrt[engine]' from unirt's source checkout (TensorRT's CUDA libraries are several GB)"
)
__all__ = ["TensorRTBackend", "unavailable_reason", "version_problem"]


def unavailable_reason() -> tuple[str | None, str | None]:
    """(why TensorRT cannot run here or None, its version if importable)."""
    problems, version = [], None
    try:
        import tensorrt

        version = tensorrt.__version__
        wrong = version_problem(version)
        if wrong is not None:
            problems.append(wrong)
    except Exception as exc:  # ImportError, or the bindings without libnvinfer (OSError inside ImportError)
        problems.append(f"cannot import tensorrt: {type(exc).__name__}: {exc}. Install it with: {ENGINE_EXTRA}")
    if not hardware().cuda_gpus:
        problems.append("this machine has no CUDA GPU (none in /proc/driver/nvidia/gpus or nvidia-smi)")
    if version is not None and hardware().cuda_gpus:
        try:
            from . import cuda  # noqa: F401 - probed: cuda-python's runtime bindings
        except Exception as exc:
            problems.append(f"cannot import cuda-python: {type(exc).__name__}: {exc}. Install it with: {ENGINE_EXTRA}")
    return ("; and ".join(problems) or None), version


class TensorRTBackend(Backend):
    name = "tensorrt"
    formats = frozenset({ModelFormat.TENSORRT, ModelFormat.ONNX})
    converts_from = frozenset({ModelFormat.ONNX})
    #: ONNX is read through TensorRT's ONNX parser into an engine: verified against the format's reference engine.
    native_formats = frozenset({ModelFormat.TENSORRT})
    tensor_dtypes = NUMERIC_DTYPES  # no string tensors
    install_hint = "pip install './plugins/tensorrt[engine]' (from unirt's source checkout)"
    needs_gpu = True
    serve_platform = "tensorrt_plan"  # Triton's name for it
    image_extra = "engine"  # the plugin's extra that installs TensorRT itself
    unirt_extras = ("convert",)  # builds engines from ONNX on load
    format_facts = {ModelFormat.TENSORRT: FormatFacts(("model.plan", "model.engine"), "tensorrt", "10")}

    def probe(self) -> Availability:
        reason, version = unavailable_reason()
        if reason is not None:
            return Availability(False, reason, version=version)
        return Availability(True, version=version, devices=tuple(f"cuda:{i}" for i in range(len(hardware().cuda_gpus))))

    def load(self, model: ModelFile, options: LoadOptions) -> TensorRTSession:
        if model.format is ModelFormat.TENSORRT:
            from .options import check_engine_precision

            check_engine_precision(model.name, options.precision)
        from .session import TensorRTSession

        if model.format is ModelFormat.TENSORRT:
            from unirt.plugin_sdk import check_loads

            # A plan past its magic tag goes straight to deserialize_cuda_engine, which has no verifier of its own
            # for damaged bytes: the first load of a file happens in a throwaway process (remembered per content).
            check_loads(model, self.name, self.probe().version or "", options)
        return TensorRTSession(model, options)

    def convert(self, model: ModelFile, out_dir: Path, options: LoadOptions) -> ModelFile:
        """ONNX -> a serialized TensorRT engine (`model.engine`) for this GPU and TensorRT version."""
        reason, _ = unavailable_reason()
        if reason is not None:
            raise ConversionError(f"tensorrt cannot build engines here: {reason}")
        if model.format is not ModelFormat.ONNX:
            raise ConversionError(f"tensorrt converts onnx models, not {model.format}")
        import tensorrt as trt

        from . import cuda
        from .builder import build_engine
        from .options import build_settings

        index = options.device.index or 0
        cuda.set_device(index)
        gpu, sm = cuda.device_properties(index)
        built = build_engine(
            trt, model, options.precision, build_settings(options.backend_options, options.max_batch), gpu, sm
        )
        target = Path(out_dir) / "model.engine"
        target.write_bytes(built.plan)
        return open_model(target)
