"""The runner: one LiteRT Interpreter behind unirt's BackendSession interface.

Runs call the interpreter's native wrapper directly (SetTensor / Invoke / GetTensor): unirt has already checked
the feeds, and the public methods' per-call safety check only guards against views unirt never keeps. Each input
is copied once into the interpreter (TFLite owns its tensors), each output once into an array the caller owns;
`run_into` copies straight into the caller's array. Dynamic dims resize the input and re-plan only when a shape
changes. An Interpreter runs one call at a time: a lock serialises concurrent callers.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from ai_edge_litert import interpreter as litert

from unirt import (
    BackendSession,
    BuffersRefusedError,
    LoadOptions,
    ModelFile,
    ModelLoadError,
    RunError,
    TensorInfo,
    UnsupportedOptionError,
)
from unirt.plugin_sdk import filtered_stderr, quantized_info

from .options import dims, interpreter_settings, precision_in_force, quantization

log = logging.getLogger(__name__)
#: How LiteRT says a model uses an op it does not have (a custom op, a builtin newer than this LiteRT).
_MISSING_OP = ("unresolved custom op", "Didn't find op for builtin opcode", "Didn't find custom op")

#: What LiteRT's load_delegate calls in an external delegate library.
_DELEGATE_SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")


def _load_delegates(specs: Sequence[Any]) -> list[Any]:
    delegates = []
    for spec in specs:
        if isinstance(spec, litert.Delegate):
            delegates.append(spec)
            continue
        library, opts = (spec["library"], spec.get("options")) if isinstance(spec, dict) else (spec, None)
        try:  # open it first: LiteRT's Delegate raises in __del__ when its library failed to load
            lib = ctypes.CDLL(str(library))
        except OSError as exc:
            raise UnsupportedOptionError(f"tflite: cannot load delegate {library}: {exc}") from None
        missing = [s for s in _DELEGATE_SYMBOLS if not hasattr(lib, s)]
        if missing:  # e.g. any other shared library: LiteRT would fail with an AttributeError, then again in __del__
            raise UnsupportedOptionError(
                f"tflite: backend_options['delegates']: {library} is not a TFLite external "
                f"delegate library: it does not export {' and '.join(missing)}"
            )
        try:
            delegates.append(litert.load_delegate(str(library), opts))
        except (ValueError, OSError, RuntimeError, AttributeError) as exc:
            raise UnsupportedOptionError(f"tflite: cannot load delegate {library}: {exc}") from None
    return delegates


def _clean(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class TFLiteSession(BackendSession):
    def __init__(self, model: ModelFile, options: LoadOptions) -> None:
        settings = interpreter_settings(options.backend_options)
        delegates = _load_delegates(settings.delegates)
        kwargs: dict[str, Any] = dict(
            experimental_delegates=delegates or None,
            num_threads=options.threads,
            experimental_op_resolver_type=getattr(litert.OpResolverType, settings.op_resolver),
            experimental_preserve_all_tensors=settings.preserve_all_tensors,
        )
        if model.path is not None:
            kwargs["model_path"] = str(model.path)
        else:
            kwargs["model_content"] = model.read_bytes()
        try:
            self._interpreter = litert.Interpreter(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"{model.name}: tflite could not load this {model.format} model: {_clean(exc)}"
            ) from None
        it = self._interpreter
        in_details, out_details = it.get_input_details(), it.get_output_details()
        dynamic = any(any(s < 0 for s in d["shape_signature"]) for d in in_details)
        try:
            with filtered_stderr():  # the first allocation prints "INFO: Created ... XNNPACK delegate" from C++
                it.allocate_tensors()
            allocated = True
        except (ValueError, RuntimeError) as exc:
            # A dynamic signature's file shape is a placeholder (often all 1s): a model may not prepare there
            # (a VALID convolution wider than 1 sample) yet run at the shapes it is fed. Such a model is planned
            # at the first run's shapes; a model with only static inputs has no other shape to plan at.
            # An op this LiteRT lacks fails at every shape: that is a load error whatever the signature says.
            if not dynamic or any(m in str(exc) for m in _MISSING_OP):
                raise ModelLoadError(
                    f"{model.name}: tflite could not load this {model.format} model: {_clean(exc)}"
                ) from None
            allocated = False
            log.debug(
                "%s: not prepared at the placeholder shapes (%s); planned at the first run's shapes",
                model.name,
                _clean(exc),
            )
        self.inputs = [self._info(d) for d in in_details]
        self.outputs = [self._info(d) for d in out_details]
        quantized = any(i.quantization is not None for i in (*self.inputs, *self.outputs)) or any(
            quantization(d.get("quantization_parameters"), np.dtype(d["dtype"])) is not None
            for d in it.get_tensor_details()
        )
        self.precision = precision_in_force(options.precision, quantized)
        self.precision_info = (
            quantized_info("int8/uint8 tensors with scales", "TFLite's int8 kernels")
            if quantized
            else "fp32 (TFLite's CPU kernels compute a float model in fp32)"
        )
        self.device = "cpu"
        self.delegates = tuple(type(d).__name__ for d in delegates)
        self._lock = threading.Lock()
        self._native = it._interpreter  # the C++ wrapper the public methods call
        self._in_pairs = tuple((d["name"], int(d["index"])) for d in in_details)
        self._dynamic_inputs = tuple(
            (d["name"], int(d["index"])) for d in in_details if any(s < 0 for s in d["shape_signature"])
        )
        # an input's shape as planned; None: the tensors are unallocated, the next run resizes and re-plans
        self._shapes: dict[int, tuple[int, ...] | None] = {
            int(d["index"]): tuple(int(s) for s in d["shape"]) if allocated else None for d in in_details
        }
        self._out_index = {d["name"]: int(d["index"]) for d in out_details}
        self._scalar_outputs = any(o.rank == 0 for o in self.outputs)

    @staticmethod
    def _info(detail: dict[str, Any]) -> TensorInfo:
        dtype = np.dtype(detail["dtype"])
        if dtype.kind in "SU":
            dtype = np.dtype(object)
        signature = detail.get("shape_signature")
        shape = dims(signature if signature is not None and len(signature) == len(detail["shape"]) else detail["shape"])
        return TensorInfo(detail["name"], shape, dtype, quantization(detail.get("quantization_parameters"), dtype))

    def _feed(self, feeds: dict[str, np.ndarray]) -> None:
        native = self._native
        if self._dynamic_inputs:
            changed = []
            for name, index in self._dynamic_inputs:
                shape = feeds[name].shape
                if shape != self._shapes[index]:
                    changed.append((index, shape))
            if changed:  # re-plan only when a shape changed
                try:
                    with filtered_stderr():  # a model planned at its first run's shapes allocates (and logs) here
                        for index, shape in changed:
                            native.ResizeInputTensor(index, np.array(shape, np.int32), False)
                        native.AllocateTensors()
                except BaseException as exc:
                    # the tensors are unallocated now: the next run must resize and re-plan whatever it is given
                    self._shapes = dict.fromkeys(self._shapes)
                    if isinstance(exc, (ValueError, RuntimeError)):
                        at = ", ".join(f"{name!r} {list(feeds[name].shape)}" for name, _ in self._dynamic_inputs)
                        raise RuntimeError(f"the model does not prepare at input shapes {at}: {_clean(exc)}") from None
                    raise
                for index, shape in changed:
                    self._shapes[index] = shape
        for name, index in self._in_pairs:
            native.SetTensor(index, feeds[name])

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        native, out_index = self._native, self._out_index
        with self._lock:
            try:
                self._feed(feeds)
                native.Invoke()
                values = [native.GetTensor(out_index[name], 0) for name in output_names]
            except (ValueError, RuntimeError) as exc:
                raise RunError(f"tflite: {_clean(exc)}") from None
        # GetTensor gives numpy scalars for 0-d tensors; unirt's outputs are arrays
        return [np.asarray(v) for v in values] if self._scalar_outputs else values

    def run_into(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str], out: dict[str, np.ndarray]
    ) -> list[Any]:
        """Copy outputs named in `out` straight from the interpreter's buffers into the caller's arrays."""
        native, out_index = self._native, self._out_index
        with self._lock:
            try:
                self._feed(feeds)
                native.Invoke()
                values = []
                for name in output_names:
                    target = out.get(name)
                    if target is None:
                        values.append(np.asarray(native.GetTensor(out_index[name], 0)))
                        continue
                    view = native.tensor(native, out_index[name])
                    if view.shape != target.shape:
                        raise BuffersRefusedError(
                            f"out[{name!r}]: the model produced shape {list(view.shape)}, "
                            f"the array given has shape {list(target.shape)}"
                        )
                    np.copyto(target, view)
                    del view  # a live view of the interpreter's memory would block the next Invoke
                    values.append(target)
                return values
            except (ValueError, RuntimeError) as exc:
                if isinstance(exc, RunError):
                    raise
                raise RunError(f"tflite: {_clean(exc)}") from None

    def close(self) -> None:
        self._native = None
        self._interpreter = None
