"""The TensorRT plugin's logic that needs no GPU: optimization profiles from shapes and max_batch, the build plan
per precision and TensorRT version (10: weakly typed flags; 11: strongly typed), dtype mapping, engine cache keys
and paths, error mapping from TensorRT's and CUDA's own messages.
(The runner and builder need TensorRT's libraries and a GPU: see test_availability.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from unirt import BackendUnavailableError, InputError, ModelLoadError, RunError, UnsupportedOptionError
from unirt_tensorrt.cache_keys import build_fields, engine_key, engine_path, model_digest, timing_cache_path
from unirt_tensorrt.dtypes import nbytes, numpy_dtype
from unirt_tensorrt.errors import build_failure, cuda_failure, deserialize_failure, parser_failure, unsupported_io
from unirt_tensorrt.options import DEFAULT_WORKSPACE, build_settings, model_has_qdq
from unirt_tensorrt.plan import BuildPlan, build_plan, major_minor, precision_info, version_problem
from unirt_tensorrt.profiles import DEFAULT_MAX_BATCH, Profile, derive_profile, dynamic_inputs

IMAGE = [("images", (-1, 3, 224, 224))]


# -- profiles -------------------------------------------------------------------------------------------------
def test_static_inputs_need_no_profile_range():
    p = derive_profile([("x", (1, 3, 8, 8)), ("k", (4,))])
    assert p.ranges == {"x": ((1, 3, 8, 8),) * 3, "k": ((4,),) * 3}


def test_dynamic_batch_follows_max_batch():
    # no max_batch anywhere: batches 1..DEFAULT_MAX_BATCH, tuned for 1
    assert DEFAULT_MAX_BATCH == 8
    assert derive_profile(IMAGE).ranges["images"] == ((1, 3, 224, 224), (1, 3, 224, 224), (8, 3, 224, 224))
    assert derive_profile(IMAGE).max_batch() == 8 and derive_profile(IMAGE, max_batch=3).max_batch() == 3
    assert derive_profile([("x", (2, 4))]).max_batch() is None  # static: nothing to split at
    with pytest.raises(UnsupportedOptionError, match="opt_batch 9 is larger than max_batch 8 \\(the default"):
        derive_profile(IMAGE, opt_batch=9)
    assert derive_profile(IMAGE, max_batch=16).ranges["images"] == (
        (1, 3, 224, 224),
        (16, 3, 224, 224),
        (16, 3, 224, 224),
    )
    assert derive_profile(IMAGE, max_batch=16, opt_batch=4).ranges["images"][1] == (4, 3, 224, 224)


def test_shapes_fix_or_bound_inputs():
    inputs = [("images", (-1, 3, -1, -1)), ("scale", (-1,))]
    p = derive_profile(
        inputs,
        max_batch=8,
        shapes={"images": {"min": [1, 3, 320, 320], "opt": [4, 3, 640, 640], "max": "8x3x1280x1280"}, "scale": [2]},
    )
    assert p.ranges["images"] == ((1, 3, 320, 320), (4, 3, 640, 640), (8, 3, 1280, 1280))
    assert p.ranges["scale"] == ((2,), (2,), (2,))
    assert p.as_json()["scale"] == [[2], [2], [2]]


def test_a_dynamic_input_fixed_by_shapes_still_gets_a_profile_entry():
    """TensorRT needs set_shape for every input with a -1 dim; fixing it through `shapes` (min == opt == max) does
    not make the network static, so the builder must still add the profile (else: "Network has dynamic or shape
    inputs, but no optimization profile has been defined")."""
    inputs = [("images", (-1, 3, -1, -1)), ("k", (4,))]
    p = derive_profile(inputs, shapes={"images": [1, 3, 640, 640]})
    assert all(lo == hi for lo, _, hi in p.ranges.values())  # every range is a single shape...
    assert dynamic_inputs(inputs) == ["images"]  # ...and the network still has a dynamic input
    assert dynamic_inputs([("x", (1, 3, 8, 8))]) == [] and dynamic_inputs([("s", ())]) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(inputs=[("x", (-1, 3, -1, -1))]), r"input 'x' dim 2 is dynamic .*'min': \.\.\."),
        (dict(inputs=IMAGE, max_batch=0), "max_batch must be a positive int"),
        (dict(inputs=IMAGE, max_batch=4, opt_batch=8), "opt_batch 8 is larger than max_batch 4"),
        (dict(inputs=IMAGE, shapes={"other": [1]}), "unknown input 'other'"),
        (dict(inputs=IMAGE, shapes={"images": [1, 3, 224]}), "min has rank 3, the input has rank 4"),
        (dict(inputs=IMAGE, shapes={"images": [1, 4, 224, 224]}), "changes static dim 1"),
        (
            dict(
                inputs=IMAGE,
                shapes={"images": {"min": [4, 3, 224, 224], "opt": [2, 3, 224, 224], "max": [8, 3, 224, 224]}},
            ),
            "min <= opt <= max",
        ),
        (dict(inputs=IMAGE, shapes={"images": {"min": [1, 3, 224, 224]}}), "missing opt, max"),
        (dict(inputs=IMAGE, shapes={"images": ["a"]}), "expected a list of ints"),
    ],
)
def test_profile_errors(kwargs, message):
    with pytest.raises(UnsupportedOptionError, match=message):
        derive_profile(**kwargs)


def test_runs_outside_the_profile_are_input_errors():
    p = derive_profile(IMAGE, max_batch=4)
    p.check("images", (3, 3, 224, 224))
    with pytest.raises(InputError, match=r"shape \[5, 3, 224, 224\] is outside .*max \[4, 3, 224, 224\].*max_batch"):
        p.check("images", (5, 3, 224, 224))
    with pytest.raises(InputError, match="outside"):
        Profile({"x": ((1,), (1,), (1,))}).check("x", (1, 1))


# -- build plans and options ----------------------------------------------------------------------------------
TRT10, TRT11 = "10.16.1.11", "11.4.0.106"


def _flags(plan: BuildPlan) -> tuple[set[str], set[str]]:
    return set(plan.set_flags), set(plan.clear_flags)


def test_fp32_clears_tf32_on_both_versions():
    assert _flags(build_plan(TRT10, "fp32", False, "8.9")) == (set(), {"TF32"})
    assert build_plan(TRT10, "fp32", False, "8.9").network_flags == ()  # create_network(0), as before
    eleven = build_plan(TRT11, "fp32", False, "8.9")
    assert _flags(eleven) == (set(), {"TF32"}) and eleven.network_flags == ("STRONGLY_TYPED",)
    assert eleven.strongly_typed and eleven.onnx_transform is None


def test_tensorrt_10_keeps_the_weakly_typed_flags():
    assert _flags(build_plan(TRT10, "fp16", False, "7.5", True)) == ({"FP16"}, {"TF32"})
    assert _flags(build_plan(TRT10, "bf16", False, "9.0")) == ({"BF16"}, {"TF32"})
    assert _flags(build_plan(TRT10, "int8", True, "8.6")) == ({"INT8"}, {"TF32"})
    assert all(build_plan(TRT10, p, True, "9.0", True).onnx_transform is None for p in ("fp16", "bf16", "int8"))
    with pytest.raises(UnsupportedOptionError, match=r"bf16 needs an Ampere.*sm 7.5; it supports fp32, fp16"):
        build_plan(TRT10, "bf16", False, "7.5", True)
    with pytest.raises(UnsupportedOptionError, match="no fast fp16; it supports fp32"):
        build_plan(TRT10, "fp16", False, "6.1", False)
    with pytest.raises(UnsupportedOptionError, match="int8 from a quantized .*unirt quantize --int8.* supports fp32"):
        build_plan(TRT10, "int8", False, "8.6")


def test_tensorrt_11_is_strongly_typed_and_sets_no_precision_flag():
    """11 removed BuilderFlag FP16/BF16/INT8: fp16 comes from converting the ONNX model first, int8 from its Q/DQ
    nodes; no precision flag is ever set."""
    half = build_plan(TRT11, "fp16", False, "8.9")
    assert half.onnx_transform == "fp16" and half.strongly_typed and _flags(half) == (set(), {"TF32"})
    int8 = build_plan(TRT11, "int8", True, "8.9")
    assert int8.onnx_transform is None and int8.strongly_typed and _flags(int8) == (set(), {"TF32"})
    with pytest.raises(
        UnsupportedOptionError,
        match=r"tensorrt 11.4.0.106 builds int8 only from a quantized ONNX "
        r"model.*unirt quantize model.onnx -o model_int8.onnx --int8",
    ):
        build_plan(TRT11, "int8", False, "8.9")
    with pytest.raises(
        UnsupportedOptionError,
        match=r"bf16 needs the ONNX model converted to bf16.*float16 tool "
        r"\(as onnxconverter-common's\) converts to fp16 only.*"
        r"precision='fp32'",
    ):
        build_plan(TRT11, "bf16", False, "9.0")
    with pytest.raises(UnsupportedOptionError, match="unknown precision 'fp8'; it supports fp32, fp16"):
        build_plan(TRT11, "fp8", True, "9.0")


def test_a_qdq_model_builds_int8_at_fp32_too():
    """A quantized model runs as it is (it cannot be un-quantized): on 10 its Q/DQ layers need the INT8 flag even when
    fp32 was asked (the session then reports int8); on 11 the strongly typed network takes them as typed."""
    assert _flags(build_plan(TRT10, "fp32", True, "8.9")) == ({"INT8"}, {"TF32"})
    assert _flags(build_plan(TRT10, "fp32", False, "8.9")) == (set(), {"TF32"})
    assert _flags(build_plan(TRT11, "fp32", True, "8.9")) == (set(), {"TF32"})


def test_model_has_qdq_reads_the_op_types(tmp_path):
    """Q/DQ detection goes by op type, not by names: a tensor called 'QuantizeLinear_out' is no quantization."""
    import onnx
    from onnx import TensorProto, helper

    from unirt import open_model

    def save(nodes, inits, name):
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
            inits,
        )
        path = tmp_path / name
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return open_model(path)

    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.05])
    zero = helper.make_tensor("z", TensorProto.INT8, [], [0])
    qdq = save(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        [scale, zero],
        "qdq.onnx",
    )
    plain = save(
        [
            helper.make_node("Relu", ["x"], ["QuantizeLinear_out"], name="DequantizeLinear_like"),
            helper.make_node("Identity", ["QuantizeLinear_out"], ["y"]),
        ],
        [],
        "plain.onnx",
    )
    assert model_has_qdq(qdq) and model_has_qdq(qdq.read_bytes())
    assert not model_has_qdq(plain)
    # the plan follows it: on 11, int8 takes the Q/DQ model and refuses the plain one
    assert build_plan(TRT11, "int8", model_has_qdq(qdq)).strongly_typed
    with pytest.raises(UnsupportedOptionError, match="unirt quantize"):
        build_plan(TRT11, "int8", model_has_qdq(plain))


def test_build_settings():
    s = build_settings({"max_batch": 8, "shapes": {"x": [1]}, "workspace": 1 << 20, "builder_optimization_level": 5})
    assert (s.max_batch, s.workspace, s.optimization_level, s.engine_cache) == (8, 1 << 20, 5, True)
    assert build_settings({}).workspace == DEFAULT_WORKSPACE
    # the Session's max_batch (LoadOptions.max_batch) sizes the profile unless backend_options gives its own
    assert build_settings({}, max_batch=16).max_batch == 16 and build_settings({}).max_batch is None
    assert build_settings({"max_batch": 32}, max_batch=16).max_batch == 32
    with pytest.raises(UnsupportedOptionError, match="max_batch 4 is smaller than the Session's max_batch 16"):
        build_settings({"max_batch": 4}, max_batch=16)
    s = build_settings({}, max_batch=16)
    assert derive_profile(IMAGE, s.max_batch, s.shapes, s.opt_batch).ranges["images"][2] == (16, 3, 224, 224)
    for bad, message in (
        ({"fp16": True}, "unknown backend option 'fp16'"),
        ({"workspace": -1}, "workspace must"),
        ({"builder_optimization_level": 9}, "0..5"),
        ({"engine_cache": "yes"}, "True or False"),
        ({"shapes": [1]}, "shapes must be a dict"),
    ):
        with pytest.raises(UnsupportedOptionError, match=message):
            build_settings(bad)


# -- dtypes ---------------------------------------------------------------------------------------------------
def test_dtype_mapping():
    assert numpy_dtype("FLOAT", "x") == np.float32 and numpy_dtype("HALF", "x") == np.float16
    assert numpy_dtype("INT64", "x") == np.int64 and numpy_dtype("BOOL", "x") == np.bool_
    assert numpy_dtype("BF16", "x").name == "bfloat16" and numpy_dtype("FP8", "x").name == "float8_e4m3fn"
    assert numpy_dtype("UINT8", "x") == np.uint8 and numpy_dtype("INT32", "x") == np.int32
    assert nbytes((2, 3), np.dtype(np.float16)) == 12 and nbytes((), np.dtype(np.float32)) == 4
    assert nbytes((2, 0), np.dtype(np.float32)) == 0


@pytest.mark.parametrize("trt_type", ["INT4", "FP4"])
def test_packed_types_are_refused_not_copied_byte_per_value(trt_type):
    """TensorRT packs INT4/FP4 two values to a byte; numpy holds one value per byte, so staging such a tensor would
    copy twice the bytes of the device buffer (past its end): refused at load, naming the tensor."""
    with pytest.raises(ModelLoadError, match=f"tensor 'w' has TensorRT type {trt_type}, packed two values to a byte"):
        numpy_dtype(trt_type, "w")
    with pytest.raises(ModelLoadError, match="tensor 'e' has TensorRT type E8M0, which numpy cannot hold"):
        numpy_dtype("E8M0", "e")


# -- cache keys -----------------------------------------------------------------------------------------------
def test_engine_cache_key_changes_with_everything_that_shapes_an_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path))
    p = derive_profile(IMAGE, max_batch=4)
    base = dict(
        model_sha256=model_digest(b"model"),
        gpu="NVIDIA H100",
        compute_capability="9.0",
        trt_version="10.16.1",
        precision="fp32",
        profile=p,
        build_options={"workspace": 1},
    )
    key = engine_key(**base)
    assert key == engine_key(**base) and len(key) == 40
    for change in (
        dict(model_sha256=model_digest(b"other")),
        dict(gpu="NVIDIA L4"),
        dict(compute_capability="8.9"),
        dict(trt_version="10.16.2"),
        dict(precision="fp16"),
        dict(profile=derive_profile(IMAGE, 8)),
        dict(build_options={"workspace": 2}),
    ):
        assert engine_key(**{**base, **change}) != key, change
    assert engine_path(key) == tmp_path / "tensorrt" / "engines" / f"{key}.engine"
    assert (
        timing_cache_path("NVIDIA H100 80GB HBM3", "9.0", "10.16.1").name
        == "NVIDIA_H100_80GB_HBM3-sm9.0-trt10.16.1.cache"
    )


def test_engine_cache_key_covers_the_build_plan_and_the_conversion():
    """The same model, GPU and options: an fp16 engine built from the fp16 ONNX conversion (11) is not the one
    built with BuilderFlag FP16 (10), nor one from another converter version or TensorRT minor version."""
    p = derive_profile(IMAGE, max_batch=4)

    def key(version, precision="fp16", converter=None, qdq=False):
        plan = build_plan(version, precision, qdq, "9.0", True)
        return engine_key(
            "0" * 64,
            "NVIDIA H100",
            "9.0",
            version,
            precision,
            p,
            build_fields({"workspace": 1}, plan, version, converter),
        )

    conv = "onnxruntime 1.32.0 transformers.float16"
    keys = {
        key(TRT10),
        key(TRT11, converter=conv),
        key(TRT11, converter="onnxruntime 1.33.0 transformers.float16"),
        key("11.5.0.1", converter=conv),
        key(TRT11, "fp32"),
        key(TRT10, "fp32"),
    }
    assert len(keys) == 6 and key(TRT11, converter=conv) == key(TRT11, converter=conv)
    fields = build_fields({"workspace": 1}, build_plan(TRT11, "fp16", False), TRT11, conv)
    assert fields["tensorrt_major_minor"] == "11.4" and fields["converter"] == conv
    assert fields["plan"] == {
        "network_flags": ["STRONGLY_TYPED"],
        "set": [],
        "clear": ["TF32"],
        "onnx_transform": "fp16",
    }


# -- error mapping --------------------------------------------------------------------------------------------
def test_parser_errors_name_the_nodes():
    err = parser_failure("m.onnx", [("No importer registered for op: FancyOp", "node_7"), ("Invalid Node", "")])
    assert isinstance(err, ModelLoadError)
    assert str(err) == (
        "m.onnx: tensorrt could not parse this onnx model: No importer registered for op: FancyOp "
        "(node node_7); Invalid Node"
    )


def test_stale_engines_say_rebuild():
    msg = (
        "IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan file is not compatible "
        "with this version of TensorRT, expecting library version 10.16.1.11 got 10.3.0.26, please rebuild.)"
    )
    err = deserialize_failure("yolo.engine", [msg])
    assert "built by another TensorRT version or for another GPU" in str(err) and "10.3.0.26" in str(err)
    assert "could not deserialize" in str(deserialize_failure("x.engine", ["Error Code 1: Cuda Runtime"]))


def test_build_failures():
    oom = build_failure("m.onnx", ["Error Code 2: OutOfMemory (Requested size was 8589934592 bytes.) out of memory"])
    assert isinstance(oom, UnsupportedOptionError) and "Lower max_batch" in str(oom)
    other = build_failure("m.onnx", ["Error Code 4: Internal Error (Network has dynamic inputs, but no profile)"])
    assert isinstance(other, ModelLoadError) and "no profile" in str(other)
    assert "no error was logged" in str(build_failure("m.onnx", []))


def test_io_the_runner_cannot_pass_is_refused_at_load():
    assert unsupported_io("m.engine", "x", "DEVICE", "LINEAR") is None
    host = unsupported_io("m.engine", "shape", "HOST", "LINEAR")
    assert isinstance(host, ModelLoadError) and "'shape' is a shape tensor TensorRT reads on the host" in str(host)
    packed = unsupported_io("m.engine", "x", "DEVICE", "CHW16")
    assert isinstance(packed, ModelLoadError) and "vectorized layout CHW16" in str(packed)


def test_tensorrt_messages_are_read_per_call():
    """One logger serves the whole process (TensorRT keeps a single logger pointer): each call's error message
    takes what was logged since its own mark, and the log stays bounded."""
    from unirt_tensorrt.builder import MessageLog

    log = MessageLog(keep=4)
    log.add("old warning")
    mark = log.mark()
    assert log.since(mark) == []
    log.add("Error Code 2: OutOfMemory")
    assert log.since(mark) == ["Error Code 2: OutOfMemory"]
    for i in range(10):
        log.add(f"m{i}")
    assert log.since(mark) == ["m6", "m7", "m8", "m9"]  # at most `keep` messages are held
    assert "no error was logged" in str(build_failure("m.onnx", log.since(log.mark())))


def test_cuda_errors():
    assert isinstance(cuda_failure("cudaSetDevice", "cudaErrorNoDevice", False), BackendUnavailableError)
    run_oom = cuda_failure("cudaMalloc", "cudaErrorMemoryAllocation", True)
    assert isinstance(run_oom, RunError) and "out of GPU memory" in str(run_oom)
    assert isinstance(cuda_failure("cudaMalloc", "cudaErrorMemoryAllocation", False), ModelLoadError)
    assert (
        str(cuda_failure("cudaMemcpyAsync", "cudaErrorIllegalAddress", True))
        == "tensorrt: cudaMemcpyAsync failed: cudaErrorIllegalAddress"
    )


def test_engine_cache_key_covers_external_weights(tmp_path):
    """An ONNX model's external data file is hashed with its graph: new weights are a new engine, not a stale one."""
    from unirt import open_model, testing

    src = testing.dynamic_mlp(tmp_path / "src.onnx")
    path = testing.with_external_data(src, tmp_path / "m" / "mlp.onnx")
    graph, before = path.read_bytes(), model_digest(open_model(path))
    assert before != model_digest(graph)
    testing.with_external_data(src, path, seed=1)
    assert path.read_bytes() == graph and model_digest(open_model(path)) != before
    assert model_digest(open_model(src)) == model_digest(src.read_bytes())  # one file: its bytes' SHA-256


# -- prebuilt engines -----------------------------------------------------------------------------------------
def test_a_prebuilt_engine_refuses_another_precision(tmp_path):
    """An engine's precision was fixed at build time: asking for another is refused at load (before TensorRT is
    needed), not silently ignored."""
    from unirt import LoadOptions, ModelFormat, open_model
    from unirt_tensorrt.backend import TensorRTBackend
    from unirt_tensorrt.options import check_engine_precision

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"ftrt" + bytes(60))
    model = open_model(engine)
    assert model.format is ModelFormat.TENSORRT
    for precision in ("fp16", "bf16", "int8"):
        with pytest.raises(
            UnsupportedOptionError,
            match=f"model.engine is a prebuilt engine.*precision='{precision}' cannot be applied",
        ):
            TensorRTBackend().load(model, LoadOptions(precision=precision))
    check_engine_precision(model.name, "fp32")  # the default: run it as built


def test_tensorrt_10_and_11_are_accepted():
    """10.x builds weakly typed, 11.x strongly typed; before 10, create_network(0) made an implicit-batch network,
    and 12 is unchecked: another major version is reported as the reason the backend cannot run."""
    for ok in ("10.16.1.11", "10.0.1", "11.4.0.106", "11.0.0"):
        assert version_problem(ok) is None
    for other in ("12.0.0", "8.6.1", "9.3.0.post12.dev1"):
        assert version_problem(other) == (
            f"tensorrt {other} is installed; unirt's TensorRT backend uses the TensorRT "
            "10.x and 11.x APIs: pip install 'tensorrt>=10,<12'"
        )
        with pytest.raises(UnsupportedOptionError, match=f"tensorrt {other} is installed"):
            build_plan(other, "fp32", False, "9.0")
    assert major_minor("11.4.0.106") == "11.4" and major_minor("10.16.1.11") == "10.16"


def test_precision_info_names_how_the_engine_was_built():
    """What Session.precision_info says for an engine built here (the GPU part needs a device; this is the text)."""

    def info(version, precision, sm="8.9", gpu="NVIDIA L4", qdq=False, converter=None):
        return precision_info(build_plan(version, precision, qdq, sm, True), precision, sm, gpu, converter)

    assert info(TRT10, "fp32") == "fp32 (TensorRT BuilderFlag TF32 cleared; NVIDIA L4, sm 8.9)"
    half = info(TRT10, "fp16", "7.5", "Tesla T4")
    assert (
        half.startswith(
            "fp16 (TensorRT BuilderFlag FP16, TF32 cleared; Tesla T4, sm 7.5, Builder.platform_has_fast_fp16"
        )
        and "fp32 elsewhere" in half
    )
    assert "bf16 tensor cores (sm 8.0+)" in info(TRT10, "bf16", "9.0", "H100")
    assert info(TRT10, "int8", "8.6", "A10", qdq=True).startswith("int8 (TensorRT BuilderFlag INT8 on a QDQ model")
    assert info(TRT11, "fp32") == (
        "fp32 (TensorRT strongly typed network: each tensor as the model types it, TF32 cleared; NVIDIA L4, sm 8.9)"
    )
    assert info(TRT11, "fp16", converter="onnxruntime 1.32.0 transformers.float16").startswith(
        "fp16 (the ONNX model converted to fp16 by onnxruntime 1.32.0 transformers.float16, verified against the fp32"
    )
    assert info(TRT11, "int8", qdq=True).startswith("int8 (the model's Q/DQ nodes in a TensorRT strongly typed")
