"""Building a TensorRT engine from an ONNX model, with an optimization profile, the precision's BuildPlan (TensorRT
10: weakly typed flags; 11: a strongly typed network, fp16 from an fp16 conversion of the ONNX model), a timing
cache and an engine cache keyed by model hash + GPU + TensorRT version + plan + options. Needs tensorrt and a GPU."""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unirt import ModelFile, UnsupportedOptionError, open_model

from .cache_keys import build_fields, engine_key, engine_path, model_digest, timing_cache_path
from .errors import build_failure, parser_failure
from .options import BuildSettings, model_has_qdq
from .plan import BuildPlan, build_plan, parse_version
from .profiles import Profile, derive_profile, dynamic_inputs

log = logging.getLogger(__name__)


class MessageLog:
    """The warnings and errors TensorRT logged, for error messages: a caller takes a `mark()` before a call and
    reads what was logged `since(mark)` after it. Bounded, so a long-lived process does not grow it."""

    def __init__(self, keep: int = 256) -> None:
        self._kept: deque[str] = deque(maxlen=keep)
        self.count = 0

    def add(self, msg: str) -> None:
        self._kept.append(msg)
        self.count += 1

    def mark(self) -> int:
        return self.count

    def since(self, mark: int) -> list[str]:
        new = self.count - mark
        return list(self._kept)[-new:] if new > 0 else []


_LOGGER: Any = None
_LOGGER_LOCK = threading.Lock()


def collecting_logger(trt: Any) -> Any:
    """The process' one trt.ILogger: keeps warnings and errors (`.messages`, a MessageLog) and forwards them to
    logging. TensorRT holds a single logger pointer for all builders, runtimes and refitters alive at a time (a
    second one is ignored), and the logger must outlive every object created with it, so unirt makes one and keeps
    it for the life of the process, as polygraphy does."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None:

            class Collecting(trt.ILogger):
                def __init__(self) -> None:
                    trt.ILogger.__init__(self)
                    self.messages = MessageLog()

                def log(self, severity: Any, msg: str) -> None:
                    if severity <= trt.ILogger.Severity.WARNING:
                        self.messages.add(msg)
                        log.log(logging.ERROR if severity <= trt.ILogger.Severity.ERROR else logging.WARNING, "%s", msg)

            _LOGGER = Collecting()
        return _LOGGER


def _network_flags(trt: Any, names: tuple[str, ...]) -> int:
    """The create_network bit field for NetworkDefinitionCreationFlag `names` (0 for none: TensorRT 10's explicit
    batch network; STRONGLY_TYPED exists in 10 and 11, the only mode in 11)."""
    bits = 0
    for name in names:
        flag = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if flag is None:
            raise UnsupportedOptionError(f"tensorrt {trt.__version__} has no NetworkDefinitionCreationFlag.{name}")
        bits |= 1 << int(flag)
    return bits


def _parse(trt: Any, logger: Any, builder: Any, model: ModelFile, network_flags: int) -> tuple[Any, Any]:
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file finds external weights next to the model; parse(bytes) has no path to look in
    ok = parser.parse_from_file(str(model.path)) if model.path is not None else parser.parse(model.read_bytes())
    if not ok:
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            node = e.node_name() if hasattr(e, "node_name") else str(e.node())
            errors.append((e.desc(), node))
        raise parser_failure(model.name, errors)
    return network, parser


def network_inputs(network: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(network.get_input(i).name, tuple(network.get_input(i).shape)) for i in range(network.num_inputs)]


def _flag(trt: Any, name: str) -> Any:
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:  # the weakly typed precision flags: deprecated since TensorRT 10.12, removed in 11
        raise UnsupportedOptionError(
            f"tensorrt {trt.__version__} has no BuilderFlag.{name}; unirt's TensorRT backend "
            "was checked against TensorRT 10.x and 11.x"
        )
    return flag


@dataclass(frozen=True)
class BuiltEngine:
    """A serialized engine and how it was built."""

    plan: bytes
    profile: Profile
    build: BuildPlan
    #: The fp16 conversion of the ONNX model the engine was built from (TensorRT 11 fp16), else None.
    conversion: Any = None


def _fast_fp16(trt: Any, builder: Any, precision: str) -> bool | None:
    """Builder.platform_has_fast_fp16, asked on TensorRT 10 for fp16 only (11 removed it)."""
    if precision != "fp16" or parse_version(trt.__version__)[0] >= 11:
        return None
    return bool(builder.platform_has_fast_fp16)


def build_engine(
    trt: Any, model: ModelFile, precision: str, settings: BuildSettings, gpu: str, compute_capability: str
) -> BuiltEngine:
    """A serialized engine for `model`, from unirt's engine cache when one was built with the same everything."""
    logger = collecting_logger(trt)
    mark = logger.messages.mark()
    builder = trt.Builder(logger)
    quantized = model_has_qdq(model)  # a QDQ model builds its Q/DQ layers at every precision asked
    plan_of_build = build_plan(
        trt.__version__, precision, quantized, compute_capability, _fast_fp16(trt, builder, precision)
    )
    conversion, source = None, model
    if plan_of_build.onnx_transform == "fp16":
        from unirt.plugin_sdk import onnx_to_fp16

        conversion = onnx_to_fp16(model)  # cached, and verified against the fp32 model on ONNX Runtime
        source = open_model(conversion.path)
    # the parser owns weights the network uses: keep it alive until the build is done
    network, _parser = _parse(trt, logger, builder, source, _network_flags(trt, plan_of_build.network_flags))
    inputs = network_inputs(network)
    profile = derive_profile(inputs, settings.max_batch, settings.shapes, settings.opt_batch)
    options = build_fields(
        settings.cache_fields(),
        plan_of_build,
        trt.__version__,
        conversion.converter if conversion is not None else None,
    )
    key = engine_key(model_digest(model), gpu, compute_capability, trt.__version__, precision, profile, options)
    cached = engine_path(key)
    if settings.engine_cache and cached.is_file():
        log.debug("tensorrt: engine cache hit %s", cached)
        return BuiltEngine(cached.read_bytes(), profile, plan_of_build, conversion)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace)
    if settings.optimization_level is not None:
        config.builder_optimization_level = settings.optimization_level
    for flag in sorted(plan_of_build.set_flags):
        config.set_flag(_flag(trt, flag))
    for flag in sorted(plan_of_build.clear_flags):
        config.clear_flag(_flag(trt, flag))
    if dynamic_inputs(inputs):
        # Every input with a -1 dim needs set_shape, also when backend_options' shapes fixes it to one shape.
        opt_profile = builder.create_optimization_profile()
        for name, (lo, mid, hi) in profile.ranges.items():
            opt_profile.set_shape(name, trt.Dims(lo), trt.Dims(mid), trt.Dims(hi))
        config.add_optimization_profile(opt_profile)
    timing: Path | None = timing_cache_path(gpu, compute_capability, trt.__version__) if settings.timing_cache else None
    if timing is not None:
        _attach_timing_cache(config, timing)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise build_failure(model.name, logger.messages.since(mark))
    plan_bytes = bytes(plan)
    if timing is not None:
        _write_atomically(timing, bytes(config.get_timing_cache().serialize()))
    if settings.engine_cache:
        _write_atomically(cached, plan_bytes)
    return BuiltEngine(plan_bytes, profile, plan_of_build, conversion)


def _attach_timing_cache(config: Any, path: Path) -> None:
    """The saved timing cache, or a fresh one when the file is missing, damaged or from another device."""
    saved = path.read_bytes() if path.is_file() else b""
    cache = None
    if saved:
        try:
            cache = config.create_timing_cache(saved)
        except Exception as exc:  # a damaged file: build without its timings rather than fail
            log.warning("tensorrt: ignoring the timing cache %s: %s", path, exc)
        if cache is not None and not config.set_timing_cache(cache, False):
            log.warning("tensorrt: ignoring the timing cache %s: TensorRT refused it", path)
            cache = None
    if cache is None:
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _write_atomically(path: Path, data: bytes) -> None:
    """A concurrent reader never sees half a file (engine or timing cache)."""
    tmp = path.with_name(f"{path.name}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
