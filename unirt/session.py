"""`unirt.Session`: detect the model's format, pick a backend, load, and run with checked inputs."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from . import registry
from .backend import PRECISIONS, BackendSession, LoadOptions
from .devices import Device
from .errors import (BackendUnavailableError, InputError, ModelFormatError, ModelLoadError, RunError,
                     SessionClosedError, UnirtError, UnsupportedOptionError)
from .feeds import InputChecker
from .formats import ModelFile, PathLike, open_model
from .selection import Explanation, rank
from .tensor import TensorInfo

__all__ = ["Session"]
log = logging.getLogger(__name__)


def _check_options(threads: Any, precision: Any, backend_options: Any) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UnsupportedOptionError(f"threads must be a positive integer or None (backend default), got {threads!r}")
    if precision not in PRECISIONS:
        raise UnsupportedOptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if backend_options is not None and not isinstance(backend_options, Mapping):
        raise UnsupportedOptionError(f"backend_options must be a dict, got {type(backend_options).__name__}")


class Session:
    """A model loaded on one backend.

    >>> sess = unirt.Session("model.onnx")                  # backend and device chosen automatically
    >>> sess.run({"x": x})["y"]                             # or sess.run(x) for a single-input model
    >>> sess = unirt.Session("model.onnx", backend="onnxruntime", device="cpu", threads=4)

    `precision="fp32"` (the default) gives fp32 answers on every backend; "fp16" and "int8" are asked for and
    raise UnsupportedOptionError where the backend cannot honour them. `backend_options` go to the engine as-is.
    `backend="fastest"` times every backend that can run the model (with `input_shapes` for dynamic dims) and
    keeps the fastest; the choice is cached per model, machine and options (see `unirt.fastest`).
    Thread safety: `run` may be called from several threads at once when the backend allows it (ONNX Runtime
    does); `close` must not race with `run`.
    """

    def __init__(
        self,
        model: PathLike | bytes | ModelFile,
        backend: str = "auto",
        device: str | Device = "auto",
        *,
        threads: int | None = None,
        precision: str = "fp32",
        backend_options: Mapping[str, Any] | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        self._runner: BackendSession | None = None
        self._run = None
        #: The `unirt.conversion.Conversion` made on load when the backend converts the model's format, else None.
        self.conversion = None
        _check_options(threads, precision, backend_options)
        requested = Device.parse(device)
        self._model = open_model(model)
        self._selection: Explanation | None = None
        runner: BackendSession | None = None
        if backend == "fastest":  # timed choice (unirt.fastest); the winner comes back loaded
            name, resolved, runner, backend_options = self._choose_fastest(requested, threads, precision,
                                                                            backend_options, input_shapes)
        elif input_shapes is not None:
            raise UnsupportedOptionError("input_shapes is used by backend='fastest' (the shapes to time with)")
        else:
            name, resolved = self._choose(backend, requested)
        self._options = LoadOptions(device=Device.parse(resolved), threads=threads, precision=precision,
                                    backend_options=dict(backend_options or {}))
        runner = runner or self._load(name)
        self._backend_name = name
        self._runner = runner
        self._inputs = tuple(runner.inputs)
        self._outputs = tuple(runner.outputs)
        self._device = str(getattr(runner, "device", resolved) or resolved)
        self._precision = getattr(runner, "precision", None) or precision
        self._check = InputChecker(self._inputs).check
        self._output_names = tuple(o.name for o in self._outputs)
        self._output_infos = {o.name: o for o in self._outputs}
        self._run_into = getattr(runner, "run_into", None)
        self._run = runner.run  # bound once: the hot path does no attribute lookups on the runner

    # -- loading ---------------------------------------------------------------------------------------------
    def _choose(self, backend: str, device: Device) -> tuple[str, str]:
        if not isinstance(backend, str) or not backend:
            raise UnsupportedOptionError(f"backend must be a backend name or 'auto', got {backend!r}")
        if backend == "auto":
            self._selection = rank(self._model, device)
            chosen = self._selection.chosen
            if chosen is None:
                if not registry.installed_names():
                    raise BackendUnavailableError("no unirt backend is installed. Install one, e.g.: "
                                                  "pip install unirt-onnxruntime")
                raise BackendUnavailableError(f"no installed backend can run this {self._model.format} model on "
                                              f"{device}:\n{self._selection}")
            assert chosen.device is not None
            return chosen.backend, chosen.device
        plugin = registry.get_backend(backend)
        if not plugin.accepts(self._model) and self._model.format not in plugin.converts_from:
            reads = ", ".join(sorted(f.value for f in plugin.formats))
            raise ModelFormatError(f"{self._model.name}: backend {backend!r} does not read {self._model.format} "
                                   f"models (it reads {reads})")
        avail = registry.availability(backend)
        if not avail.available:
            raise BackendUnavailableError(f"backend {backend!r} cannot run here: {avail.reason}")
        picked = device.pick(avail.devices)
        if picked is None:
            raise UnsupportedOptionError(f"backend {backend!r} cannot run on {device} here; it offers "
                                         f"{', '.join(avail.devices) or 'no device'}")
        return backend, picked

    def _choose_fastest(self, device: Device, threads: int | None, precision: str,
                        backend_options: Mapping[str, Any] | None,
                        input_shapes: Mapping[str, Sequence[int]] | None) -> tuple[str, str, Any, dict]:
        from .fastest import choose, options_for

        self._selection, runner = choose(self._model, device, threads=threads, precision=precision,
                                         backend_options=backend_options, input_shapes=input_shapes)
        chosen = self._selection.chosen
        if chosen is None or chosen.device is None:
            raise BackendUnavailableError(f"no installed backend can run this {self._model.format} model on "
                                          f"{device}:\n{self._selection}")
        return chosen.backend, chosen.device, runner, options_for(backend_options or {}, chosen.backend)

    def _load(self, name: str) -> BackendSession:
        plugin = registry.get_backend(name)
        if not plugin.accepts(self._model) and self._model.format in plugin.converts_from:
            from .conversion import convert_for_load

            self._model, self.conversion, self._options = convert_for_load(self._model, name, self._options)
        try:
            runner = plugin.load(self._model, self._options)
        except UnirtError:
            raise
        except Exception as exc:  # a plugin let an engine error through: still name the file and format
            raise ModelLoadError(f"{self._model.name}: backend {name!r} failed to load this {self._model.format} "
                                 f"model: {type(exc).__name__}: {exc}") from exc
        log.debug("loaded %s on %s (%s)", self._model.name, name, self._options.device)
        return runner

    # -- running ---------------------------------------------------------------------------------------------
    def run(
        self,
        feeds: Any,
        output_names: Sequence[str] | None = None,
        *,
        out: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model. `feeds`: {name: array-like}, or one array-like for a single-input model.

        `output_names` selects outputs (default: all, in model order). `out` gives arrays to write outputs
        into (dtype and shape must match); those outputs are returned as the same array objects.
        """
        run = self._run
        if run is None:
            raise SessionClosedError("this Session is closed")
        arrays = self._check(feeds)
        names = self._output_names if output_names is None else self._check_output_names(output_names)
        if out is not None:
            return self._run_with_out(arrays, names, out)
        try:
            results = run(arrays, names)
        except UnirtError:
            raise
        except Exception as exc:
            raise RunError(f"backend {self._backend_name!r} failed to run: {type(exc).__name__}: {exc}") from exc
        return dict(zip(names, results))

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        """Sugar for `run`: `sess(x)`, `sess(a, b)` in input order, or `sess(a=..., b=...)`."""
        if args and kwargs:
            raise InputError("pass inputs either by position or by name, not both")
        if kwargs:
            return self.run(kwargs)
        if len(args) == 1:
            return self.run(args[0])
        return self.run(list(args))

    def _check_output_names(self, output_names: Sequence[str]) -> tuple[str, ...]:
        if isinstance(output_names, str):
            output_names = (output_names,)
        names = tuple(output_names)
        unknown = [n for n in names if n not in self._output_infos]
        if unknown:
            raise InputError(f"unknown output{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                             f"the model's outputs are: {', '.join(self._output_names)}")
        return names

    def _run_with_out(self, arrays: dict[str, np.ndarray], names: tuple[str, ...],
                      out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, target in out.items():
            if name not in names:
                raise InputError(f"out[{name!r}]: not an output of this run; outputs: {', '.join(names)}")
            info = self._output_infos[name]
            if not isinstance(target, np.ndarray) or not target.flags.c_contiguous or not target.flags.writeable:
                raise InputError(f"out[{name!r}]: expected a writeable C-contiguous numpy array")
            if target.dtype != info.dtype:
                raise InputError(f"out[{name!r}]: expected dtype {info.dtype}, got {target.dtype}")
            if len(target.shape) != info.rank or any(isinstance(d, int) and d != s
                                                     for d, s in zip(info.shape, target.shape)):
                raise InputError(f"out[{name!r}]: expected shape {info.shape_str()}, got {list(target.shape)}")
        try:
            if self._run_into is not None:
                results = self._run_into(arrays, names, dict(out))
            else:
                results = self._run(arrays, names)
        except UnirtError:
            raise
        except Exception as exc:
            raise RunError(f"backend {self._backend_name!r} failed to run: {type(exc).__name__}: {exc}") from exc
        result = dict(zip(names, results))
        for name, target in out.items():
            value = result[name]
            if value is not target:
                if np.shape(value) != target.shape:
                    raise RunError(f"out[{name!r}]: the model produced shape {list(np.shape(value))}, "
                                   f"the array given has shape {list(target.shape)}")
                np.copyto(target, value)
                result[name] = target
        return result

    # -- introspection and lifetime --------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    @property
    def backend(self) -> str:
        """Name of the backend that runs this session."""
        return self._backend_name

    @property
    def device(self) -> str:
        return self._device

    @property
    def precision(self) -> str:
        """The precision in force on the backend (fp32 unless another was asked for)."""
        return self._precision

    @property
    def model(self) -> ModelFile:
        return self._model

    @property
    def options(self) -> LoadOptions:
        return self._options

    @property
    def selection(self) -> Explanation | None:
        """Why this backend was chosen, when `backend="auto"` or `"fastest"` (then with the timings)."""
        return self._selection

    @property
    def closed(self) -> bool:
        return self._run is None

    def close(self) -> None:
        """Release the backend's resources. Idempotent."""
        runner, self._runner, self._run, self._run_into = self._runner, None, None, None
        if runner is not None:
            runner.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        def fmt(infos: Sequence[TensorInfo]) -> str:
            return ", ".join(f"{i.name}: {i.dtype}{i.shape_str()}" for i in infos)

        name = os.path.basename(self._model.name) if self._model.path is not None else self._model.name
        state = " closed" if self.closed else ""
        return (f"<unirt.Session{state} model={name!r} backend={self._backend_name!r} device={self._device!r} "
                f"precision={self._precision!r} "
                f"inputs=[{fmt(self._inputs)}] outputs=[{fmt(self._outputs)}]>")
