"""Every TensorRT Python API the plugin calls, checked against the installed bindings: present where the plugin uses
it, and absent where TensorRT removed it (so the version logic in plan.py matches the library). Needs no GPU: the
bindings module imports without one (`tensorrt`, or the `tensorrt_bindings` module of a tensorrt-cuXX-bindings
wheel, which `tensorrt` re-exports). Skipped, with the reason, where neither imports. The same table is in
docs/tensorrt.md."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from unirt_tensorrt.builder import _flag, _network_flags, collecting_logger
from unirt_tensorrt.plan import STRONGLY_TYPED_ONLY, build_plan, parse_version


def _bindings() -> tuple[Any, str | None]:
    errors = []
    for name in ("tensorrt", "tensorrt_bindings"):
        try:
            return importlib.import_module(name), None
        except Exception as exc:  # ImportError, or OSError for a missing libnvinfer
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return None, (
        "tensorrt is not installed (its wheels are several GB, and no GPU is on this machine): " + "; ".join(errors)
    )


trt, REASON = _bindings()
pytestmark = pytest.mark.skipif(trt is None, reason=str(REASON))

#: (attribute path, first major that has it, last major that has it or None): what builder.py, session.py,
#: dtypes.py and errors.py use.
API = [
    ("Builder", 10, None),
    ("Builder.create_network", 10, None),
    ("Builder.create_builder_config", 10, None),
    ("Builder.create_optimization_profile", 10, None),
    ("Builder.build_serialized_network", 10, None),
    ("Builder.platform_has_fast_fp16", 10, 10),  # asked for fp16 on 10 only
    ("NetworkDefinitionCreationFlag.STRONGLY_TYPED", 10, None),
    ("NetworkDefinitionCreationFlag.EXPLICIT_BATCH", 10, 10),  # never used: create_network(0) is explicit batch
    ("OnnxParser", 10, None),
    ("OnnxParser.parse_from_file", 10, None),
    ("OnnxParser.parse", 10, None),
    ("OnnxParser.num_errors", 10, None),
    ("OnnxParser.get_error", 10, None),
    ("ParserError.desc", 10, None),
    ("ParserError.node_name", 10, None),
    ("ParserError.node", 10, None),
    ("INetworkDefinition.num_inputs", 10, None),
    ("INetworkDefinition.get_input", 10, None),
    ("ITensor.name", 10, None),
    ("ITensor.shape", 10, None),
    ("IBuilderConfig.set_memory_pool_limit", 10, None),
    ("IBuilderConfig.builder_optimization_level", 10, None),
    ("IBuilderConfig.set_flag", 10, None),
    ("IBuilderConfig.clear_flag", 10, None),
    ("IBuilderConfig.add_optimization_profile", 10, None),
    ("IBuilderConfig.create_timing_cache", 10, None),
    ("IBuilderConfig.set_timing_cache", 10, None),
    ("IBuilderConfig.get_timing_cache", 10, None),
    ("IOptimizationProfile.set_shape", 10, None),
    ("Dims", 10, None),
    ("ITimingCache.serialize", 10, None),
    ("MemoryPoolType.WORKSPACE", 10, None),
    ("BuilderFlag.TF32", 10, None),
    ("BuilderFlag.FP16", 10, 10),
    ("BuilderFlag.BF16", 10, 10),
    ("BuilderFlag.INT8", 10, 10),
    ("Runtime", 10, None),
    ("Runtime.deserialize_cuda_engine", 10, None),
    ("ICudaEngine.num_io_tensors", 10, None),
    ("ICudaEngine.get_tensor_name", 10, None),
    ("ICudaEngine.get_tensor_mode", 10, None),
    ("ICudaEngine.get_tensor_dtype", 10, None),
    ("ICudaEngine.get_tensor_shape", 10, None),
    ("ICudaEngine.get_tensor_profile_shape", 10, None),
    ("ICudaEngine.get_tensor_location", 10, None),
    ("ICudaEngine.get_tensor_format", 10, None),
    ("ICudaEngine.create_execution_context", 10, None),
    ("IExecutionContext.set_input_shape", 10, None),
    ("IExecutionContext.set_tensor_address", 10, None),
    ("IExecutionContext.get_tensor_shape", 10, None),
    ("IExecutionContext.execute_async_v3", 10, None),
    ("ILogger", 10, None),
    ("ILogger.Severity.WARNING", 10, None),
    ("ILogger.Severity.ERROR", 10, None),
    ("TensorIOMode.INPUT", 10, None),
    ("TensorLocation.DEVICE", 10, None),
    ("TensorFormat.LINEAR", 10, None),
    *(
        (f"DataType.{t}", 10, None)
        for t in ("FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8", "FP8", "INT4", "FP4", "E8M0")
    ),
]


def _has(path: str) -> bool:
    obj: Any = trt
    for part in path.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def test_every_call_the_plugin_makes_exists_where_it_is_made():
    major, _ = parse_version(trt.__version__)
    wrong = [
        f"{path}: {'missing' if not _has(path) else 'present'} in {trt.__version__}"
        for path, first, last in API
        if _has(path) != (first <= major and (last is None or major <= last))
    ]
    assert not wrong, wrong


def test_the_plan_uses_only_flags_this_version_has():
    """Each precision's BuildPlan names network and builder flags the installed bindings have."""
    from unirt import UnsupportedOptionError

    for precision in ("fp32", "fp16", "bf16", "int8"):
        try:
            plan = build_plan(trt.__version__, precision, True, "9.0", True)
        except UnsupportedOptionError:  # bf16 on 11
            assert precision == "bf16" and parse_version(trt.__version__)[0] >= STRONGLY_TYPED_ONLY
            continue
        assert all(hasattr(trt.NetworkDefinitionCreationFlag, f) for f in plan.network_flags), plan
        assert all(hasattr(trt.BuilderFlag, f) for f in plan.set_flags | plan.clear_flags), plan
        # the builder's own translation of the plan into the bindings' values
        bits = _network_flags(trt, plan.network_flags)
        assert bits == sum(1 << int(getattr(trt.NetworkDefinitionCreationFlag, f)) for f in plan.network_flags)
        assert {_flag(trt, f) for f in plan.set_flags | plan.clear_flags} <= set(trt.BuilderFlag.__members__.values())


def test_the_process_logger_subclasses_the_bindings_logger():
    """collecting_logger's trt.ILogger subclass constructs, and keeps warnings and errors, not info."""
    logger = collecting_logger(trt)
    assert isinstance(logger, trt.ILogger) and collecting_logger(trt) is logger
    mark = logger.messages.mark()
    logger.log(trt.ILogger.Severity.INFO, "info line")
    logger.log(trt.ILogger.Severity.WARNING, "a warning")
    logger.log(trt.ILogger.Severity.ERROR, "Error Code 4: an error")
    assert logger.messages.since(mark) == ["a warning", "Error Code 4: an error"]


def test_signatures_the_plugin_relies_on():
    """create_network takes the flag bits; execute_async_v3 takes the stream as an int (cuda-python's handle);
    set_timing_cache takes (cache, ignore_mismatch); parse takes bytes."""
    for path, text in (
        ("Builder.create_network", "flags"),
        ("IExecutionContext.execute_async_v3", "stream_handle"),
        ("IBuilderConfig.set_timing_cache", "ignore_mismatch"),
        ("ICudaEngine.get_tensor_profile_shape", "profile_index"),
        ("OnnxParser.parse", "model"),
    ):
        owner, name = path.split(".")
        assert text in (getattr(getattr(trt, owner), name).__doc__ or ""), path
