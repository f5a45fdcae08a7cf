"""A loaded model version: its Sessions (one per execution instance), warm-up, scheduler and statistics.

Instances may run isolated (`Session(isolate=True)`: the engine in a child process, I/O through shared memory).
Whether they do: the config's `parameters { key: "isolate" }` (true/false/auto), else the server's `--isolate`
(always/never/auto), else the backend's default (`ISOLATE_BY_DEFAULT`: the native engines whose crashes unirt
cannot rule out by validating inputs). A crashed instance fails only the requests it was running; its worker
starts a new child before taking the next request, and the restarts and the last signal are counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from ..errors import BackendCrashedError, UnirtError, UnsupportedOptionError
from ..session import Session
from .batching import run_batch
from .config import ConfigError, ModelSpec, backend_for, build_spec, instance_devices, isolate_setting, session_options
from .datatypes import config_type_to_datatype, decode_raw, element_count, to_numpy_dtype
from .repository import ModelSource
from .scheduler import Completed, Scheduler
from .stats import ModelStats

__all__ = ["LoadedModel", "ISOLATE_BY_DEFAULT", "IN_PROCESS_BY_DEFAULT", "ISOLATE_MODES", "default_queue_size"]
log = logging.getLogger(__name__)

#: `--isolate auto`: backends whose instances run in child processes unless a config says otherwise. The native
#: engines with a record of segfaults and aborts on models and inputs that pass validation (ncnn, MNN, LiteRT);
#: see the README's serve section for the measured cost and the reasoning.
ISOLATE_BY_DEFAULT = frozenset({"ncnn", "mnn", "tflite"})
#: Backends that run in the server's process under `--isolate auto`: engines that check models and inputs and
#: report errors as exceptions (ONNX Runtime, OpenVINO), and TensorRT (a child would hold its own CUDA context).
#: Any other backend — those above, and a third party's plugin, whose native code unirt cannot vouch for — is
#: isolated by default.
IN_PROCESS_BY_DEFAULT = frozenset({"onnxruntime", "openvino", "tensorrt"})
ISOLATE_MODES = ("auto", "always", "never")


def default_queue_size(instances: int, max_batch_size: int) -> int:
    """The queue bound of a model whose config sets none: 32 full batches per instance, at least 64 requests.
    Long enough to absorb a burst, short enough that a request at its tail waits ~32 runs, not unboundedly."""
    return max(64, 32 * instances * max(1, max_batch_size))


def _wants_isolation(setting: str, server_mode: str) -> bool | None:
    """True/False, or None for "the backend's default" (decided once the backend is known)."""
    if setting != "auto":
        return setting == "true"
    if server_mode != "auto":
        return server_mode == "always"
    return None


class LoadedModel:
    """One version of a model, ready to run. Created by `LoadedModel.load`; `close` drains and releases it."""

    def __init__(
        self, name: str, version: int, spec: ModelSpec, sessions: list[Session], *, max_queue_size: int | None = None
    ) -> None:
        self.name = name
        self.version = version
        self.spec = spec
        self.sessions = sessions
        self.stats = ModelStats()
        self.backend = sessions[0].backend
        self.isolated = sessions[0].isolated
        self.crashes = 0  # runs that ended in a crash of their instance's child
        self._restarting: set[int] = set()
        if max_queue_size is None:  # the config's bound, else the default one
            max_queue_size = spec.queue.max_queue_size or default_queue_size(len(sessions), spec.max_batch_size)
        elif spec.queue.max_queue_size:
            max_queue_size = spec.queue.max_queue_size
        runners = [
            _runner(s, (lambda i=i: self._restarting.add(i)) if s.isolated else None) for i, s in enumerate(sessions)
        ]  # a crash marks its instance restarting before anyone hears
        self.scheduler = Scheduler(
            f"{name}:{version}",
            runners,
            [o.name for o in spec.outputs],
            self.stats,
            max_batch_size=spec.max_batch_size,
            batching=spec.batching,
            static_batch=spec.static_batch,
            max_queue_size=max_queue_size,
            on_error=self._instance_failed,
            inline=not self.isolated,
        )

    @classmethod
    def load(
        cls,
        source: ModelSource,
        version: int,
        config: Any,
        *,
        default_max_batch_size: int = 4,
        session_factory: Callable[..., Session] = Session,
        default_threads: int | None = None,
        isolate: str = "auto",
        max_queue_size: int | None = None,
    ) -> LoadedModel:
        """Open one Session per instance, complete and check the config against the model, warm it up.
        `default_threads` (`unirt serve --threads`) applies where the config's parameters set no threads;
        `isolate` is the server's `--isolate` (auto, always, never); `max_queue_size` the server's queue bound
        for models whose config sets none (None: `default_queue_size`, 0: unbounded)."""
        backend = backend_for(config)
        path = source.model_file(version, backend, config.default_model_filename)
        devices = instance_devices(config)
        options = session_options(config)
        if default_threads is not None:
            options.setdefault("threads", default_threads)
        shapes = _config_shapes(config)
        if shapes:  # a backend that converts the model (ncnn, MNN) converts at the config's dims
            options.setdefault("input_shapes", shapes)
        if "threads" not in options and len(devices) > 1 and all(d == "cpu" for d in devices):
            options["threads"] = max(1, (os.cpu_count() or 1) // len(devices))  # don't oversubscribe the CPU
        wanted = _wants_isolation(isolate_setting(config), isolate)
        sessions: list[Session] = []
        try:
            for device in devices:
                sessions.append(_open(session_factory, path, backend, device, options, wanted, source.name))
                if wanted is None:  # decided by the first instance's backend; the others follow it
                    wanted = sessions[0].isolated
            first = sessions[0]
            spec = build_spec(
                config,
                source.name,
                first.inputs,
                first.outputs,
                first.backend,
                default_max_batch_size=default_max_batch_size,
                model_dir=source.directory,
            )
            names = [o.name for o in spec.outputs]
            for i, warm in enumerate(spec.config.model_warmup):
                feeds = _warmup_feeds(spec, warm, i, source)
                rows = warm.batch_size if spec.max_batch_size else 1
                for sess in sessions:
                    for _ in range(max(1, warm.count)):  # as requests run: padded to a fixed batch dim
                        run_batch(_runner(sess), [feeds], [rows], names, static_batch=spec.static_batch)
        except BaseException:
            for sess in sessions:
                sess.close()
            raise
        log.info(
            "loaded model %r version %d on %s (%d instance%s%s)",
            source.name,
            version,
            first.backend,
            len(sessions),
            "s" if len(sessions) > 1 else "",
            ", isolated" if first.isolated else "",
        )
        return cls(source.name, version, spec, sessions, max_queue_size=max_queue_size)

    def submit(self, feeds: dict[str, np.ndarray], size: int) -> Future:
        return self.scheduler.submit(feeds, size)

    def submit_async(self, feeds: dict[str, np.ndarray], size: int) -> tuple[Future, asyncio.Future]:
        """`submit` from the event loop: (the request's future, to cancel; a loop future to await)."""
        return self.scheduler.submit_async(feeds, size)

    def run_inline(self, feeds: dict[str, np.ndarray], size: int) -> Completed | None:
        """Run a cheap request on the caller's thread when the scheduler allows it (see `Scheduler.run_inline`)."""
        return self.scheduler.run_inline(feeds, size)

    def timeout_s(self, requested_us: int) -> float:
        """The queue timeout of one request in seconds (0: none), from the config's default and the request's
        own `timeout` parameter (microseconds): the request's applies where the config sets no default, and
        may shorten it where the config's `allow_timeout_override` is set."""
        queue = self.spec.queue
        timeout = queue.default_timeout_us
        if requested_us and (not timeout or (queue.allow_timeout_override and requested_us < timeout)):
            timeout = requested_us
        return timeout / 1e6

    # -- crash containment --------------------------------------------------------------------------------------
    @property
    def restarts(self) -> int:
        """How many times an instance's child process was started again after a crash."""
        return sum(getattr(_isolated_runner(s), "restarts", 0) for s in self.sessions)

    @property
    def last_signal(self) -> str:
        """How an instance's child last died (e.g. "SIGSEGV"; "" if none has): while running, or between runs."""
        crashes = [
            (r.last_crash_at, r.last_crash)
            for r in map(_isolated_runner, self.sessions)
            if r is not None and getattr(r, "last_crash", None) is not None
        ]
        if not crashes:
            return ""
        crash = max(crashes, key=lambda c: c[0])[1]
        return crash.signal_name or (f"exit code {crash.exitcode}" if crash.exitcode is not None else "")

    @property
    def pids(self) -> list[int | None]:
        """The child process id of each isolated instance (None: not running); empty when not isolated."""
        return [_isolated_runner(s).pid for s in self.sessions] if self.isolated else []

    @property
    def ready(self) -> bool:
        """False while every instance is restarting after a crash (requests still queue for them)."""
        return len(self._restarting) < len(self.sessions)

    @property
    def not_ready_reason(self) -> str:
        return (
            (
                f"restarting its instance{'s' if len(self.sessions) > 1 else ''} after a crash "
                f"({self.last_signal or 'no signal'})"
            )
            if not self.ready
            else ""
        )

    def _instance_failed(self, index: int, exc: BaseException) -> None:
        """Called by the instance's worker after a failed run: a crashed child is started again right away."""
        if not isinstance(exc, BackendCrashedError):
            return
        self.crashes += 1
        log.error("model %r version %d instance %d: %s", self.name, self.version, index, exc)
        runner = _isolated_runner(self.sessions[index])
        if runner is None:
            return
        self._restarting.add(index)
        try:
            runner.restart()
        except UnirtError as again:  # the next request on this instance tries again
            log.error("model %r version %d instance %d: restart failed: %s", self.name, self.version, index, again)
        finally:
            self._restarting.discard(index)

    def close(self, timeout: float | None = None) -> None:
        """Finish queued requests, stop the workers, close the Sessions."""
        self.scheduler.stop(timeout)
        for sess in self.sessions:
            sess.close()


def _config_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """The whole input shapes a config fixes (`input { dims }`, or its `reshape`; batch 1 in front when the model
    batches), for the inputs it fixes completely; the others convert at the first request's shapes."""
    batched = config.max_batch_size > 0
    shapes = {}
    for entry in config.input:
        dims = tuple(int(d) for d in (entry.reshape.shape if entry.HasField("reshape") else entry.dims))
        if entry.name and all(d > 0 for d in dims):
            shapes[entry.name] = ((1,) if batched else ()) + dims
    return shapes


def _open(
    factory: Callable[..., Session],
    path: Any,
    backend: str,
    device: str,
    options: dict,
    isolate: bool | None,
    model: str,
) -> Session:
    """One instance's Session; `isolate` None: the backend's default (tried isolated, in-process if the model's
    tensors cannot go through shared memory)."""
    if isolate is not None:
        return factory(path, backend=backend, device=device, isolate=isolate, **options)
    if backend == "auto":
        from ..formats import open_model
        from ..selection import auto_rank

        chosen = auto_rank(
            open_model(path),
            device,
            threads=options.get("threads"),  # as the Session will choose
            precision=options.get("precision") or "fp32",
            backend_options=options.get("backend_options"),
            max_batch=options.get("max_batch"),
        ).chosen
        resolved = chosen.backend if chosen is not None else backend
    else:
        resolved = backend
    if resolved in IN_PROCESS_BY_DEFAULT:
        return factory(path, backend=backend, device=device, **options)
    try:
        return factory(path, backend=backend, device=device, isolate=True, **options)
    except UnsupportedOptionError as exc:  # e.g. string tensors, which shared memory cannot carry
        log.warning("model %r: running in the server's process, not isolated: %s", model, exc)
        return factory(path, backend=backend, device=device, **options)


def _isolated_runner(session: Session) -> Any:
    """The `IsolatedRunner` behind an isolated Session (None otherwise)."""
    return getattr(session, "_runner", None) if session.isolated else None


def _runner(
    session: Session, crashed: Callable[[], None] | None = None
) -> Callable[[dict[str, np.ndarray], Any], dict[str, np.ndarray]]:
    run = session.run
    if crashed is None:
        return lambda feeds, names: run(feeds, names)

    def run_isolated(feeds: dict[str, np.ndarray], names: Any) -> dict[str, np.ndarray]:
        try:
            return run(feeds, names)
        except BackendCrashedError:
            crashed()
            raise

    return run_isolated


def _warmup_feeds(spec: ModelSpec, warm: Any, index: int, source: ModelSource) -> dict[str, np.ndarray]:
    where = f"model_warmup[{index}]"
    if spec.max_batch_size and not 1 <= warm.batch_size <= spec.max_batch_size:
        raise ConfigError(
            f"{where}.batch_size must be 1..max_batch_size ({spec.max_batch_size}), got {warm.batch_size}"
        )
    inputs = spec.input_map
    unknown = [k for k in warm.inputs if k not in inputs]
    if unknown:
        raise ConfigError(f"{where}.inputs: unknown input(s) {unknown}; inputs: {', '.join(inputs)}")
    rng = np.random.default_rng(0)
    feeds = {}
    for name, tensor in inputs.items():
        if name not in warm.inputs:
            if tensor.optional:
                continue
            raise ConfigError(f"{where}.inputs: input {name!r} is missing")
        w = warm.inputs[name]
        datatype = config_type_to_datatype(mc.DataType.Name(w.data_type))
        if datatype != tensor.datatype:
            raise ConfigError(f"{where}.inputs[{name}].data_type: {datatype}, the input is {tensor.datatype}")
        dims = tuple(w.dims)
        if any(d < 0 for d in dims):
            raise ConfigError(f"{where}.inputs[{name}].dims must be sizes (no -1), got {list(dims)}")
        shape = ((warm.batch_size,) if spec.max_batch_size else ()) + dims
        dtype = to_numpy_dtype(datatype)
        kind = w.WhichOneof("input_data_type")
        if kind == "input_data_file":
            path = source.warmup_file(w.input_data_file)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{where}.inputs[{name}].input_data_file: cannot read {path}: {exc}") from None
            try:
                array = decode_raw(name, datatype, shape, data)
            except UnirtError as exc:
                raise ConfigError(f"{where}.inputs[{name}].input_data_file: {exc}") from None
        elif kind == "random_data" and dtype.kind in "fiu":
            array = (rng.random(shape) if dtype.kind == "f" else rng.integers(0, 2, shape)).astype(dtype)
        elif datatype == "BYTES":
            array = np.full(shape, b"", dtype=object) if element_count(shape) else np.empty(shape, dtype=object)
        else:
            array = np.zeros(shape, dtype=dtype)
        if tensor.reshaped:
            array = array.reshape(shape[:1] + tensor.model_dims if spec.max_batch_size else tensor.model_dims)
        feeds[name] = array
    return feeds
