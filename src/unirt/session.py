"""`unirt.Session`: detect the model's format, pick a backend, load, and run with checked inputs."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import registry
from .arena import Arena
from .backend import PRECISIONS, Backend, BackendSession, LoadOptions
from .batch_runner import BatchStats
from .batching import BatchSpec
from .devices import Device
from .errors import (
    BackendUnavailableError,
    InputError,
    ModelFormatError,
    RunError,
    SessionClosedError,
    UnirtError,
    UnsupportedOptionError,
)
from .feeds import BatchSizeMismatch, InputChecker
from .formats import ModelFile, ModelFormat, PathLike, open_model
from .loading import CONVERSION_OPTION, load_runner, prepare, split_settings
from .pool import BufferPool
from .run_plan import RunPlan
from .selection import Explanation, auto_rank
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


def _check_memory_options(
    max_batch: Any, batched: Any, pool: Any, pooled_outputs: Any, arena: Any, isolate: Any
) -> None:
    if batched is not None and not isinstance(batched, bool):
        raise UnsupportedOptionError(f"batched must be True, False or None (read from the model), got {batched!r}")
    if not isinstance(pooled_outputs, bool) and pooled_outputs != "auto":
        raise UnsupportedOptionError(f"pooled_outputs must be 'auto', True or False, got {pooled_outputs!r}")
    if not isinstance(isolate, bool):
        raise UnsupportedOptionError(f"isolate must be True or False, got {isolate!r}")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise UnsupportedOptionError(f"max_batch must be a positive integer or None, got {max_batch!r}")
    if pool is not None and not isinstance(pool, BufferPool):
        raise UnsupportedOptionError(f"pool must be a unirt.BufferPool, got {type(pool).__name__}")
    if arena is not None and not isinstance(arena, Arena):
        raise UnsupportedOptionError(f"arena must be a unirt.Arena, got {type(arena).__name__}")


def _check_input_shapes(input_shapes: Any) -> dict[str, tuple[int, ...]] | None:
    """{input: shape} with whole, concrete shapes: the shapes a converting backend converts at (and "fastest"
    times at)."""
    if input_shapes is None:
        return None
    if not isinstance(input_shapes, Mapping):
        raise UnsupportedOptionError(
            f"input_shapes must be a dict {{input name: shape}}, e.g. "
            f"{{'x': (1, 3, 320, 320)}}, got {type(input_shapes).__name__}"
        )
    shapes = {}
    for name, shape in input_shapes.items():
        try:
            dims = tuple(shape)
            if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims):
                raise TypeError
        except TypeError:
            raise UnsupportedOptionError(
                f"input_shapes[{name!r}] must be a sequence of sizes (non-negative "
                f"integers), e.g. (1, 3, 320, 320), got {shape!r}"
            ) from None
        shapes[str(name)] = tuple(int(d) for d in dims)
    return shapes


_session_numbers = itertools.count(1)


class Session:
    """A model loaded on one backend.

    >>> sess = unirt.Session("model.onnx")                  # backend and device chosen automatically
    >>> sess.run({"x": x})["y"]                             # or sess.run(x) for a single-input model
    >>> sess = unirt.Session("model.onnx", backend="onnxruntime", device="cpu", threads=4)

    `precision="fp32"` (the default) gives fp32 answers on every backend; "fp16" and "int8" are asked for and
    raise UnsupportedOptionError where the backend cannot honour them. `backend_options` go to the engine as-is.
    `backend="fastest"` times every backend that can run the model (with `input_shapes` for dynamic dims) and
    keeps the fastest; the choice is cached per model, machine and options (see `unirt.fastest`). `backend` may
    also be a `unirt.Backend` object or subclass (a plugin not installed: docs/plugins.md).
    Thread safety: `run` and `run_many` may be called from several threads at once on every backend (those whose
    engine runs one call at a time serialise them); `close` from another thread lets runs in progress finish or
    raise SessionClosedError. Sessions sharing an `arena` run one at a time.

    Memory and batching (see the README): outputs of at least 64 KiB with their dynamic dims at 1 (all with
    `pooled_outputs=True`) are written by the backend into buffers from `pool` (the session's own BufferPool unless
    one is given) or `arena`, reused across runs. The batch dim is read from the model (`batch`): dim 0 named alike on
    every input and output (dynamic), or fixed at 1 everywhere (static). `batched=True` also takes a dim 0 fixed at
    N > 1, unnamed (TFLite, OpenVINO IR) or named differently per tensor as a batch dim; `batched=False` takes none.
    Without a batch dim `run_many` runs requests one by one. A static-batch model pads or splits requests
    of another batch size; `max_batch` splits larger requests for a dynamic one (and reaches the backend: TensorRT
    builds its profile for it). `run_many` packs requests into few runs.
    `isolate=True` runs the backend in a child process: a native crash raises BackendCrashedError and the next
    call restarts it.

    Device tensors (docs/device-tensors.md): a backend running on a GPU (torch on cuda) takes CUDA tensors (DLPack,
    `__cuda_array_interface__`) without a host round trip; a host-only backend refuses them with InputError unless
    `copy_device_inputs=True`. `device_outputs=True` returns outputs as device tensors (torch tensors on the
    session's GPU): the caller owns them, and they are ready on every stream when `run` returns.
    """

    def __init__(
        self,
        model: PathLike | bytes | ModelFile,
        backend: str | Backend | type[Backend] = "auto",
        device: str | Device = "auto",
        *,
        threads: int | None = None,
        precision: str = "fp32",
        backend_options: Mapping[str, Any] | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        max_batch: int | None = None,
        batched: bool | None = None,
        pool: BufferPool | None = None,
        pooled_outputs: bool | str = "auto",
        arena: Arena | None = None,
        isolate: bool = False,
        copy_device_inputs: bool = False,
        device_outputs: bool = False,
    ) -> None:
        self._runner: BackendSession | None = None
        self._run = None
        self._own_pool: BufferPool | None = None
        self._conversion = None
        self._lazy = None  # a LazyConversion runner: converting at the runs' shapes (unirt.conversion.lazy)
        #: For a backend reading a format it does not own (OpenVINO on ONNX): whether that frontend is verified
        #: against the format's reference engine (`unirt.conversion.frontend`), else None.
        self.verification = None
        self._frontend = None  # the check still to run on the first run (one attribute test per run)
        self._frontend_settings: dict = {}
        _check_options(threads, precision, backend_options)
        self._input_shapes = _check_input_shapes(input_shapes)
        _check_memory_options(max_batch, batched, pool, pooled_outputs, arena, isolate)
        for flag, value in (("copy_device_inputs", copy_device_inputs), ("device_outputs", device_outputs)):
            if not isinstance(value, bool):
                raise UnsupportedOptionError(f"{flag} must be True or False, got {value!r}")
        if device_outputs and backend == "fastest":
            raise UnsupportedOptionError(
                "device_outputs=True needs the backend named (e.g. backend='torch', device='cuda'): "
                "backend='fastest' times the candidates on host arrays and may pick one that returns host arrays"
            )
        self._copy_device_inputs = copy_device_inputs
        self._device_outputs = device_outputs
        requested = Device.parse(device)
        detectors: tuple = ()
        if not isinstance(backend, str):  # a Backend object or subclass (xarray's engine=): by its name from here on
            backend, detectors = self._given_backend(backend, isolate)
        self._model = open_model(model, detectors)
        self._selection: Explanation | None = None
        runner: BackendSession | None = None
        if backend == "fastest":  # timed choice (unirt.fastest); the winner comes back loaded
            deferred = (
                None if isolate else self._defer_fastest(requested, threads, precision, backend_options, max_batch)
            )
            if deferred is not None:  # shapes open and not given: chosen at the first run, on its inputs
                name, resolved, runner = "fastest", str(requested), deferred
            else:
                name, resolved, runner, backend_options = self._choose_fastest(
                    requested, threads, precision, backend_options, self._input_shapes, max_batch
                )
        else:
            name, resolved = self._choose(backend, requested, threads, precision, backend_options, max_batch)
        self._options = LoadOptions(
            device=Device.parse(resolved),
            threads=threads,
            precision=precision,
            backend_options=dict(backend_options or {}),
            max_batch=max_batch,
            device_outputs=device_outputs,
        )
        if isolate:
            if runner is not None:  # "fastest" timed it in this process; it runs in a child from now on
                runner.close()
            runner = self._load_isolated(name)
        else:
            runner = runner or self._load(name)
        self._isolated = isolate
        self._backend_name = name
        self._runner = runner
        try:
            self._setup(runner, resolved, precision, max_batch, batched, pool, pooled_outputs, arena)
            if self._conversion is None and self._lazy is None and name != "fastest":  # deferred: at its choice
                self._plan_frontend_check(name)
        except BaseException:
            self._runner = None
            runner.close()  # an option refused after loading: the engine (or isolated child) must not linger
            raise
        self._run = runner.run  # bound once: the hot path does no attribute lookups on the runner
        if self._selection is not None:  # the explanation says which precision is in force, not only asked for
            self._selection = dataclasses.replace(
                self._selection,
                precision=precision,
                precision_in_force=self._precision,
                precision_info=self._precision_info,
            )

    def _setup(
        self,
        runner: BackendSession,
        resolved: str,
        precision: str,
        max_batch: int | None,
        batched: bool | None,
        pool: BufferPool | None,
        pooled_outputs: bool | str,
        arena: Arena | None,
    ) -> None:
        self._inputs = tuple(runner.inputs)
        self._outputs = tuple(runner.outputs)
        self._device = str(getattr(runner, "device", resolved) or resolved)
        if self._device_outputs and not getattr(runner, "device_outputs", False):
            raise UnsupportedOptionError(
                f"device_outputs=True: backend {self._backend_name!r} on {self._device} "
                "returns host arrays (outputs stay on the device only where a backend runs "
                "on a GPU and supports it, e.g. torch on cuda)"
            )
        self._precision = getattr(runner, "precision", None) or precision
        self._precision_info = getattr(runner, "precision_info", None) or self._precision
        self._batch = BatchSpec.detect(self._inputs, self._outputs, batched)
        if max_batch is not None and self._batch.kind != "dynamic":
            raise UnsupportedOptionError(
                f"max_batch applies to models with a dynamic batch dim; this model has {self._batch}"
            )
        if max_batch is None and self._batch.kind == "dynamic":  # an engine built for bounded batches (TensorRT)
            max_batch = getattr(runner, "max_batch", None)
        hint = None
        if batched is None and not self._batch.batched:  # fixed at N > 1 everywhere: batched=True would batch it
            maybe = BatchSpec._infer(self._inputs, self._outputs, lenient=True)
            hint = maybe.size if maybe.kind == "static" else None
        converted_for = self._backend_name if self._conversion is not None else None
        # A dynamic batch dim the inputs do not share by name (asserted with batched=True): rows checked to agree
        agree = self._batch.kind == "dynamic" and (
            self._batch.symbol is None or any(i.shape[0] != self._batch.symbol for i in self._inputs)
        )
        self._check = InputChecker(
            self._inputs,
            self._batch.size,
            hint,
            converted_for,
            agree,
            device_inputs=frozenset(getattr(runner, "device_inputs", ()) or ()),
            copy_device_inputs=self._copy_device_inputs,
            runs_on=f"{self._backend_name}, {self._device}",
        ).check
        self._output_names = tuple(o.name for o in self._outputs)
        # outputs whose rank the model file does not give: the runner learns them from runs (ncnn, MNN)
        self._ranks_pending = any(o.shape is None for o in self._outputs)
        self._output_infos = {o.name: o for o in self._outputs}
        if pool is None:
            pool = self._own_pool = BufferPool()
        label = f"{os.path.basename(self._model.name)} on {self._backend_name} (session {next(_session_numbers)})"
        self._plan = RunPlan(
            runner,
            self._backend_name,
            self._inputs,
            self._outputs,
            self._check,
            batch=self._batch,
            max_batch=max_batch,
            pool=pool,
            arena=arena,
            pooled_outputs=pooled_outputs,
            label=label,
        )
        self._planned = self._plan.active

    # -- loading ---------------------------------------------------------------------------------------------
    @staticmethod
    def _given_backend(backend: Any, isolate: bool) -> tuple[str, tuple]:
        """backend=<a unirt.Backend object or subclass>: registered under its name (`unirt.registry.use`); its format
        detector reads the model too."""
        name = registry.use(backend)
        if isolate and name not in registry.installed_names():
            raise UnsupportedOptionError(
                f"isolate=True needs a backend the child process can find by name; "
                f"backend {name!r} was given as an object: install it as a plugin "
                f"(an entry point in the unirt.backends group) to isolate it"
            )
        return name, (registry.get_backend(name),)

    def _choose(
        self,
        backend: str,
        device: Device,
        threads: int | None = None,
        precision: str = "fp32",
        backend_options: Mapping[str, Any] | None = None,
        max_batch: int | None = None,
    ) -> tuple[str, str]:
        if not isinstance(backend, str) or not backend:
            raise UnsupportedOptionError(f"backend must be a backend name or 'auto', got {backend!r}")
        if backend == "auto":  # a stored measurement of this model and options orders it, else the hardware table
            self._selection = auto_rank(
                self._model,
                device,
                threads=threads,
                precision=precision,
                backend_options=backend_options,
                max_batch=max_batch,
                input_shapes=self._input_shapes,
            )
            chosen = self._selection.chosen
            if chosen is None:
                if not registry.installed_names():
                    raise BackendUnavailableError(
                        "no unirt backend is installed. Install one, e.g.: "
                        "pip install ./plugins/onnxruntime (from unirt's source checkout)"
                    )
                raise BackendUnavailableError(
                    f"no installed backend can run this {self._model.format} model on {device}:\n{self._selection}"
                )
            assert chosen.device is not None
            return chosen.backend, chosen.device
        plugin = registry.get_backend(backend)
        if not plugin.accepts(self._model) and self._model.format not in plugin.converts_from:
            reads = ", ".join(sorted(f.value for f in plugin.formats))
            raise ModelFormatError(
                f"{self._model.name}: backend {backend!r} does not read {self._model.format} models (it reads {reads})"
            )
        avail = registry.availability(backend)
        if not avail.available:
            raise BackendUnavailableError(f"backend {backend!r} cannot run here: {avail.reason}")
        picked = device.pick(avail.devices)
        if picked is None:
            note = f" ({avail.device_note})" if avail.device_note else ""
            raise UnsupportedOptionError(
                f"backend {backend!r} cannot run on {device} here; it offers "
                f"{', '.join(avail.devices) or 'no device'}{note}"
            )
        return backend, picked

    def _choose_fastest(
        self,
        device: Device,
        threads: int | None,
        precision: str,
        backend_options: Mapping[str, Any] | None,
        input_shapes: Mapping[str, Sequence[int]] | None,
        max_batch: int | None,
        inputs: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[str, str, Any, dict]:
        from .fastest import choose, options_for

        self._selection, runner = choose(
            self._model,
            device,
            threads=threads,
            precision=precision,
            backend_options=backend_options,
            input_shapes=input_shapes,
            max_batch=max_batch,
            inputs=inputs,
        )
        chosen = self._selection.chosen
        if chosen is None or chosen.device is None:
            raise BackendUnavailableError(
                f"no installed backend can run this {self._model.format} model on {device}:\n{self._selection}"
            )
        options = options_for(backend_options or {}, chosen.backend)
        if runner is not None and self._selection.conversion is not None:  # the winner runs a converted model
            conv = self._selection.conversion
            convert_options = LoadOptions(
                device=Device.parse(chosen.device),
                threads=threads,
                precision=precision,
                backend_options=dict(options),
                max_batch=max_batch,
            )
            options.pop(CONVERSION_OPTION, None)
            # other shapes than those it was converted at convert again (cached), as for any converting Session:
            # the Session checks inputs against the source model's signature, not the conversion's fixed sizes
            signature = self._source_signature() or (list(runner.inputs), list(runner.outputs))
            runner = self._lazy_runner(
                chosen.backend,
                registry.get_backend(chosen.backend),
                signature,
                chosen.device,
                convert_options,
                seed=(runner, conv),
            )
            self._model = open_model(conv.path)
        if runner is not None:  # loaded by `choose`; else `_load` takes the settings out itself
            options = self._take_settings(options)
        return chosen.backend, chosen.device, runner, options

    def _take_settings(self, backend_options: dict) -> dict:
        """Keep unirt's conversion settings (for a frontend check) out of what the engine is given."""
        options, self._frontend_settings = split_settings(LoadOptions(backend_options=backend_options))
        return dict(options.backend_options)

    def _plan_frontend_check(self, name: str) -> None:
        """A backend reading a format it does not own is converting: plan its check against the reference."""
        if not registry.get_backend(name).reads_through_frontend(self._model):
            return
        from .conversion.frontend import FrontendCheck

        self.verification, self._frontend = FrontendCheck.plan(
            self._model, name, self._options, self._frontend_settings
        )

    def _verify_frontend(self, arrays: dict[str, np.ndarray], runner: BackendSession | None = None) -> None:
        """The first run: compare the backend (`runner`, default the Session's) with the format's reference on these
        inputs (cached)."""
        check = self._frontend
        if check is None:
            return
        with check.lock:
            if self._frontend is None:  # another thread's first run did it meanwhile
                return
            try:
                check.run(runner or self._runner, arrays, self._output_names)
                self._frontend = None  # verified, accepted or unverifiable: runs go on unchecked
            except UnirtError:
                raise
            except Exception as exc:  # the backend itself failed on these inputs, as the run would have
                self._raise_if_closed(exc)
                raise RunError(f"backend {self._backend_name!r} failed to run: {type(exc).__name__}: {exc}") from exc
            finally:
                self.verification = check.status

    def _static_rows(self, mismatch: BatchSizeMismatch) -> dict[str, np.ndarray]:
        """A static-batch model's inputs at its batch N, from a request of another row count (its rows cycled or
        cut): what the first run's frontend check runs on."""
        rows = np.arange(self._batch.size or 1) % max(mismatch.rows, 1)
        return {k: np.ascontiguousarray(v[rows]) for k, v in mismatch.arrays.items()}

    def _source_signature(self) -> tuple[list[TensorInfo], list[TensorInfo]] | None:
        """The ONNX source model's inputs and outputs as the file states them; None for another format."""
        if self._model.format is not ModelFormat.ONNX:
            return None
        from .conversion.build import _onnx_file_signature

        return _onnx_file_signature(self._model)

    def _defer_fastest(
        self,
        device: Device,
        threads: int | None,
        precision: str,
        backend_options: Mapping[str, Any] | None,
        max_batch: int | None,
    ) -> BackendSession | None:
        """backend="fastest" on a model with shapes open and not given (`input_shapes`): a runner that chooses at
        the first run, timed on its inputs (never on guessed 1x1 inputs that the real ones would then not fit).
        None when the shapes are known."""
        from .fastest import DeferredChoice, _open_shapes

        if _open_shapes(self._model, self._input_shapes) is None:
            return None
        from .conversion.lazy import deferred_signature

        signature = deferred_signature(self._model, self._input_shapes)
        assert signature is not None

        def choose_at(feeds: Mapping[str, np.ndarray]) -> BackendSession:
            name, resolved, runner, options = self._choose_fastest(
                device, threads, precision, backend_options, None, max_batch, inputs=feeds
            )
            self._options = LoadOptions(
                device=Device.parse(resolved),
                threads=threads,
                precision=precision,
                backend_options=options,
                max_batch=max_batch,
            )
            if runner is None:  # the choice came from the cache: load the winner (converting at these shapes)
                runner = self._load(name)
            self._backend_name, self._device = name, str(getattr(runner, "device", resolved) or resolved)
            self._precision = getattr(runner, "precision", None) or precision
            if self._selection is not None:
                self._selection = dataclasses.replace(
                    self._selection, precision=precision, precision_in_force=self._precision
                )
            if self._lazy is None and self.conversion is None:  # the winner reads the format through a frontend
                self._plan_frontend_check(name)
                if self._frontend is not None:
                    self._verify_frontend(dict(feeds), runner)
            return runner

        return DeferredChoice(signature[0], signature[1], str(device), choose_at)

    def _lazy_runner(
        self,
        name: str,
        plugin: Any,
        signature: tuple,
        device: str,
        options: LoadOptions,
        *,
        seed: tuple | None = None,
        isolate: bool = False,
    ) -> BackendSession:
        """A runner converting at each run's shapes as needed (`unirt.conversion.lazy`); `options` still hold the
        conversion settings."""
        from .conversion import convert_for_load
        from .conversion.lazy import LazyConversion

        source = self._model

        def convert(feeds: Mapping[str, np.ndarray]) -> Any:
            return convert_for_load(source, name, options, inputs=feeds)

        def load(model: ModelFile, load_options: LoadOptions) -> BackendSession:
            if isolate:
                from .isolation import IsolatedRunner

                return IsolatedRunner(name, model, load_options)
            return load_runner(plugin, model, load_options)

        self._lazy = LazyConversion(name, signature[0], signature[1], device, convert, load, seed=seed)
        return self._lazy

    @property
    def conversion(self) -> Any:
        """The `unirt.conversion.Conversion` the backend runs (made on load, or at the latest run's shapes when the
        conversion waits for them) when it converts the model's format, else None."""
        return self._lazy.conversion if self._lazy is not None else self._conversion

    def _deferred(self, name: str, plugin: Any, isolate: bool) -> BackendSession | None:
        """Where the conversion must wait for the first run's shapes (dynamic dims, no shapes given), the runner
        that waits; else None."""
        from .conversion import conversion_settings
        from .conversion.lazy import deferred_signature

        settings, load_options = conversion_settings(self._options)
        shapes = self._input_shapes if self._input_shapes is not None else settings.get("input_shapes")
        if shapes and self._model.format is ModelFormat.ONNX:
            from .conversion.lazy import _source_inputs

            names = [i.name for i in _source_inputs(self._model)]
            unknown = sorted(set(shapes) - set(names))
            if unknown:
                raise InputError(
                    f"input_shapes names unknown input {unknown[0]!r}; the model's inputs are: {', '.join(names)}"
                )
        signature = deferred_signature(self._model, shapes)
        if signature is None:
            return None
        check = getattr(plugin, "check_convertible", None)  # what no shape changes: refused now, not at a run
        if check is not None:
            check(signature[0])
        runner = self._lazy_runner(name, plugin, signature, str(self._options.device), self._options, isolate=isolate)
        self._options = load_options
        return runner

    def _load(self, name: str) -> BackendSession:
        plugin = registry.get_backend(name)
        lazy = self._prepare(name, plugin, isolate=False)
        return lazy if lazy is not None else load_runner(plugin, self._model, self._options)

    def _prepare(self, name: str, plugin: Any, isolate: bool) -> BackendSession | None:
        """Before loading on `name` (`unirt.loading.prepare`): convert the model if the backend converts its format
        (or return the runner that converts at the first run's shapes), else keep unirt's conversion settings out of
        the engine's options (a frontend check takes them)."""
        converts = plugin.converts_on_load(self._model)
        if converts:
            lazy = self._deferred(name, plugin, isolate=isolate)
            if lazy is not None:
                return lazy
        prepared = prepare(plugin, self._model, self._options, input_shapes=self._input_shapes)
        self._model, self._options = prepared.model, prepared.options
        if converts:
            self._conversion = prepared.conversion  # converted here (cached); an isolated child loads the result
        elif prepared.settings or not self._frontend_settings:
            self._frontend_settings = prepared.settings
        return None

    def _load_isolated(self, name: str) -> BackendSession:
        from .isolation import IsolatedRunner

        lazy = self._prepare(name, registry.get_backend(name), isolate=True)
        return lazy if lazy is not None else IsolatedRunner(name, self._model, self._options)

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
        try:
            arrays = self._check(feeds)
        except BatchSizeMismatch as mismatch:  # a static-batch model given another batch size: pad or split
            names = self._names(output_names)
            if self._frontend is not None:
                self._verify_frontend(self._static_rows(mismatch))
            try:
                return self._plan.run_rebatched(mismatch, names, out)
            except Exception as exc:
                self._raise_if_closed(exc)
                raise
        if self._frontend is not None:  # the first run of a backend reading a format it does not own
            self._verify_frontend(arrays)
        names = self._output_names if output_names is None else self._check_output_names(output_names)
        if out is not None and self._device_outputs:
            raise InputError("out= takes host arrays; this session returns device tensors (device_outputs=True)")
        if out is not None or self._planned:
            try:
                return self._plan.run(arrays, names, out)
            except Exception as exc:
                self._raise_if_closed(exc)
                raise
        try:
            results = run(arrays, names)
        except UnirtError as exc:
            self._raise_if_closed(exc)
            raise
        except Exception as exc:
            self._raise_if_closed(exc)
            raise RunError(f"backend {self._backend_name!r} failed to run: {type(exc).__name__}: {exc}") from exc
        return dict(zip(names, results))

    def _raise_if_closed(self, exc: Exception) -> None:
        """A run that failed because another thread closed the session meanwhile raises SessionClosedError."""
        if self._run is None and not isinstance(exc, SessionClosedError):
            raise SessionClosedError(
                "this Session was closed by another thread while this run was in progress"
            ) from exc

    def run_many(
        self,
        requests: Sequence[Any],
        output_names: Sequence[str] | None = None,
        *,
        out: Sequence[Mapping[str, np.ndarray] | None] | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """Run independent requests (each what `run` takes) in as few backend runs as the model allows.

        Requests whose dims after the batch dim agree are gathered into batches (padded to N for a static-batch
        model, at most `max_batch` rows for a dynamic one) and their outputs scattered back: results, in request
        order, equal one-by-one runs. Each result is a view of its batch's output buffer, which returns to the
        pool when every view is gone; `out` (one dict or None per request) has outputs copied into your arrays.
        A model without a batch dim runs the requests one by one.
        """
        if self._run is None:
            raise SessionClosedError("this Session is closed")
        if self._device_outputs and self._batch.batched:
            raise UnsupportedOptionError(
                "run_many packs requests into batches of host arrays; with "
                "device_outputs=True call run() per request (or batch on the device)"
            )
        names = self._names(output_names)
        if self._frontend is not None and len(requests):  # verified on the first request's inputs
            try:
                first = self._check(requests[0])
            except BatchSizeMismatch as mismatch:
                first = self._static_rows(mismatch)
            except InputError:  # bad input: run_many reports it; the check waits for a run that has inputs
                first = None
            if first is not None:
                self._verify_frontend(first)
        try:
            return self._plan.run_many(requests, names, out)
        except Exception as exc:
            self._raise_if_closed(exc)
            raise

    def _names(self, output_names: Sequence[str] | None) -> tuple[str, ...]:
        return self._output_names if output_names is None else self._check_output_names(output_names)

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
        try:
            names = tuple(output_names)
        except TypeError:
            raise InputError(
                f"output_names must be an output name or a list of them, got {type(output_names).__name__}"
            ) from None
        if not names:
            raise InputError(
                f"output_names is empty; name at least one output (the model's outputs are: "
                f"{', '.join(self._output_names)}), or pass None for all of them"
            )
        unknown = [n for n in names if not isinstance(n, str) or n not in self._output_infos]
        if unknown:
            raise InputError(
                f"unknown output{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"the model's outputs are: {', '.join(self._output_names)}"
            )
        return names

    # -- introspection and lifetime --------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        """The model's outputs. One the file gives no rank for has shape None until a run shows it."""
        if self._ranks_pending and self._runner is not None:
            seen = tuple(self._runner.outputs)
            if [o.name for o in seen] == list(self._output_names):
                self._outputs = seen  # the runner keeps refining them (a dim that varies becomes dynamic)
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
    def precision_info(self) -> str:
        """The precision in force and how the backend determined it, e.g. "bf16 (OpenVINO
        INFERENCE_PRECISION_HINT=bf16; CPU has avx512_bf16)"; just the precision where there is nothing to add."""
        return self._precision_info

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
    def batch(self) -> BatchSpec:
        """Whether the model's batch dim is static (N), dynamic, or absent."""
        return self._batch

    def batch_stats(self) -> BatchStats:
        """What padding, splitting and run_many did so far: requests, backend runs, padded rows, waste."""
        return self._plan.stats()

    @property
    def pool(self) -> BufferPool:
        """The BufferPool this session's outputs and staging buffers come from (unless it uses an arena)."""
        return self._plan.pool

    @property
    def arena(self) -> Arena | None:
        return self._plan.arena

    @property
    def isolated(self) -> bool:
        """Whether the backend runs in a child process (isolate=True)."""
        return self._isolated

    @property
    def closed(self) -> bool:
        return self._run is None

    def close(self) -> None:
        """Release the backend's resources, and the cache of the session's own pool. Idempotent.
        Arrays returned earlier stay valid."""
        runner, self._runner, self._run = self._runner, None, None
        if runner is not None:
            self._plan.close()
            runner.close()
        if self._own_pool is not None:
            self._own_pool.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        def fmt(infos: Sequence[TensorInfo]) -> str:
            return ", ".join(f"{i.name}: {i.dtype}{i.shape_str()}" for i in infos)

        name = os.path.basename(self._model.name) if self._model.path is not None else self._model.name
        state = " closed" if self.closed else ""
        frontend = (
            ""
            if self.verification is None
            else (f" frontend={self.verification.source_format!r} ({self.verification.short()})")
        )
        conv = (
            f" conversion={self._lazy.describe()!r}"
            if self._lazy is not None
            else (
                f" converted_at={self._conversion.describe_shapes()!r}"
                if self._conversion is not None and self._conversion.shapes
                else ""
            )
        )
        return (
            f"<unirt.Session{state} model={name!r} backend={self._backend_name!r} device={self._device!r} "
            f"precision={self._precision!r}{frontend} "
            f"inputs=[{fmt(self._inputs)}] outputs=[{fmt(self.outputs)}]{conv}>"
        )
