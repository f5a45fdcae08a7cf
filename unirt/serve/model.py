"""A loaded model version: its Sessions (one per execution instance), warm-up, scheduler and statistics."""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from ..errors import UnirtError
from ..session import Session
from .config import ConfigError, ModelSpec, backend_for, build_spec, instance_devices, session_options
from .datatypes import config_type_to_datatype, decode_raw, element_count, to_numpy_dtype
from .repository import ModelSource
from .batching import run_batch
from .scheduler import Scheduler
from .stats import ModelStats

__all__ = ["LoadedModel"]
log = logging.getLogger(__name__)


class LoadedModel:
    """One version of a model, ready to run. Created by `LoadedModel.load`; `close` drains and releases it."""

    def __init__(self, name: str, version: int, spec: ModelSpec, sessions: list[Session]) -> None:
        self.name = name
        self.version = version
        self.spec = spec
        self.sessions = sessions
        self.stats = ModelStats()
        self.backend = sessions[0].backend
        self.scheduler = Scheduler(
            f"{name}:{version}", [_runner(s) for s in sessions], [o.name for o in spec.outputs], self.stats,
            max_batch_size=spec.max_batch_size, batching=spec.batching, static_batch=spec.static_batch)

    @classmethod
    def load(cls, source: ModelSource, version: int, config: Any, *, default_max_batch_size: int = 4,
             session_factory: Callable[..., Session] = Session, default_threads: int | None = None) -> "LoadedModel":
        """Open one Session per instance, complete and check the config against the model, warm it up.
        `default_threads` (`unirt serve --threads`) applies where the config's parameters set no threads."""
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
        sessions: list[Session] = []
        try:
            for device in devices:
                sessions.append(session_factory(path, backend=backend, device=device, **options))
            first = sessions[0]
            spec = build_spec(config, source.name, first.inputs, first.outputs, first.backend,
                              default_max_batch_size=default_max_batch_size, model_dir=source.directory)
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
        log.info("loaded model %r version %d on %s (%d instance%s)", source.name, version, first.backend,
                 len(sessions), "s" if len(sessions) > 1 else "")
        return cls(source.name, version, spec, sessions)

    def submit(self, feeds: dict[str, np.ndarray], size: int) -> Future:
        return self.scheduler.submit(feeds, size)

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


def _runner(session: Session) -> Callable[[dict[str, np.ndarray], Any], dict[str, np.ndarray]]:
    run = session.run
    return lambda feeds, names: run(feeds, names)


def _warmup_feeds(spec: ModelSpec, warm: Any, index: int, source: ModelSource) -> dict[str, np.ndarray]:
    where = f"model_warmup[{index}]"
    if spec.max_batch_size and not 1 <= warm.batch_size <= spec.max_batch_size:
        raise ConfigError(f"{where}.batch_size must be 1..max_batch_size ({spec.max_batch_size}), "
                          f"got {warm.batch_size}")
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
