"""The runner: one OpenVINO CompiledModel behind unirt's BackendSession interface.

Runs take OpenVINO's lean path: inputs are wrapped as shared-memory tensors (no copy) and handed to the native
`InferRequest.infer`, skipping the Python data dispatcher and the OVDict wrapper of `InferRequest.infer`; OpenVINO
copies each output once into an array the caller owns (its output tensors are reused by the next call).
`run_into` points the request's output tensors at the caller's arrays for one call and always points them back,
so OpenVINO never writes into memory the caller may have freed.

What OpenVINO computes narrower than the model says is caught rather than answered wrongly: its CPU and GPU plugins
run int64/uint64 as int32 (inputs outside the int32 range are refused per run) and float64 as float32 (such models
are refused at load unless `allow_float64_as_float32` is given).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import openvino as ov
from openvino._pyopenvino import InferRequest as _NativeRequest

from unirt import (
    BackendSession,
    InputError,
    LoadOptions,
    ModelFile,
    ModelFormat,
    ModelLoadError,
    RunError,
    TensorInfo,
    UnsupportedOptionError,
)
from unirt.plugin_sdk import onnx_quantization_ops, read_sidecar

from .onnx_dims import onnx_dim_names
from .options import (
    QUANTIZED_OPS,
    common_capabilities,
    compile_settings,
    device_name,
    float64_allowed,
    precision_in_force,
    precision_info,
    real_devices,
)
from .types import SHAREABLE, numpy_dtype

_core: ov.Core | None = None
_core_lock = threading.Lock()

# OpenVINO's CPU and GPU plugins compute these integer types as int32: values outside its range wrap.
_NARROWED_INTS = frozenset({"i64", "u64"})
_INT32_MIN, _INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)


def shared_core() -> ov.Core:
    """One ov.Core per process: creating one loads every device plugin."""
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


_CHECK_PREFIX = re.compile(r"^Check '.*' failed at src/\S*:\s*")


def _message(exc: BaseException) -> str:
    """OpenVINO's messages start with C++ source locations ("Exception from src/...:", "Check '...' failed at
    src/...:"); keep what says what went wrong."""
    lines = [
        _CHECK_PREFIX.sub("", ln.strip())
        for ln in str(exc).splitlines()
        if ln.strip() and not ln.startswith("Exception from src/")
    ]
    return " ".join(ln for ln in lines if ln) or type(exc).__name__


_COERCING_OPS = (b"Softmax", b"LogSoftmax", b"Hardmax")


def _onnx_fixed_for_openvino(data: bytes) -> bytes | None:
    """The model rewritten where OpenVINO's ONNX frontend computes it wrongly, or None if nothing needs it.

    Opset < 13 Softmax/LogSoftmax/Hardmax coerce their input to 2-D at `axis`; OpenVINO applies them on that one
    axis instead (rel-L2 error 9.4 on unirt.testing's softmax_coerced). unirt's converter fixup rewrites them as
    Flatten -> op(axis=1) -> Reshape.
    """
    if not any(op in data for op in _COERCING_OPS):
        return None
    import onnx

    from unirt.plugin_sdk import coerced_softmax_axis

    proto = onnx.load_from_string(data)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return None  # external weights resolve relative to the file: leave such (large, modern) models alone
    return proto.SerializeToString() if coerced_softmax_axis(proto) else None


@contextmanager
def read_model(core: ov.Core, model: ModelFile, onnx_bytes: bytes | None = None) -> Iterator[ov.Model]:
    """The model as OpenVINO reads it, for the duration of the block (`onnx_bytes`: the ONNX file's bytes, if the
    caller read them already). OpenVINO reads ONNX and IR from memory but TFLite only from a file: TFLite given as
    bytes is written to a temporary file, removed when the block ends (the model may map its weights from the file
    until it is compiled)."""
    spilled = None
    try:
        try:
            fixed = None
            if model.format is ModelFormat.ONNX:
                fixed = _onnx_fixed_for_openvino(onnx_bytes if onnx_bytes is not None else model.read_bytes())
            if fixed is not None:
                ov_model = core.read_model(fixed)
            elif model.path is None and model.format is ModelFormat.TFLITE:
                fd, spilled = tempfile.mkstemp(suffix=".tflite", prefix="unirt_openvino_")
                with os.fdopen(fd, "wb") as f:
                    f.write(model.read_bytes())
                ov_model = core.read_model(spilled)
            elif model.path is None:
                ov_model = core.read_model(model.read_bytes())
            elif model.format is ModelFormat.OPENVINO:
                weights = model.companion(".bin")
                ov_model = (
                    core.read_model(str(model.path), str(weights)) if weights else core.read_model(str(model.path))
                )
            else:
                ov_model = core.read_model(str(model.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses (OpConversionFailure, GeneralFailure)
            raise ModelLoadError(
                f"{model.name}: openvino could not read this {model.format} model: {_message(exc)}"
            ) from None
        yield ov_model
    finally:
        if spilled is not None:
            try:
                os.unlink(spilled)
            except OSError:  # pragma: no cover - Windows, while OpenVINO still maps it
                pass


def _converted_dim_names(model: ModelFile) -> dict[str, tuple[Any, ...]]:
    """An IR that unirt converted from ONNX: the ONNX dims from the conversion's sidecar (OpenVINO IR keeps no dim
    names), so a batch dim "N" stays one. Empty for any other model."""
    side = read_sidecar(model.path) if model.format is ModelFormat.OPENVINO else None
    if side is None:
        return {}
    return {t.name: t.shape for t in (*side["inputs"], *side["outputs"])}


def _tensor_info(port: Any, name: str, named: Sequence[Any] | None) -> TensorInfo:
    """A port as unirt sees it; `named`: the tensor's dims as the ONNX file declares them, whose names ("N") fill
    the dynamic dims OpenVINO reports without one."""
    type_name = port.get_element_type().get_type_name()
    dtype = numpy_dtype(type_name)
    if dtype is None:
        raise ModelLoadError(f"tensor {name!r} has OpenVINO element type {type_name}, which numpy cannot hold")
    dims = list(port.get_partial_shape())
    if named is None or len(named) != len(dims):
        named = (None,) * len(dims)
    shape = tuple(d.get_length() if d.is_static else (n if isinstance(n, str) else None) for d, n in zip(dims, named))
    return TensorInfo(name, shape, dtype)


def _bounded_dims(port: Any) -> tuple[tuple[int, int, int], ...]:
    """(axis, min, max) of each dynamic dim with bounds ("1..8"); max -1 when only a minimum is set."""
    return tuple(
        (axis, d.get_min_length(), d.get_max_length())
        for axis, d in enumerate(port.get_partial_shape())
        if d.is_dynamic and (d.get_min_length() > 0 or d.get_max_length() >= 0)
    )


def _proven_shapes(ov_model: ov.Model, named: dict[str, Any]) -> list[tuple[Any, ...] | None]:
    """Per output, how to compute its shape from the inputs' shapes, as OpenVINO's own shape inference proves it:
    per dim a size or (input index, axis); None where a dim follows from no input dim.

    Dim names in an ONNX file are declarations, not facts; and an output tensor too small for what the model
    produces is left unwritten, silently, by OpenVINO's CPU plugin (single-threaded). So `run_into` binds a
    dynamic output only to an array of the proven shape. The proof: a symbol per input dim (one per ONNX dim
    name), propagated through a copy of the model."""
    try:
        model = ov_model.clone()
        symbols: dict[Any, Any] = {}
        places: list[tuple[Any, tuple[int, int]]] = []
        for index, param in enumerate(model.get_parameters()):
            shape = param.get_partial_shape()
            names = named.get(param.get_output_tensor(0).get_any_name()) or ()
            dynamic = False
            for axis in range(len(shape)):
                dim = shape[axis]
                if dim.is_dynamic:
                    key = names[axis] if axis < len(names) and isinstance(names[axis], str) else (index, axis)
                    if key not in symbols:
                        symbols[key] = ov.Symbol()
                        places.append((symbols[key], (index, axis)))
                    dim.set_symbol(symbols[key])
                    shape[axis] = dim
                    dynamic = True
            if dynamic:
                param.set_partial_shape(shape)
        model.validate_nodes_and_infer_types()
        proven: list[tuple[Any, ...] | None] = []
        for port in model.outputs:
            recipe: list[Any] = []
            for dim in port.get_partial_shape():
                if dim.is_static:
                    recipe.append(dim.get_length())
                    continue
                place = next((p for s, p in places if dim.has_symbol() and dim.get_symbol() == s), None)
                if place is None:
                    break
                recipe.append(place)
            else:
                proven.append(tuple(recipe))
                continue
            proven.append(None)
        return proven
    except Exception:  # shape inference that cannot take symbols: nothing is proven, nothing dynamic is bound
        return [None] * len(ov_model.outputs)


def _capabilities(core: ov.Core, target: str, available: Sequence[str]) -> list[str]:
    """OPTIMIZATION_CAPABILITIES that every device `target` may run on offers (virtual devices like AUTO and HETERO
    report none of their own devices' precisions)."""
    per_device = {}
    for device in real_devices(target, available):
        try:
            per_device[device] = list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
        except Exception:  # a device not here: compile_model says so
            continue
    return common_capabilities(per_device)


def _hints_in_force(compiled: Any) -> list[str]:
    """INFERENCE_PRECISION_HINT of the compiled model: its own, or for AUTO/MULTI/HETERO (which do not report one)
    that of each device it runs on; [] if neither can be read."""
    try:
        return [compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()]
    except Exception:
        pass
    try:
        per_device = compiled.get_property("DEVICE_PROPERTIES")
        return [
            props["INFERENCE_PRECISION_HINT"].get_type_name()
            for props in per_device.values()
            if isinstance(props, dict) and "INFERENCE_PRECISION_HINT" in props
        ]
    except Exception:
        return []


def _float64_tensors(ov_model: ov.Model) -> list[str]:
    """Names of the model's float64 inputs and outputs, and a count of its other float64 tensors."""
    io = [
        p.get_any_name() for p in (*ov_model.inputs, *ov_model.outputs) if p.get_element_type().get_type_name() == "f64"
    ]
    inner = sum(
        1
        for op in ov_model.get_ops()
        if op.get_type_name() not in ("Parameter", "Result")
        and any(op.get_output_element_type(i).get_type_name() == "f64" for i in range(op.get_output_size()))
    )
    return io + ([f"{inner} more inside the model"] if inner else [])


def _reshape(ov_model: ov.Model, shapes: dict[str, list[Any]]) -> None:
    inputs = {n for port in ov_model.inputs for n in port.get_names()}
    unknown = [n for n in shapes if n not in inputs]
    if unknown:
        raise UnsupportedOptionError(
            f"openvino: shapes names unknown input {unknown[0]!r}; inputs: {', '.join(sorted(inputs))}"
        )
    new = {
        name: ov.PartialShape([ov.Dimension(*d) if isinstance(d, tuple) else ov.Dimension(d) for d in dims])
        for name, dims in shapes.items()
    }
    try:
        ov_model.reshape(new)
    except Exception as exc:
        raise UnsupportedOptionError(f"openvino: cannot reshape the model to {shapes}: {_message(exc)}") from None


def _output_names(ports: Sequence[Any], input_names: set[str], declared: Sequence[str] = ()) -> list[str]:
    """One name per output; where OpenVINO merged names (an output that is also an input; an output an Identity
    produces, which carries its producer's name too), the one the model declares, else the output's own."""
    names = []
    for port in ports:
        own = sorted(n for n in port.get_names() if n not in input_names)
        model_named = [n for n in own if n in declared]
        names.append(model_named[0] if model_named else own[0] if own else port.get_any_name())
    return names


class OpenVinoSession(BackendSession):
    def __init__(self, model: ModelFile, options: LoadOptions) -> None:
        core = shared_core()
        available = list(core.available_devices)
        bo = options.backend_options
        target = bo.get("device_name") or device_name(options.device, available)
        allow_f64 = float64_allowed(bo)
        data = model.read_bytes() if model.format is ModelFormat.ONNX else None
        named = onnx_dim_names(data) if data is not None else _converted_dim_names(model)
        onnx_qops = onnx_quantization_ops(data) if data is not None else ()
        with read_model(core, model, data) as ov_model:
            del data
            strings = [
                p.get_any_name()
                for p in (*ov_model.inputs, *ov_model.outputs)
                if p.get_element_type().get_type_name() == "string"
            ]
            if strings:
                # OpenVINO 2026.4 frees string tensors twice once a request has run (heap corruption, abort).
                raise ModelLoadError(
                    f"{model.name}: unirt's openvino backend does not run string tensors "
                    f"({', '.join(strings)}): OpenVINO's string tensors corrupt the heap when freed"
                )
            f64 = _float64_tensors(ov_model)
            if f64 and not allow_f64:
                raise UnsupportedOptionError(
                    f"{model.name}: OpenVINO computes float64 in float32 (its CPU and GPU plugins have no float64 "
                    f"kernels), so this model's float64 tensors ({', '.join(f64)}) would lose precision silently. "
                    "Pass backend_options={'allow_float64_as_float32': True} to run it at float32 precision, or use "
                    "a backend that computes float64 (onnxruntime)"
                )
            # quantized: the ONNX graph's quantization ops (dynamic quantization leaves no trace in OpenVINO's
            # graph) or OpenVINO's own (FakeQuantize from ONNX Q/DQ or NNCF IR)
            ov_ops = sorted({op.get_type_name() for op in ov_model.get_ops()} & QUANTIZED_OPS)
            qops = onnx_qops or tuple(ov_ops)
            quantized = bool(qops)
            capabilities = _capabilities(core, str(target), available)
            settings = compile_settings(
                options.device, available, options.precision, capabilities, options.threads, bo, quantized
            )
            if settings.shapes:
                _reshape(ov_model, settings.shapes)
            proven = _proven_shapes(ov_model, named)
            try:
                self._compiled = core.compile_model(ov_model, settings.device, settings.config)
            except Exception as exc:
                raise ModelLoadError(
                    f"{model.name}: openvino could not compile this {model.format} model for "
                    f"{settings.device}: {_message(exc)}"
                ) from None
        self.device = str(options.device)
        self.ov_device = settings.device
        hints = _hints_in_force(self._compiled)
        self.precision = precision_in_force(hints, options.precision, quantized)
        self.precision_info = precision_info(
            self.precision, hints, settings.device, capabilities, qops, int8_kernels=bool(ov_ops)
        )
        in_ports, out_ports = list(self._compiled.inputs), list(self._compiled.outputs)
        in_names = [p.get_any_name() for p in in_ports]
        out_names = _output_names(out_ports, set(in_names), tuple(n for n in named if n not in in_names))
        self.inputs = [_tensor_info(p, n, named.get(n)) for p, n in zip(in_ports, in_names)]
        self.outputs = [_tensor_info(p, n, named.get(n)) for p, n in zip(out_ports, out_names)]
        self._in_order = tuple(enumerate(in_names))
        self._ports = dict(zip(out_names, out_ports))
        self._out_index = {n: i for i, n in enumerate(out_names)}
        self._static_outputs = frozenset(o.name for o in self.outputs if not o.is_dynamic)
        # dynamic outputs whose shape follows from the inputs': {name: per dim a size or (input name, axis)}
        self._sizable = {
            n: tuple(d if isinstance(d, int) else (in_names[d[0]], d[1]) for d in recipe)
            for n, recipe, o in zip(out_names, proven, self.outputs)
            if recipe is not None and o.is_dynamic
        }
        # What OpenVINO cannot take although the declared shape and dtype allow it, checked before each run:
        # int64/uint64 values outside int32 (computed as int32, they would wrap) and dims outside their bounds.
        self._narrowed = tuple(
            n for p, n in zip(in_ports, in_names) if p.get_element_type().get_type_name() in _NARROWED_INTS
        )
        self._bounds = tuple((n, b) for p, n in zip(in_ports, in_names) if (b := _bounded_dims(p)))
        self._guarded = bool(self._narrowed or self._bounds)
        # Exotic input types (bf16, f8) need OpenVINO's converting dispatcher; everything else is shared as-is.
        self._lean = all(i.dtype in SHAREABLE for i in self.inputs)
        self._idle: deque = deque()  # infer requests not in use: one per concurrent caller, reused
        self._infer = _NativeRequest.infer
        self._tensor = ov.Tensor

    # -- what OpenVINO would get wrong or crash on, refused before it runs ------------------------------------
    def _guard(self, feeds: dict[str, np.ndarray]) -> None:
        for name in self._narrowed:
            x = feeds[name]
            if x.size and (int(x.min()) < _INT32_MIN or int(x.max()) > _INT32_MAX):
                raise InputError(
                    f"input {name!r}: OpenVINO computes {x.dtype} as int32, and this input holds "
                    f"values outside the int32 range [{_INT32_MIN}, {_INT32_MAX}] (min {x.min()}, max "
                    f"{x.max()}) that would wrap; use a backend that computes int64 (onnxruntime)"
                )
        for name, bounds in self._bounds:
            shape = feeds[name].shape
            for axis, lo, hi in bounds:
                if shape[axis] < lo or (hi >= 0 and shape[axis] > hi):
                    raise InputError(
                        f"input {name!r}: dim {axis} must be in {lo}..{hi if hi >= 0 else ''} (the "
                        f"model's bounds), got shape {tuple(shape)}"
                    )

    # -- requests: an InferRequest runs one call at a time, so each concurrent caller takes its own -------------
    def _acquire(self) -> Any:
        try:
            return self._idle.pop()
        except IndexError:
            return self._compiled.create_infer_request()

    def _wrap(self, feeds: dict[str, np.ndarray]) -> dict[int, Any]:
        tensor = self._tensor
        wrapped = {}
        for index, name in self._in_order:
            x = feeds[name]
            try:
                wrapped[index] = tensor(x, shared_memory=True)
            except (RuntimeError, ValueError):  # read-only arrays cannot be shared: OpenVINO copies them
                wrapped[index] = tensor(np.array(x))
        return wrapped

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        if self._guarded:
            self._guard(feeds)
        return self._run(feeds, output_names)

    def _run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        if not self._lean:
            return self._run_converting(feeds, output_names)
        request = self._acquire()
        try:
            results = self._infer(request, self._wrap(feeds), False, True)  # share_outputs=False: fresh arrays
        except RuntimeError as exc:
            raise RunError(f"openvino: {_message(exc)}") from None
        finally:
            self._idle.append(request)
        ports = self._ports
        return [results[ports[name]] for name in output_names]

    def _run_converting(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        request = self._acquire()
        try:
            results = request.infer(feeds, share_inputs=False, share_outputs=False)
        except RuntimeError as exc:
            raise RunError(f"openvino: {_message(exc)}") from None
        finally:
            self._idle.append(request)
        return [results[self._ports[name]] for name in output_names]

    def run_into(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str], out: dict[str, np.ndarray]
    ) -> list[Any]:
        """Point the request's output tensors at the caller's arrays for this call only.

        A dynamic output is bound only when its array has the shape OpenVINO's shape inference proves it will
        have (`_proven_shapes`): OpenVINO leaves a tensor too small unwritten (single-threaded CPU) or refuses it,
        and shrinks one too large. Other outputs come back as OpenVINO made them, for the session to copy in or to
        report the shape that does not fit.
        """
        if self._guarded:
            self._guard(feeds)
        static, sizable = self._static_outputs, self._sizable
        bind = {}
        for name, array in out.items():
            if name in static:
                bind[name] = array
            else:
                recipe = sizable.get(name)
                if recipe is not None and array.shape == tuple(
                    d if type(d) is int else feeds[d[0]].shape[d[1]] for d in recipe
                ):
                    bind[name] = array
        if not self._lean or not bind:
            return self._run(feeds, output_names)
        request = self._acquire()
        saved = []
        try:
            for name, array in bind.items():
                index = self._out_index[name]
                saved.append((index, request.get_output_tensor(index)))
                request.set_output_tensor(index, self._tensor(array, shared_memory=True))
            results = self._infer(request, self._wrap(feeds), True, True)
            values = [bind[n] if n in bind else np.array(results[self._ports[n]]) for n in output_names]
        except RuntimeError as exc:
            raise RunError(f"openvino: {_message(exc)}") from None
        finally:
            for index, tensor in saved:
                request.set_output_tensor(index, tensor)
            self._idle.append(request)
        return values

    def close(self) -> None:
        self._idle.clear()
        self._compiled = None
