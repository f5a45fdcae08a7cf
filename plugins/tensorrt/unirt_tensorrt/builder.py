"""Building a TensorRT engine from an ONNX model, with an optimization profile, precision flags, a timing cache
and an engine cache keyed by model hash + GPU + TensorRT version + options. Needs tensorrt and a GPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from unirt import ModelFile

from .cache_keys import engine_key, engine_path, model_digest, timing_cache_path
from .errors import build_failure, parser_failure
from .options import BuildSettings, builder_flags, looks_quantized
from .profiles import Profile, derive_profile

log = logging.getLogger(__name__)


def collecting_logger(trt: Any) -> Any:
    """A trt.ILogger that keeps warnings and errors (for error messages) and forwards them to logging."""

    class Collecting(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                self.messages.append(msg)
                log.log(logging.ERROR if severity <= trt.ILogger.Severity.ERROR else logging.WARNING, "%s", msg)

    return Collecting()


def _parse(trt: Any, logger: Any, model: ModelFile) -> tuple[Any, Any, Any]:
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(model.path)) if model.path is not None else parser.parse(model.read_bytes())
    if not ok:
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            node = e.node_name() if hasattr(e, "node_name") else str(e.node())
            errors.append((e.desc(), node))
        raise parser_failure(model.name, errors)
    return builder, network, parser


def network_profile(network: Any, settings: BuildSettings) -> Profile:
    inputs = [(network.get_input(i).name, tuple(network.get_input(i).shape)) for i in range(network.num_inputs)]
    return derive_profile(inputs, settings.max_batch, settings.shapes, settings.opt_batch)


def build_plan(trt: Any, model: ModelFile, precision: str, settings: BuildSettings, gpu: str,
               compute_capability: str) -> tuple[bytes, Profile]:
    """A serialized engine for `model`, from unirt's engine cache when one was built with the same everything."""
    logger = collecting_logger(trt)
    data = model.read_bytes()
    builder, network, _parser = _parse(trt, logger, model)
    profile = network_profile(network, settings)
    key = engine_key(model_digest(model), gpu, compute_capability, trt.__version__, precision, profile,
                     settings.cache_fields())
    cached = engine_path(key)
    if settings.engine_cache and cached.is_file():
        log.debug("tensorrt: engine cache hit %s", cached)
        return cached.read_bytes(), profile
    to_set, to_clear = builder_flags(precision, looks_quantized(data), compute_capability,
                                     bool(builder.platform_has_fast_fp16))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace)
    if settings.optimization_level is not None:
        config.builder_optimization_level = settings.optimization_level
    for flag in to_set:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in to_clear:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    if any(lo != hi for lo, _, hi in profile.ranges.values()):
        opt_profile = builder.create_optimization_profile()
        for name, (lo, mid, hi) in profile.ranges.items():
            opt_profile.set_shape(name, lo, mid, hi)
        config.add_optimization_profile(opt_profile)
    timing: Path | None = timing_cache_path(gpu, compute_capability, trt.__version__) if settings.timing_cache else None
    if timing is not None:
        cache = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
        config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise build_failure(model.name, logger.messages)
    plan_bytes = bytes(plan)
    if timing is not None:
        timing.write_bytes(bytes(config.get_timing_cache().serialize()))
    if settings.engine_cache:
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(plan_bytes)
        tmp.replace(cached)  # atomic: a concurrent loader never sees half an engine
    return plan_bytes, profile
