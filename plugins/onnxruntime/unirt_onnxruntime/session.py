"""The runner: one onnxruntime.InferenceSession behind unirt's BackendSession interface."""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from unirt import (
    BackendSession,
    BuffersRefusedError,
    LoadOptions,
    ModelFile,
    ModelFormat,
    ModelLoadError,
    RunError,
    TensorInfo,
    UnsupportedOptionError,
)
from unirt.plugin_sdk import onnx_quantization_ops, quantized_info, quantized_precision

from .providers import CPU, providers_for

_ORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (
        getattr(ort.capi.onnxruntime_pybind11_state, n, None)
        for n in (
            "Fail",
            "InvalidArgument",
            "NoSuchFile",
            "NoModel",
            "EngineError",
            "RuntimeException",
            "InvalidProtobuf",
            "ModelLoaded",
            "NotImplemented",
            "InvalidGraph",
            "EPFail",
        )
    )
    if isinstance(cls, type)
) + (RuntimeError,)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
if hasattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT"):
    _OPT_LEVELS["layout"] = ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT

_ORT_TYPES = {
    "float": np.float32,
    "double": np.float64,
    "float16": np.float16,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
    "string": np.object_,
    "complex64": np.complex64,
    "complex128": np.complex128,
}
# Element types numpy lacks, by their ONNX type number: onnxruntime's numpy bridge refuses them, so a session that
# has one passes them as OrtValues of raw bits (`_BitsRun`). Packed 4-bit types have no such form and are refused.
_BITS_TYPES: dict[Any, tuple[int, type]] = {}
_PACKED_TYPES: tuple[Any, ...] = ()
try:  # numpy has no bfloat16/float8; ml_dtypes (installed with onnx) provides them when present
    import ml_dtypes  # a dependency of this plugin; guarded so a broken install still loads fp32 models

    _ORT_TYPES.update(
        {
            "bfloat16": ml_dtypes.bfloat16,
            "float8e4m3fn": ml_dtypes.float8_e4m3fn,
            "float8e5m2": ml_dtypes.float8_e5m2,
            "float8e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
            "float8e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
            "int4": ml_dtypes.int4,
            "uint4": ml_dtypes.uint4,
        }
    )
    _BITS_TYPES = {
        np.dtype(ml_dtypes.bfloat16): (16, np.uint16),
        np.dtype(ml_dtypes.float8_e4m3fn): (17, np.uint8),
        np.dtype(ml_dtypes.float8_e4m3fnuz): (18, np.uint8),
        np.dtype(ml_dtypes.float8_e5m2): (19, np.uint8),
        np.dtype(ml_dtypes.float8_e5m2fnuz): (20, np.uint8),
    }
    _PACKED_TYPES = (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4))
except ImportError:
    pass

# Keys of backend_options that unirt interprets; the rest must be SessionOptions attributes.
_OWN_KEYS = {
    "graph_optimization_level",
    "execution_provider",
    "providers",
    "provider_options",
    "session_config",
    "free_dimension_overrides",
}


def _tensor_info(arg: Any) -> TensorInfo:
    kind = arg.type or ""
    if kind.startswith("tensor(") and kind.endswith(")"):
        elem = kind[len("tensor(") : -1]
        dtype = _ORT_TYPES.get(elem)
        if dtype is None:
            raise ModelLoadError(
                f"tensor {arg.name!r} has element type {elem}, which numpy cannot hold "
                "(install ml_dtypes for bfloat16/float8/int4)"
            )
        shape = tuple(arg.shape) if arg.shape is not None else ()
        return TensorInfo(arg.name, shape, dtype)
    # sequence/map/optional values come back as Python objects
    return TensorInfo(arg.name, (), np.object_)


def _session_options(options: LoadOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only; warnings about unused initializers are noise to users
    if options.threads is not None:
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
    bo = options.backend_options
    level = bo.get("graph_optimization_level", "all")
    if not isinstance(level, ort.GraphOptimizationLevel):
        if not isinstance(level, str) or level not in _OPT_LEVELS:
            raise UnsupportedOptionError(
                f"onnxruntime: graph_optimization_level must be one of "
                f"{', '.join(_OPT_LEVELS)} (or an onnxruntime.GraphOptimizationLevel), "
                f"got {level!r}"
            )
        level = _OPT_LEVELS[level]
    so.graph_optimization_level = level
    config = bo.get("session_config", {})
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise UnsupportedOptionError(
            f"onnxruntime: session_config must be a dict of onnxruntime session config "
            f"entries {{'session.key': 'value'}}, got {config!r}"
        )
    for key, value in config.items():
        if not isinstance(value, (str, int, float)):
            raise UnsupportedOptionError(
                f"onnxruntime: session_config[{key!r}] must be a string or number, got {value!r}"
            )
        so.add_session_config_entry(key, str(int(value) if isinstance(value, bool) else value))
    overrides = bo.get("free_dimension_overrides", {})
    if not isinstance(overrides, Mapping):
        raise UnsupportedOptionError(
            f"onnxruntime: free_dimension_overrides must be a dict {{dim name: size}}, got {overrides!r}"
        )
    for dim, size in overrides.items():
        if not isinstance(dim, str) or isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise UnsupportedOptionError(
                f"onnxruntime: free_dimension_overrides[{dim!r}] must map a dim name to a positive int, got {size!r}"
            )
        so.add_free_dimension_override_by_name(dim, int(size))
    for key, value in bo.items():
        if key in _OWN_KEYS:
            continue
        if key.startswith("_") or not hasattr(so, key):
            raise UnsupportedOptionError(
                f"onnxruntime: unknown backend option {key!r}; use one of "
                f"{', '.join(sorted(_OWN_KEYS))} or an onnxruntime.SessionOptions attribute"
            )
        try:
            setattr(so, key, value)
        except (TypeError, AttributeError) as exc:
            raise UnsupportedOptionError(f"onnxruntime: backend option {key}={value!r} rejected: {exc}") from None
    return so


def _explicit_providers(bo: Mapping[str, Any]) -> tuple[list[str], list[dict] | None]:
    """backend_options' own `providers` list (names) and optional `provider_options` (one dict each), checked."""
    providers, provider_options = bo["providers"], bo.get("provider_options")
    if (
        isinstance(providers, str)
        or not isinstance(providers, (list, tuple))
        or not providers
        or not all(isinstance(p, str) for p in providers)
    ):
        raise UnsupportedOptionError(
            f"onnxruntime: providers must be a non-empty list of execution provider names "
            f"such as ['CUDAExecutionProvider', 'CPUExecutionProvider'], got {providers!r}"
        )
    if provider_options is not None and (
        not isinstance(provider_options, (list, tuple))
        or len(provider_options) != len(providers)
        or not all(isinstance(o, Mapping) for o in provider_options)
    ):
        raise UnsupportedOptionError(
            f"onnxruntime: provider_options must be a list of {len(providers)} dict(s), one "
            f"per provider in providers, got {provider_options!r}"
        )
    return list(providers), [dict(o) for o in provider_options] if provider_options is not None else None


_IR_SKEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_OPSET_SKEW = re.compile(r"opset \d+ is under development|is till opset \d+|Opset \d+ .*not supported", re.I)


def _version_hint(message: str, version: str) -> str:
    """What to do when the model is newer than this onnxruntime (a newer onnx/exporter wrote it)."""
    skew = _IR_SKEW.search(message)
    if skew:
        return (
            f". The model was written by a newer onnx (IR {skew.group(1)}) than onnxruntime {version} reads (IR "
            f"{skew.group(2)}): upgrade onnxruntime (pip install -U onnxruntime), or re-save the model with "
            f"model.ir_version = {skew.group(2)} if it uses nothing newer"
        )
    if _OPSET_SKEW.search(message):
        return (
            f". The model uses a newer opset than onnxruntime {version} implements: upgrade onnxruntime, or "
            "export the model at an older opset"
        )
    return ""


class OnnxRuntimeSession(BackendSession):
    def __init__(self, model: ModelFile, options: LoadOptions) -> None:
        bo = options.backend_options
        so = _session_options(options)
        # A quantized model computes int8 whatever was asked (fp32 runs it as it is: it cannot be un-quantized)
        qops = (
            onnx_quantization_ops(model.path if model.path is not None else model.data)
            if model.format is ModelFormat.ONNX
            else ()
        )
        available = ort.get_available_providers()
        if "providers" in bo:
            providers, provider_options = _explicit_providers(bo)
        else:
            if "provider_options" in bo:
                raise UnsupportedOptionError(
                    "onnxruntime: provider_options goes with providers (one dict per "
                    "provider, in the same order); without providers, use device and "
                    "execution_provider"
                )
            chain = providers_for(
                options.device,
                options.precision,
                available,
                bo,
                bool(qops),
                ort.__version__,
                os.environ.get("NVIDIA_TF32_OVERRIDE"),
            )
            providers, provider_options = [p for p, _ in chain], [o for _, o in chain]
        source = str(model.path) if model.path is not None else model.data
        try:
            self._sess = ort.InferenceSession(source, so, providers=providers, provider_options=provider_options)
        except _ORT_ERRORS as exc:
            raise ModelLoadError(
                f"{model.name}: onnxruntime could not load this {model.format} model: "
                f"{str(exc).strip()}{_version_hint(str(exc), ort.__version__)}"
            ) from None
        active = self._sess.get_providers()
        # onnxruntime silently falls back to the CPU when a provider fails to start: refuse that.
        if providers[0] != CPU and providers[0] not in active:
            raise UnsupportedOptionError(f"onnxruntime: {providers[0]} failed to start (active: {', '.join(active)})")
        self.device = str(options.device)
        self.providers = tuple(active)
        engine = f"onnxruntime execution providers: {', '.join(active)}"
        self.precision = quantized_precision(options.precision, bool(qops))
        self.precision_info = quantized_info("/".join(qops), engine) if qops else f"{options.precision} ({engine})"
        self.inputs = [_tensor_info(a) for a in self._sess.get_inputs()]
        self.outputs = [_tensor_info(a) for a in self._sess.get_outputs()]
        packed = next((t for t in list(self.inputs) + list(self.outputs) if np.dtype(t.dtype) in _PACKED_TYPES), None)
        if packed is not None:
            raise ModelLoadError(
                f"{model.name}: tensor {packed.name!r} is {np.dtype(packed.dtype).name}: onnxruntime "
                "packs 4-bit tensors two to a byte, which unirt cannot pass to or from it; use an "
                "int8/uint8 tensor at the model's boundary"
            )
        if any(np.dtype(t.dtype) in _BITS_TYPES for t in list(self.inputs) + list(self.outputs)):
            # bfloat16/float8 tensors: run through OrtValues of their bits (ORT's numpy bridge refuses them)
            self.run = _BitsRun(self._sess).run  # type: ignore[method-assign]
            self.run_into = None  # type: ignore[assignment]  # the engine cannot write them into numpy memory
            self._native_run = self._prealloc = None
            return
        # Outputs that are graph inputs passed through: ORT hands back the feed itself and leaves caller memory bound
        # to them (pre-allocated or IOBinding) unwritten, so run_into copies the feed into it.
        in_names = {i.name for i in self.inputs}
        self._passthrough = tuple(o.name for o in self.outputs if o.name in in_names)
        # The native session's run skips InferenceSession.run's Python re-validation, which unirt already did.
        native = getattr(self._sess, "_sess", None)
        self._native_run = native.run if native is not None and hasattr(native, "run") else None
        # Writing every output into caller memory (unirt's pool, or out=): the native run with pre-allocated
        # output OrtValues is the leanest way ORT offers (IOBinding costs a few microseconds more per call).
        self._prealloc = _PreallocatedRun.create(native, self.inputs) if CPU in active[:1] else None

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        try:
            if self._native_run is not None:
                return self._native_run(output_names, feeds, None)
            return self._sess.run(list(output_names), feeds)
        except _ORT_ERRORS as exc:
            raise RunError(f"onnxruntime: {str(exc).strip()}") from None

    def run_into(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str], out: dict[str, np.ndarray]
    ) -> list[Any]:
        """Write outputs into the caller's arrays in place: every output given -> the native run with
        pre-allocated OrtValues; some -> IOBinding (ORT allocates the others)."""
        for name in self._passthrough:
            target = out.get(name)
            if target is not None:  # ORT would leave it unwritten (see __init__)
                if target.shape != feeds[name].shape:
                    raise BuffersRefusedError(
                        f"output {name!r} is input {name!r} passed through, shape "
                        f"{list(feeds[name].shape)}; the array for it has shape "
                        f"{list(target.shape)}"
                    )
                np.copyto(target, feeds[name])
        prealloc = self._prealloc
        if prealloc is not None and len(out) == len(output_names):
            try:
                prealloc.run(feeds, output_names, out)
            except _ORT_ERRORS as exc:
                raise _into_error(exc) from None
            return [out[name] for name in output_names]
        binding = self._sess.io_binding()  # per call: a binding holds state, sessions may run concurrently
        try:
            for name, array in feeds.items():
                binding.bind_cpu_input(name, array)
            for name in output_names:
                target = out.get(name)
                if target is None:
                    binding.bind_output(name, "cpu")
                else:
                    binding.bind_output(name, "cpu", 0, target.dtype.type, list(target.shape), target.ctypes.data)
            self._sess.run_with_iobinding(binding)
            values = binding.get_outputs()
            # Outputs not in `out` live in memory owned by their OrtValue; numpy() keeps it alive.
            return [out[name] if name in out else values[i].numpy() for i, name in enumerate(output_names)]
        except _ORT_ERRORS as exc:
            raise _into_error(exc) from None
        finally:
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()

    def close(self) -> None:
        self._native_run = None
        self._prealloc = None
        self._sess = None


#: ORT's words for output memory given to a run whose shape is not what the run produces (1.2x and older ORT).
_REFUSED = ("The output OrtValue provided for output", "Shape mismatch attempting to re-use buffer")


def _into_error(exc: Exception) -> RunError:
    """A failed run_into: BuffersRefusedError where ORT refused the output arrays (the session then lets ORT
    allocate them), else RunError."""
    text = str(exc).strip()
    return (BuffersRefusedError if any(m in text for m in _REFUSED) else RunError)(f"onnxruntime: {text}")


class _BitsRun:
    """Runs a session with bfloat16/float8 inputs or outputs: those travel as OrtValues over their raw bits (a
    uint16/uint8 view, no copy in), outputs of those types are copied out of ORT's memory into ml_dtypes arrays."""

    def __init__(self, sess: Any) -> None:
        self._sess = sess
        self._wrap = ort.OrtValue.ortvalue_from_numpy
        self._wrap_bits = ort.OrtValue.ortvalue_from_numpy_with_onnx_type
        self._numpy_of = {onnx_type: dtype for dtype, (onnx_type, _) in _BITS_TYPES.items()}

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        values = {}
        for name, array in feeds.items():
            bits = _BITS_TYPES.get(array.dtype)
            values[name] = self._wrap(array) if bits is None else self._wrap_bits(array.view(bits[1]), bits[0])
        try:
            results = self._sess.run_with_ort_values(list(output_names), values)
        except _ORT_ERRORS as exc:
            raise RunError(f"onnxruntime: {str(exc).strip()}") from None
        return [self._to_numpy(v) for v in results]

    def _to_numpy(self, value: Any) -> Any:
        dtype = self._numpy_of.get(value.element_type()) if value.is_tensor() else None
        if dtype is None:
            return value.numpy()
        shape = tuple(value.shape())
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes == 0:
            return np.empty(shape, dtype)
        raw = (ctypes.c_char * nbytes).from_address(value.data_ptr())
        return np.frombuffer(raw, np.uint8).copy().view(dtype).reshape(shape)


class _PreallocatedRun:
    """InferenceSession.run_with_ortvaluevector over numpy memory: ORT reads the inputs and writes the outputs in
    place (every OrtValue wraps a numpy array without copying)."""

    def __init__(self, native: Any) -> None:
        C = ort.capi._pybind_state
        self._native_run = native.run_with_ortvaluevector
        self._cpu = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
        self._wrap = C.OrtValue.ortvalue_from_numpy
        self._vector = C.OrtValueVector
        self._run_options = C.RunOptions()  # read-only during a run: safe to share between threads
        self._devices: dict[int, list[Any]] = {}

    @classmethod
    def create(cls, native: Any, inputs: Sequence[TensorInfo]) -> _PreallocatedRun | None:
        needed = ("run_with_ortvaluevector",)
        C = getattr(getattr(ort, "capi", None), "_pybind_state", None)
        if (
            native is None
            or C is None
            or not all(hasattr(native, n) for n in needed)
            or not all(hasattr(C, n) for n in ("OrtValueVector", "OrtDevice", "RunOptions", "OrtValue"))
        ):
            return None
        if any(i.dtype == object for i in inputs):  # string tensors do not wrap as OrtValues without a copy
            return None
        return cls(native)

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str], out: dict[str, np.ndarray]) -> None:
        wrap, cpu = self._wrap, self._cpu
        values = self._vector()
        for array in feeds.values():
            values.push_back(wrap(array, cpu))
        fetches = self._vector()
        for name in output_names:
            fetches.push_back(wrap(out[name], cpu))
        devices = self._devices.get(len(output_names))
        if devices is None:
            devices = self._devices[len(output_names)] = [cpu] * len(output_names)
        self._native_run(self._run_options, list(feeds), values, list(output_names), fetches, devices)
