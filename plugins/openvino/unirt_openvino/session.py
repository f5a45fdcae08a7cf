"""The runner: one OpenVINO CompiledModel behind unirt's BackendSession interface.

Runs take OpenVINO's lean path: inputs are wrapped as shared-memory tensors (no copy) and handed to the native
`InferRequest.infer`, skipping the Python data dispatcher and the OVDict wrapper of `InferRequest.infer`; OpenVINO
copies each output once into an array the caller owns (its output tensors are reused by the next call).
`run_into` points the request's output tensors at the caller's arrays for one call and always points them back,
so OpenVINO never writes into memory the caller may have freed.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Sequence

import numpy as np
import openvino as ov
from openvino._pyopenvino import InferRequest as _NativeRequest

from unirt import (BackendSession, LoadOptions, ModelFile, ModelFormat, ModelLoadError, RunError, TensorInfo,
                   UnsupportedOptionError)

from .options import PRECISION_HINTS, QUANTIZED_OPS, compile_settings, device_name, precision_in_force
from .types import SHAREABLE, numpy_dtype

_core: ov.Core | None = None
_core_lock = threading.Lock()


def shared_core() -> ov.Core:
    """One ov.Core per process: creating one loads every device plugin."""
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


def _message(exc: BaseException) -> str:
    """OpenVINO's messages start with C++ source locations; keep the lines that say what went wrong."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from src/")]
    return " ".join(lines) or type(exc).__name__


_COERCING_OPS = (b"Softmax", b"LogSoftmax", b"Hardmax")


def _onnx_fixed_for_openvino(model: ModelFile) -> bytes | None:
    """The model rewritten where OpenVINO's ONNX frontend computes it wrongly, or None if nothing needs it.

    Opset < 13 Softmax/LogSoftmax/Hardmax coerce their input to 2-D at `axis`; OpenVINO applies them on that one
    axis instead (rel-L2 error 9.4 on unirt.testing's softmax_coerced). unirt's converter fixup rewrites them as
    Flatten -> op(axis=1) -> Reshape.
    """
    data = model.read_bytes()
    if not any(op in data for op in _COERCING_OPS):
        return None
    import onnx

    from unirt.conversion.fixups import coerced_softmax_axis

    proto = onnx.load_from_string(data)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return None  # external weights resolve relative to the file: leave such (large, modern) models alone
    return proto.SerializeToString() if coerced_softmax_axis(proto) else None


def read_model(core: ov.Core, model: ModelFile) -> ov.Model:
    try:
        fixed = _onnx_fixed_for_openvino(model) if model.format is ModelFormat.ONNX else None
        if fixed is not None:
            return core.read_model(fixed)
        if model.path is None:
            return core.read_model(model.read_bytes())
        if model.format is ModelFormat.OPENVINO:
            weights = model.companion(".bin")
            return core.read_model(str(model.path), str(weights)) if weights else core.read_model(str(model.path))
        return core.read_model(str(model.path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses (OpConversionFailure, GeneralFailure)
        raise ModelLoadError(f"{model.name}: openvino could not read this {model.format} model: {_message(exc)}") \
            from None


def _tensor_info(port: Any, name: str) -> TensorInfo:
    type_name = port.get_element_type().get_type_name()
    dtype = numpy_dtype(type_name)
    if dtype is None:
        raise ModelLoadError(f"tensor {name!r} has OpenVINO element type {type_name}, which numpy cannot hold")
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorInfo(name, shape, dtype)


def _reshape(ov_model: ov.Model, shapes: dict[str, list[Any]]) -> None:
    inputs = {n for port in ov_model.inputs for n in port.get_names()}
    unknown = [n for n in shapes if n not in inputs]
    if unknown:
        raise UnsupportedOptionError(f"openvino: shapes names unknown input {unknown[0]!r}; inputs: "
                                     f"{', '.join(sorted(inputs))}")
    new = {name: ov.PartialShape([ov.Dimension(*d) if isinstance(d, tuple) else ov.Dimension(d) for d in dims])
           for name, dims in shapes.items()}
    try:
        ov_model.reshape(new)
    except Exception as exc:
        raise UnsupportedOptionError(f"openvino: cannot reshape the model to {shapes}: {_message(exc)}") from None


def _output_names(ports: Sequence[Any], input_names: set[str]) -> list[str]:
    """One name per output; where OpenVINO merged names (an output that is also an input), the output's own."""
    names = []
    for port in ports:
        own = sorted(n for n in port.get_names() if n not in input_names)
        names.append(own[0] if own else port.get_any_name())
    return names


class OpenVinoSession(BackendSession):
    def __init__(self, model: ModelFile, options: LoadOptions) -> None:
        core = shared_core()
        available = list(core.available_devices)
        bo = options.backend_options
        target = bo.get("device_name") or device_name(options.device, available)
        ov_model = read_model(core, model)
        strings = [p.get_any_name() for p in (*ov_model.inputs, *ov_model.outputs)
                   if p.get_element_type().get_type_name() == "string"]
        if strings:
            # OpenVINO 2026.4 frees string tensors twice once a request has run (heap corruption, abort).
            raise ModelLoadError(f"{model.name}: unirt's openvino backend does not run string tensors "
                                 f"({', '.join(strings)}): OpenVINO's string tensors corrupt the heap when freed")
        quantized = any(op.get_type_name() in QUANTIZED_OPS for op in ov_model.get_ops())
        try:
            capabilities = list(core.get_property(str(target).split(":")[0].split(".")[0],
                                                  "OPTIMIZATION_CAPABILITIES"))
        except Exception:  # virtual devices (AUTO, HETERO) have no capabilities of their own
            capabilities = [cap for _, cap in PRECISION_HINTS.values()]
        settings = compile_settings(options.device, available, options.precision, capabilities, options.threads, bo,
                                    quantized)
        if settings.shapes:
            _reshape(ov_model, settings.shapes)
        try:
            self._compiled = core.compile_model(ov_model, settings.device, settings.config)
        except Exception as exc:
            raise ModelLoadError(f"{model.name}: openvino could not compile this {model.format} model for "
                                 f"{settings.device}: {_message(exc)}") from None
        self.device = str(options.device)
        self.ov_device = settings.device
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = precision_in_force(hint.get_type_name(), options.precision, quantized)
        in_ports, out_ports = list(self._compiled.inputs), list(self._compiled.outputs)
        in_names = [p.get_any_name() for p in in_ports]
        out_names = _output_names(out_ports, set(in_names))
        self.inputs = [_tensor_info(p, n) for p, n in zip(in_ports, in_names)]
        self.outputs = [_tensor_info(p, n) for p, n in zip(out_ports, out_names)]
        self._in_order = tuple(enumerate(in_names))
        self._ports = dict(zip(out_names, out_ports))
        self._out_index = {n: i for i, n in enumerate(out_names)}
        self._static_outputs = frozenset(o.name for o in self.outputs if not o.is_dynamic)
        # Exotic input types (bf16, f8) need OpenVINO's converting dispatcher; everything else is shared as-is.
        self._lean = all(i.dtype in SHAREABLE for i in self.inputs)
        self._idle: deque = deque()  # infer requests not in use: one per concurrent caller, reused
        self._infer = _NativeRequest.infer
        self._tensor = ov.Tensor

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

    def run_into(self, feeds: dict[str, np.ndarray], output_names: Sequence[str],
                 out: dict[str, np.ndarray]) -> list[Any]:
        """Point the request's output tensors at the caller's arrays for this call only.

        Only outputs whose shape is static are bound: OpenVINO resizes a dynamic output's tensor to whatever the
        model produces, which would write past a caller's array of the wrong size. Session copies the others in
        after checking their shape.
        """
        bind = {n: a for n, a in out.items() if n in self._static_outputs}
        if not self._lean or not bind:
            return self.run(feeds, output_names)
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
