"""The loader: says whether TensorRT can run here (and exactly why not), loads engines and ONNX models, converts
ONNX to a serialized engine. tensorrt and cuda-python are imported lazily: the plugin installs and reports
itself without them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from unirt import Availability, Backend, ConversionError, LoadOptions, ModelFile, ModelFormat, hardware, open_model

if TYPE_CHECKING:
    from .session import TensorRTSession

ENGINE_EXTRA = "pip install 'unirt-tensorrt[engine]' (TensorRT's CUDA libraries are several GB)"
#: The TensorRT major version whose Python API the plugin is written against: TensorRT 11 removed the weakly-typed
#: precision flags (BuilderFlag.FP16/BF16/INT8) and Builder.platform_has_fast_fp16 it uses, and TensorRT 8/9 build
#: implicit-batch networks from create_network(0).
TENSORRT_MAJOR = 10


def version_problem(version: str) -> str | None:
    """Why this tensorrt version cannot serve the plugin, or None."""
    major = version.split(".")[0]
    if major.isdigit() and int(major) == TENSORRT_MAJOR:
        return None
    return (f"tensorrt {version} is installed; unirt's TensorRT backend uses the TensorRT {TENSORRT_MAJOR} API: "
            f"pip install 'tensorrt>={TENSORRT_MAJOR},<{TENSORRT_MAJOR + 1}'")


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
    install_hint = "pip install 'unirt-tensorrt[engine]'"

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
            from unirt.canary import check_loads

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
        from .builder import build_plan
        from .options import build_settings

        index = options.device.index or 0
        cuda.set_device(index)
        gpu, sm = cuda.device_properties(index)
        plan, _ = build_plan(trt, model, options.precision, build_settings(options.backend_options, options.max_batch),
                             gpu, sm)
        target = Path(out_dir) / "model.engine"
        target.write_bytes(plan)
        return open_model(target)
