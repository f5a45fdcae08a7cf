"""TensorRT's and CUDA's failures as unirt errors with the engine's own words. Pure logic: it reads the messages
TensorRT's logger and ONNX parser report, so every branch is testable without a GPU."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from unirt import BackendUnavailableError, ModelLoadError, RunError, UnsupportedOptionError

_STALE_ENGINE = (
    "not compatible with this version of tensorrt",
    "incompatible device",
    "magic tag does not match",
    "serialization assertion",
    "version tag does not match",
    "please rebuild",
)


def parser_failure(model: str, errors: Sequence[tuple[str, str]]) -> ModelLoadError:
    """ONNX parser errors [(description, node)] as one ModelLoadError naming the nodes."""
    if not errors:
        return ModelLoadError(f"{model}: tensorrt's ONNX parser rejected the model without saying why")
    parts = [f"{desc.strip()}" + (f" (node {node})" if node else "") for desc, node in errors[:5]]
    more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
    return ModelLoadError(f"{model}: tensorrt could not parse this onnx model: {'; '.join(parts)}{more}")


def build_failure(model: str, messages: Iterable[str]) -> ModelLoadError | UnsupportedOptionError:
    """build_serialized_network returned None: say why from the logged errors."""
    errors = [m.strip() for m in messages if m.strip()]
    text = "; ".join(errors[-3:]) or "no error was logged"
    lowered = text.lower()
    if "out of memory" in lowered or "insufficient memory" in lowered:
        return UnsupportedOptionError(
            f"tensorrt ran out of GPU memory building {model}: {text}. Lower max_batch or backend_options['workspace']"
        )
    if "fp16" in lowered and ("not supported" in lowered or "does not support" in lowered):
        return UnsupportedOptionError(f"tensorrt: this GPU has no fast fp16 for {model}: {text}")
    return ModelLoadError(f"{model}: tensorrt could not build an engine: {text}")


def deserialize_failure(model: str, messages: Iterable[str]) -> ModelLoadError:
    """deserialize_cuda_engine returned None: a plan from another TensorRT version or GPU says so."""
    errors = [m.strip() for m in messages if m.strip()]
    text = "; ".join(errors[-3:]) or "no error was logged"
    if any(marker in text.lower() for marker in _STALE_ENGINE):
        return ModelLoadError(
            f"{model}: this TensorRT engine was built by another TensorRT version or for another "
            f"GPU and cannot run here ({text}); rebuild it from the ONNX model (unirt builds and "
            "caches engines for ONNX models itself)"
        )
    return ModelLoadError(f"{model}: tensorrt could not deserialize this engine: {text}")


def cuda_failure(call: str, error_name: str, during_run: bool) -> RunError | ModelLoadError | BackendUnavailableError:
    """A cudaError_t from `call` ("cudaMalloc", ...) as a unirt error: RunError while running, ModelLoadError
    while loading, BackendUnavailableError when CUDA itself cannot start."""
    if error_name in ("cudaErrorNoDevice", "cudaErrorInsufficientDriver", "cudaErrorInitializationError"):
        return BackendUnavailableError(f"tensorrt: CUDA is not usable here ({call}: {error_name})")
    what = "out of GPU memory" if error_name == "cudaErrorMemoryAllocation" else f"{call} failed: {error_name}"
    if during_run:
        return RunError(f"tensorrt: {what} ({call})" if "memory" in what else f"tensorrt: {what}")
    return ModelLoadError(f"tensorrt: {what} while loading" + (f" ({call})" if "memory" in what else ""))


def unsupported_io(model: str, tensor: str, location: str, layout: str) -> ModelLoadError | None:
    """A ModelLoadError for an engine I/O tensor the runner cannot pass as a plain numpy array in device memory:
    a shape tensor TensorRT reads on the host (TensorLocation HOST), or a vectorized layout (TensorFormat other
    than LINEAR, e.g. a prebuilt engine built with trtexec --inputIOFormats=fp16:chw16). None when it can."""
    if location != "DEVICE":
        return ModelLoadError(
            f"{model}: tensorrt tensor {tensor!r} is a shape tensor TensorRT reads on the host "
            f"(location {location}), which unirt's TensorRT runner does not support; feed that value "
            "as a constant in the ONNX model"
        )
    if layout != "LINEAR":
        return ModelLoadError(
            f"{model}: tensorrt tensor {tensor!r} has the vectorized layout {layout}, which unirt's "
            "TensorRT runner does not support; rebuild the engine with linear I/O formats (trtexec's "
            "default), or load the ONNX model"
        )
    return None
