"""unirt.Session on the real onnxruntime, with models built by onnx.helper."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import unirt
from unirt import InputError, RunError, UnsupportedOptionError
from unirt.testing.threads import run_concurrently


def ort_session(path, **so_attrs):
    so = ort.SessionOptions()
    for k, v in so_attrs.items():
        setattr(so, k, v)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_auto_selects_onnxruntime_on_this_machine(model):
    sess = unirt.Session(model("matmul_relu"))
    assert sess.backend == "onnxruntime" and sess.device == "cpu"
    assert sess.selection is not None and sess.selection.chosen.backend == "onnxruntime"
    assert "onnxruntime" in repr(sess)


def test_static_model_matches_onnxruntime(model):
    path = model("matmul_relu")
    sess = unirt.Session(path, backend="onnxruntime", device="cpu", threads=1)
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    (expected,) = ort_session(path).run(None, {"x": x})
    np.testing.assert_array_equal(sess.run(x)["y"], expected)
    assert sess.inputs[0].shape == (64, 64) and not sess.inputs[0].is_dynamic


@pytest.mark.parametrize("batch", [1, 3, 17, 0])
def test_dynamic_batch(model, batch):
    path = model("dynamic_mlp")
    sess = unirt.Session(path, backend="onnxruntime")
    assert sess.inputs[0].shape == ("N", 8)
    x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
    got = sess.run(x)
    logits, probs = ort_session(path).run(None, {"x": x})
    np.testing.assert_array_equal(got["logits"], logits)
    np.testing.assert_array_equal(got["probs"], probs)
    assert got["probs"].shape == (batch, 3)


def test_several_inputs_dtypes_and_a_scalar(model):
    path = model("multi_io")
    sess = unirt.Session(path, backend="onnxruntime")
    assert [(i.name, i.shape, i.dtype) for i in sess.inputs] == [
        ("a", ("N", 4), np.float32),
        ("b", ("N", 4), np.float32),
        ("idx", ("K",), np.int64),
        ("scale", (), np.float32),
    ]
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.ones((3, 4), np.float32)
    out = sess.run({"a": a, "b": b, "idx": np.array([2, 0]), "scale": np.float32(0.5)})
    np.testing.assert_array_equal(out["sum"], (a + b) * 0.5)
    np.testing.assert_array_equal(out["picked"], a[[2, 0]])
    assert out["count"].shape == () and out["count"] == 2 and out["count"].dtype == np.int64
    np.testing.assert_array_equal(out["mask"], a > b)
    # Python scalars and lists take the model's dtypes
    out2 = sess.run({"a": a, "b": b, "idx": [2, 0], "scale": 0.5})
    np.testing.assert_array_equal(out2["sum"], out["sum"])


def test_integer_model(model):
    sess = unirt.Session(model("int_ops"), backend="onnxruntime")
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    b = np.full((2, 3), -3, np.int32)
    out = sess.run({"a": a, "b": b})
    assert out["y"].dtype == np.int32 and out["z"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], a * b)
    with pytest.raises(InputError, match="input 'a': expected int32, got int64"):
        sess.run({"a": a.astype(np.int64), "b": b})


def test_unknown_and_symbolic_dims(model):
    sess = unirt.Session(model("unknown_dims"), backend="onnxruntime")
    assert sess.inputs[0].shape == (None, 3, "H", "W")
    x = np.random.default_rng(2).standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(sess.run(x)["y"], x * 2)
    with pytest.raises(InputError, match=r"expected shape \(\?, 3, H, W\) \(dim 1 is static\)"):
        sess.run(np.ones((2, 4, 5, 7), np.float32))


def test_string_tensors(model):
    sess = unirt.Session(model("strings"), backend="onnxruntime")
    assert sess.inputs[0].dtype == np.object_
    out = sess.run(np.array(["a", "bc", "déf"]))
    assert list(out["y"]) == ["a", "bc", "déf"]


def test_bytes_in_string_tensors_are_utf8_text(model):
    sess = unirt.Session(model("strings"), backend="onnxruntime")
    assert list(sess.run(np.array([b"ab", "d\xc3\xa9f".encode("latin-1")]))["y"]) == ["ab", "déf"]
    assert list(sess.run(np.array([b"x", "y"], dtype=object))["y"]) == ["x", "y"]
    with pytest.raises(InputError, match="input 's': string tensors hold UTF-8 text"):
        sess.run(np.array([b"\xff\xfe"], dtype=object))


def test_non_contiguous_input(model):
    path = model("matmul_relu")
    sess = unirt.Session(path, backend="onnxruntime")
    base = np.random.default_rng(3).standard_normal((128, 128)).astype(np.float32)
    view = base[::2, ::-2]
    (expected,) = ort_session(path).run(None, {"x": np.ascontiguousarray(view)})
    np.testing.assert_array_equal(sess.run(view)["y"], expected)
    np.testing.assert_array_equal(sess.run(view.T)["y"], ort_session(path).run(None, {"x": view.T.copy()})[0])


def test_dlpack_producer_input(model):
    class Producer:
        def __init__(self, a):
            self.a = a

        def __dlpack__(self, **kw):
            return self.a.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    sess = unirt.Session(model("dynamic_mlp"), backend="onnxruntime")
    x = np.random.default_rng(4).standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_array_equal(sess.run(Producer(x))["probs"], sess.run(x)["probs"])


def test_torch_cpu_tensor_input(model):
    torch = pytest.importorskip("torch")
    sess = unirt.Session(model("dynamic_mlp"), backend="onnxruntime")
    t = torch.randn(5, 8)
    np.testing.assert_array_equal(sess.run(t)["logits"], sess.run(t.numpy())["logits"])
    np.testing.assert_array_equal(sess.run(t.T.contiguous().T)["logits"], sess.run(t.numpy())["logits"])


def test_outputs_are_not_overwritten_by_the_next_run(model):
    sess = unirt.Session(model("dynamic_mlp"), backend="onnxruntime")
    x1 = np.ones((2, 8), np.float32)
    first = sess.run(x1)["probs"]
    kept = first.copy()
    sess.run(np.full((2, 8), 5, np.float32))
    np.testing.assert_array_equal(first, kept)


def test_run_into_caller_arrays(model):
    sess = unirt.Session(model("dynamic_mlp"), backend="onnxruntime")
    x = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
    probs = np.empty((6, 3), np.float32)
    result = sess.run(x, out={"probs": probs})
    assert result["probs"] is probs
    expected = sess.run(x)
    np.testing.assert_array_equal(probs, expected["probs"])
    np.testing.assert_array_equal(result["logits"], expected["logits"])  # outputs not in `out` still come back
    address = probs.ctypes.data
    sess.run(x * 2, out={"probs": probs})
    assert probs.ctypes.data == address
    np.testing.assert_array_equal(probs, sess.run(x * 2)["probs"])
    with pytest.raises((RunError, InputError)):
        sess.run(x, out={"probs": np.empty((5, 3), np.float32)})


def test_threads_and_backend_options(model):
    path = model("dynamic_mlp")
    sess = unirt.Session(
        path,
        backend="onnxruntime",
        threads=2,
        backend_options={
            "graph_optimization_level": "disable",
            "enable_mem_pattern": False,
            "session_config": {"session.intra_op.allow_spinning": "0"},
        },
    )
    options = sess._runner._sess.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert options.enable_mem_pattern is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    np.testing.assert_allclose(sess.run(np.ones((1, 8), np.float32))["probs"].sum(), 1.0, rtol=1e-6)
    with pytest.raises(UnsupportedOptionError, match="unknown backend option 'nope'"):
        unirt.Session(path, backend="onnxruntime", backend_options={"nope": 1})
    with pytest.raises(UnsupportedOptionError, match="graph_optimization_level must be one of"):
        unirt.Session(path, backend="onnxruntime", backend_options={"graph_optimization_level": "max"})


def test_free_dimension_override(model):
    sess = unirt.Session(
        model("dynamic_mlp"),
        backend="onnxruntime",
        batched=True,
        backend_options={"free_dimension_overrides": {"N": 4}},
    )
    assert sess.inputs[0].shape == (4, 8)
    # N is now a static batch of 4 (a batch dim, as batched=True says): 3 rows are padded to 4 and the padding's
    # outputs dropped
    assert sess.batch.kind == "static" and sess.batch.size == 4
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(sess.run(x)["probs"], unirt.Session(model("dynamic_mlp")).run(x)["probs"], rtol=1e-6)
    strict = unirt.Session(
        model("dynamic_mlp"),
        backend="onnxruntime",
        batched=False,
        backend_options={"free_dimension_overrides": {"N": 4}},
    )
    with pytest.raises(InputError, match="dim 0 is static"):
        strict.run(np.ones((3, 8), np.float32))


def test_precision_is_honest(model):
    path = model("dynamic_mlp")
    assert unirt.Session(path, backend="onnxruntime").options.precision == "fp32"
    with pytest.raises(UnsupportedOptionError, match="cannot run an fp32 model in fp16 on cpu"):
        unirt.Session(path, backend="onnxruntime", precision="fp16")
    with pytest.raises(UnsupportedOptionError, match="int8 only from a quantized model"):
        unirt.Session(path, backend="onnxruntime", precision="int8")
    with pytest.raises(UnsupportedOptionError, match="no bf16 mode"):
        unirt.Session(path, backend="onnxruntime", precision="bf16")
    assert "precision='fp32'" in repr(unirt.Session(path, backend="onnxruntime"))


def test_int8_precision_runs_a_quantized_model(tmp_path, model):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = tmp_path / "q.onnx"
    quantize_dynamic(str(model("matmul_relu")), str(q), weight_type=QuantType.QInt8)
    sess = unirt.Session(q, backend="onnxruntime", precision="int8")
    x = np.random.default_rng(6).standard_normal((64, 64)).astype(np.float32)
    ref = unirt.Session(model("matmul_relu"), backend="onnxruntime").run(x)["y"]
    got = sess.run(x)["y"]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05


def test_cuda_is_refused_where_there_is_none(model):
    with pytest.raises(UnsupportedOptionError, match="cannot run on cuda here; it offers cpu"):
        unirt.Session(model("dynamic_mlp"), backend="onnxruntime", device="cuda")


def test_errors_inside_the_graph_become_run_errors(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # Reshape to a shape that cannot hold the data: only the engine can find this out.
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "bad_reshape",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "reshape.onnx"
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9  # what every onnxruntime >= 1.16 reads (onnx 1.23 writes IR 14 by default)
    onnx.save(m, str(path))
    sess = unirt.Session(path, backend="onnxruntime")
    np.testing.assert_array_equal(
        sess.run({"x": np.arange(6, dtype=np.float32), "shape": [2, 3]})["y"],
        np.arange(6, dtype=np.float32).reshape(2, 3),
    )
    with pytest.raises(RunError, match="onnxruntime"):
        sess.run({"x": np.arange(5, dtype=np.float32), "shape": np.array([2, 3])})


def test_concurrent_runs_from_threads(model):
    sess = unirt.Session(model("dynamic_mlp"), backend="onnxruntime")
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(8)]
    expected = [sess.run(x)["probs"] for x in xs]

    def worker(i):
        for _ in range(50):
            np.testing.assert_array_equal(sess.run(xs[i])["probs"], expected[i])

    run_concurrently(worker, 8)


def test_model_from_bytes(model):
    data = model("dynamic_mlp").read_bytes()
    sess = unirt.Session(data, backend="onnxruntime")
    assert sess.run(np.ones((2, 8), np.float32))["probs"].shape == (2, 3)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"graph_optimization_level": 99}, "graph_optimization_level must be one of.*got 99"),
        ({"session_config": 5}, "session_config must be a dict.*got 5"),
        (
            {"session_config": {"session.intra_op.allow_spinning": [0]}},
            r"session_config\['session.intra_op.allow_spinning'\] must be a string or number",
        ),
        (
            {"free_dimension_overrides": {"N": "x"}},
            r"free_dimension_overrides\['N'\] must map a dim name to a positive int",
        ),
        ({"free_dimension_overrides": [("N", 4)]}, "free_dimension_overrides must be a dict"),
        ({"provider_options": "garbage"}, "provider_options goes with providers"),
        ({"providers": "CPUExecutionProvider"}, "providers must be a non-empty list"),
        (
            {"providers": ["CPUExecutionProvider"], "provider_options": "garbage"},
            "provider_options must be a list of 1",
        ),
    ],
)
def test_bad_backend_option_values_name_the_option_not_the_model(model, options, match):
    with pytest.raises(UnsupportedOptionError, match=match):
        unirt.Session(model("dynamic_mlp"), backend="onnxruntime", backend_options=options)


def test_explicit_providers_with_their_options(model):
    sess = unirt.Session(
        model("dynamic_mlp"),
        backend="onnxruntime",
        backend_options={
            "providers": ["CPUExecutionProvider"],
            "provider_options": [{}],
            "session_config": {"session.intra_op.allow_spinning": 0},
        },
    )
    assert sess._runner.providers == ("CPUExecutionProvider",)
    assert sess._runner._sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _cast_model(path, to_type):
    """x (float32) -> y = Cast(x, to_type) and z = Cast(y, float32); and b (to_type) -> f = Cast(b, float32)."""
    from onnx import TensorProto as T
    from onnx import helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["y"], to=to_type),
            helper.make_node("Cast", ["y"], ["z"], to=T.FLOAT),
            helper.make_node("Cast", ["b"], ["f"], to=T.FLOAT),
        ],
        "casts",
        [helper.make_tensor_value_info("x", T.FLOAT, ["N"]), helper.make_tensor_value_info("b", to_type, [2, 3])],
        [
            helper.make_tensor_value_info("y", to_type, ["N"]),
            helper.make_tensor_value_info("z", T.FLOAT, ["N"]),
            helper.make_tensor_value_info("f", T.FLOAT, [2, 3]),
        ],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx_model.ir_version = 10
    path.write_bytes(onnx_model.SerializeToString())
    return path


@pytest.mark.parametrize("type_name", ["BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E5M2"])
def test_bfloat16_and_float8_tensors_in_and_out(tmp_path, type_name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from onnx import TensorProto

    dtype = {
        "BFLOAT16": ml_dtypes.bfloat16,
        "FLOAT8E4M3FN": ml_dtypes.float8_e4m3fn,
        "FLOAT8E5M2": ml_dtypes.float8_e5m2,
    }[type_name]
    sess = unirt.Session(_cast_model(tmp_path / "cast.onnx", getattr(TensorProto, type_name)), backend="onnxruntime")
    assert {t.name: np.dtype(t.dtype) for t in sess.outputs}["y"] == np.dtype(dtype)
    x = np.array([1.0, 2.5, 3.14159, -0.3], np.float32)
    b = np.arange(6, dtype=np.float32).reshape(2, 3).astype(dtype)
    for _ in range(2):  # a second run too: outputs are the caller's own arrays
        out = sess.run({"x": x, "b": b})
        assert out["y"].dtype == np.dtype(dtype) and out["y"].shape == (4,)
        np.testing.assert_array_equal(out["y"], x.astype(dtype))  # ORT rounds to nearest even, as ml_dtypes does
        np.testing.assert_array_equal(out["z"], x.astype(dtype).astype(np.float32))
        np.testing.assert_array_equal(out["f"], b.astype(np.float32))
    empty = sess.run({"x": np.empty((0,), np.float32), "b": b})
    assert empty["y"].shape == (0,) and empty["y"].dtype == np.dtype(dtype)


def test_packed_int4_tensors_are_refused_at_load(tmp_path):
    pytest.importorskip("ml_dtypes")
    from onnx import TensorProto

    with pytest.raises(unirt.ModelLoadError, match=r"tensor 'b' is int4: onnxruntime packs 4-bit tensors"):
        unirt.Session(_cast_model(tmp_path / "cast.onnx", TensorProto.INT4), backend="onnxruntime")


def test_an_input_passed_through_as_an_output_is_written_into_caller_memory(tmp_path):
    """Graph output 'x' is graph input 'x': ONNX Runtime returns the feed itself and leaves memory bound to that
    output unwritten. unirt pools outputs of 64 KiB and more by default (and with pooled_outputs=True, an arena or
    out=), so without a copy the answer for 'x' was whatever the buffer held."""
    import onnx
    from onnx import TensorProto, helper

    for dims in ([1, 128, 256], ["N", 128, 256]):
        g = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "passthrough",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, dims),
                helper.make_tensor_value_info("y", TensorProto.FLOAT, dims),
            ],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 9
        path = tmp_path / "passthrough.onnx"
        onnx.save(m, str(path))
        rng = np.random.default_rng(3)
        xs = [rng.standard_normal((1, 128, 256)).astype(np.float32) for _ in range(3)]
        for options in ({}, {"pooled_outputs": True}, {"arena": unirt.Arena()}):
            sess = unirt.Session(path, backend="onnxruntime", **options)
            for x in xs:
                got = sess.run(x)
                np.testing.assert_array_equal(got["x"], x, err_msg=f"{dims} {options}")
                np.testing.assert_array_equal(got["y"], np.maximum(x, 0))
                for names in (["x", "y"], ["x"]):  # every output given (pre-allocated run), or some (IOBinding)
                    out = {n: np.full(x.shape, np.nan, np.float32) for n in names}
                    got = sess.run(x, out=out)
                    assert got["x"] is out["x"]
                    np.testing.assert_array_equal(got["x"], x, err_msg=f"{dims} {options} out={names}")
            many = sess.run_many([xs[0], xs[1]])
            np.testing.assert_array_equal(many[1]["x"], xs[1], err_msg=f"{dims} {options} run_many")


def test_a_model_newer_than_onnxruntime_says_what_to_do(tmp_path):
    """Seen with onnx 1.23 (IR 14) and onnxruntime 1.30 (IR 13): the error names both and the two ways out."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 99
    path = tmp_path / "future.onnx"
    onnx.save(m, str(path))
    with pytest.raises(
        unirt.ModelLoadError,
        match=r"written by a newer onnx \(IR 99\) than onnxruntime .* reads "
        r"\(IR \d+\): upgrade onnxruntime .*model.ir_version = \d+",
    ):
        unirt.Session(path, backend="onnxruntime")
