"""unirt.Session on the real OpenVINO: honest fp32 on a bf16 CPU, the other precisions, options, reshape, IR,
TFLite, conversion. The conformance suite (test_conformance.py) covers the rest."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

import unirt
from unirt import InputError, ModelLoadError, UnsupportedOptionError, hardware
from unirt.testing.conformance import random_cases, reference_outputs, sample_feeds
from unirt.testing.tflite import build_tflite
from unirt_openvino.backend import OpenVinoBackend


def rel_l2(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def squeezenet():
    """A real CNN with random weights (squeezenet from the onnx wheel's light models) and its ORT outputs."""
    case = next(c for c in random_cases() if c.name == "light_squeezenet_random")
    feeds = {"data_0": case.inputs[0]}
    return case.model, feeds, reference_outputs(case.model, feeds)


def test_fp32_by_default_even_where_openvino_would_pick_bf16(squeezenet):
    path, feeds, ref = squeezenet
    core = ov.Core()
    default = core.compile_model(str(path), "CPU").get_property("INFERENCE_PRECISION_HINT").get_type_name()
    sess = unirt.Session(path, backend="openvino", threads=1)
    assert sess.precision == "fp32" and "precision='fp32'" in repr(sess)
    assert sess._runner._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    name = next(iter(ref))
    ours = rel_l2(sess.run(feeds)[name], ref[name])
    assert ours < 1e-5
    if "avx512_bf16" in hardware().cpu_features or "amx_bf16" in hardware().cpu_features:
        # What a user who asked for nothing would have got from OpenVINO itself on this CPU
        assert default == "bf16"
        theirs = rel_l2(core.compile_model(str(path), "CPU")({0: feeds["data_0"]})[0], ref[name])
        assert theirs > 100 * ours, (theirs, ours)


def test_bf16_when_asked_for(squeezenet):
    path, feeds, ref = squeezenet
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        with pytest.raises(UnsupportedOptionError, match="no bf16 mode.*OPTIMIZATION_CAPABILITIES.*CPU (lacks|has) "):
            unirt.Session(path, backend="openvino", precision="bf16")
        return
    sess = unirt.Session(path, backend="openvino", precision="bf16", threads=1)
    assert sess.precision == "bf16"
    assert "INFERENCE_PRECISION_HINT=bf16 on the compiled model" in sess.precision_info
    name = next(iter(ref))
    assert 1e-5 < rel_l2(sess.run(feeds)[name], ref[name]) < 1e-1


def test_fp16_and_int8_are_refused_where_they_cannot_be_honoured(model):
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "FP16" not in caps:
        with pytest.raises(UnsupportedOptionError, match="openvino: CPU has no fp16 mode here; it supports fp32"):
            unirt.Session(model("dynamic_mlp"), backend="openvino", precision="fp16")
    sess = unirt.Session(model("dynamic_mlp"), backend="openvino")
    assert sess.precision == "fp32" and "INFERENCE_PRECISION_HINT=f32" in sess.precision_info
    with pytest.raises(UnsupportedOptionError, match="int8 only from a quantized model"):
        unirt.Session(model("dynamic_mlp"), backend="openvino", precision="int8")


def test_int8_runs_a_quantized_model(tmp_path, model):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([sample_feeds("matmul_relu", seed=i) for i in range(4)])

        def get_next(self):
            return next(self.data, None)

    q = tmp_path / "matmul_relu_qdq.onnx"
    quantize_static(str(model("matmul_relu")), str(q), Reader(), quant_format=QuantFormat.QDQ)
    sess = unirt.Session(q, backend="openvino", precision="int8")
    assert sess.precision == "int8"
    feeds = sample_feeds("matmul_relu", seed=9)
    ref = reference_outputs(model("matmul_relu"), feeds)["y"]
    assert rel_l2(sess.run(feeds)["y"], ref) < 0.05


def test_threads_hint_streams_and_verbatim_properties(model):
    sess = unirt.Session(
        model("dynamic_mlp"),
        backend="openvino",
        threads=2,
        backend_options={"performance_hint": "throughput", "num_streams": 2, "ENABLE_CPU_PINNING": False},
    )
    compiled = sess._runner._compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 2
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    assert int(compiled.get_property("NUM_STREAMS")) == 2
    assert sess.run(np.ones((2, 8), np.float32))["probs"].shape == (2, 3)


def test_compiled_model_cache(model, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path))
    unirt.Session(model("matmul_relu"), backend="openvino", backend_options={"cache_dir": True})
    assert any((tmp_path / "openvino").iterdir()), "OpenVINO wrote no compiled model into unirt's cache dir"


def test_reshape_to_static_shapes(model):
    sess = unirt.Session(
        model("dynamic_mlp"), backend="openvino", batched=True, backend_options={"shapes": {"x": [4, 8]}}
    )
    assert sess.inputs[0].shape == (4, 8)
    feeds = sample_feeds("dynamic_mlp", batch=4)
    np.testing.assert_allclose(
        sess.run(feeds)["probs"], reference_outputs(model("dynamic_mlp"), feeds)["probs"], rtol=1e-5, atol=1e-6
    )
    three = sample_feeds("dynamic_mlp", batch=3)  # a static batch of 4: 3 rows are padded to 4
    np.testing.assert_allclose(
        sess.run(three)["probs"], reference_outputs(model("dynamic_mlp"), three)["probs"], rtol=1e-5, atol=1e-6
    )
    for batched in (False, None):  # a static dim 0 above 1 is a batch only when asserted
        strict = unirt.Session(
            model("dynamic_mlp"), backend="openvino", batched=batched, backend_options={"shapes": {"x": [4, 8]}}
        )
        with pytest.raises(InputError, match="dim 0"):
            strict.run(np.ones((3, 8), np.float32))
    bounded = unirt.Session(model("dynamic_mlp"), backend="openvino", backend_options={"shapes": {"x": ["1..8", 8]}})
    assert bounded.inputs[0].shape == ("N", 8)  # the ONNX dim name; the bounds are checked per run
    with pytest.raises(UnsupportedOptionError, match="unknown input 'y'"):
        unirt.Session(model("dynamic_mlp"), backend="openvino", backend_options={"shapes": {"y": [1, 8]}})


def test_convert_to_ir_keeps_fp32_weights(model, tmp_path):
    backend = OpenVinoBackend()
    source = unirt.open_model(model("matmul_relu"))
    ir = backend.convert(source, tmp_path / "fp32", unirt.LoadOptions())
    assert ir.format is unirt.ModelFormat.OPENVINO and ir.companion(".bin") is not None
    assert ir.companion(".bin").stat().st_size >= 64 * 64 * 4  # fp32 weights, not OpenVINO's default fp16
    half = backend.convert(source, tmp_path / "fp16", unirt.LoadOptions(precision="fp16"))
    assert half.companion(".bin").stat().st_size < ir.companion(".bin").stat().st_size
    feeds = sample_feeds("matmul_relu", seed=3)
    ref = reference_outputs(model("matmul_relu"), feeds)["y"]
    with unirt.Session(ir.path, backend="openvino") as sess:
        assert sess.backend == "openvino" and sess.model.format is unirt.ModelFormat.OPENVINO
        np.testing.assert_allclose(sess.run(feeds)["y"], ref, rtol=1e-5, atol=1e-6)
    assert unirt.Session(ir.path).backend == "openvino"  # auto-selection: only OpenVINO reads IR


def test_convert_tflite_to_ir_and_errors(tmp_path):
    backend = OpenVinoBackend()
    ir = backend.convert(unirt.open_model(build_tflite("dynamic_mlp", tmp_path)), tmp_path / "ir", unirt.LoadOptions())
    assert ir.format is unirt.ModelFormat.OPENVINO
    with pytest.raises(unirt.ConversionError, match="converts onnx, tflite models, not openvino"):
        backend.convert(ir, tmp_path / "again", unirt.LoadOptions())


def test_reads_tflite(tmp_path, model):
    sess = unirt.Session(build_tflite("matmul_relu", tmp_path), backend="openvino")
    feeds = sample_feeds("matmul_relu", seed=5)
    np.testing.assert_allclose(
        sess.run(feeds)["y"], reference_outputs(model("matmul_relu"), feeds)["y"], rtol=1e-5, atol=1e-5
    )


def test_model_from_bytes(model):
    sess = unirt.Session(model("dynamic_mlp").read_bytes(), backend="openvino")
    assert sess.run(np.ones((2, 8), np.float32))["probs"].shape == (2, 3)


def test_broken_ir_is_a_model_load_error(model, tmp_path):
    ir = OpenVinoBackend().convert(unirt.open_model(model("matmul_relu")), tmp_path, unirt.LoadOptions())
    xml = ir.path.read_text()
    ir.path.write_text(xml.replace('type="MatMul"', 'type="NoSuchOp"'))
    with pytest.raises(ModelLoadError, match="openvino could not read this openvino model"):
        unirt.Session(ir.path, backend="openvino")
    ir.companion(".bin").write_bytes(b"\0" * 16)  # weights too short for the constants the IR declares
    ir.path.write_text(xml)
    with pytest.raises(ModelLoadError, match="openvino could not"):
        unirt.Session(ir.path, backend="openvino")


def test_devices_it_does_not_have_are_refused(model):
    with pytest.raises(UnsupportedOptionError, match="cannot run on cuda here; it offers cpu"):
        unirt.Session(model("dynamic_mlp"), backend="openvino", device="cuda")


def _binary_model(path, op, elem_type, dims=("N",)):
    """z = op(x, y), all three of ONNX type `elem_type` and shape `dims`."""
    from onnx import helper as h
    from onnx import save

    graph = h.make_graph(
        [h.make_node(op, ["x", "y"], ["z"])],
        op.lower(),
        [h.make_tensor_value_info("x", elem_type, list(dims)), h.make_tensor_value_info("y", elem_type, list(dims))],
        [h.make_tensor_value_info("z", elem_type, list(dims))],
    )
    save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_ints_outside_int32_are_refused_not_wrapped(tmp_path, op, dtype):
    from onnx import helper

    path = _binary_model(tmp_path / "m.onnx", op, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    sess = unirt.Session(path, backend="openvino")
    inside = {"x": np.array([2**31 - 1, 7, 0], dtype), "y": np.array([0, 6, 2**31 - 1], dtype)}
    np.testing.assert_array_equal(sess.run(inside)["z"], reference_outputs(path, inside)["z"])
    # OpenVINO computes these as int32: 2**40 + 1 came back as 1 (and 3e9 + 1 as -1294967295)
    outside = {"x": np.array([2**40, 3 * 10**9, 5], dtype), "y": np.array([1, 1, 2], dtype)}
    with pytest.raises(
        InputError,
        match=r"input 'x': OpenVINO computes u?int64 as int32.*outside the int32 range "
        r"\[-2147483648, 2147483647\]",
    ):
        sess.run(outside)
    with pytest.raises(InputError, match="input 'x'"):  # writing into caller memory is checked the same way
        sess.run(outside, out={"z": np.empty(3, dtype)})
    if dtype == np.int64:
        with pytest.raises(InputError, match="input 'y'"):
            sess.run({"x": np.array([1], dtype), "y": np.array([-(2**31) - 1], dtype)})
    assert sess.run({"x": np.array([], dtype), "y": np.array([], dtype)})["z"].shape == (0,)


def test_float64_models_are_refused_unless_float32_is_accepted(tmp_path):
    from onnx import TensorProto

    path = _binary_model(tmp_path / "add_f64.onnx", "Add", TensorProto.DOUBLE)
    with pytest.raises(
        UnsupportedOptionError,
        match=r"computes float64 in float32.*\(x, y, z, 1 more inside the "
        r"model\).*allow_float64_as_float32",
    ):
        unirt.Session(path, backend="openvino")
    sess = unirt.Session(path, backend="openvino", backend_options={"allow_float64_as_float32": True})
    feeds = {"x": np.array([1.5, 1e10, 1.0]), "y": np.array([2.25, 1.0, 1e-9])}
    got = sess.run(feeds)["z"]
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, (feeds["x"].astype(np.float32) + feeds["y"].astype(np.float32)))
    assert got[1] != feeds["x"][1] + feeds["y"][1]  # what the opt-in accepts: float32's 1e10 + 1 == 1e10


@pytest.mark.parametrize("device_name", ["AUTO", "AUTO:CPU", "MULTI:CPU", "HETERO:CPU"])
def test_virtual_devices_run_at_fp32(squeezenet, device_name):
    path, feeds, ref = squeezenet
    sess = unirt.Session(path, backend="openvino", threads=1, backend_options={"device_name": device_name})
    assert sess.precision == "fp32" and sess._runner.ov_device == device_name
    hints = sess._runner._compiled.get_property("DEVICE_PROPERTIES")
    assert {props["INFERENCE_PRECISION_HINT"].get_type_name() for props in hints.values()} == {"f32"}
    name = next(iter(ref))
    assert rel_l2(sess.run(feeds)[name], ref[name]) < 1e-5  # bf16, OpenVINO's default here, gives ~1e-2


def test_virtual_device_reports_the_precision_asked_for(model):
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        with pytest.raises(UnsupportedOptionError, match="AUTO:CPU has no bf16 mode here"):
            unirt.Session(
                model("dynamic_mlp"), backend="openvino", precision="bf16", backend_options={"device_name": "AUTO:CPU"}
            )
        return
    sess = unirt.Session(
        model("dynamic_mlp"), backend="openvino", precision="bf16", backend_options={"device_name": "AUTO:CPU"}
    )
    assert sess.precision == "bf16"


def test_onnx_dim_names_are_reported(model):
    mlp = unirt.Session(model("dynamic_mlp"), backend="openvino")
    assert [i.shape for i in mlp.inputs] == [("N", 8)]
    assert [o.shape for o in mlp.outputs] == [("N", 3), ("N", 3)]
    assert str(mlp.batch) == "dynamic batch (N)"
    multi = unirt.Session(model("multi_io"), backend="openvino")
    assert {i.name: i.shape for i in multi.inputs} == {"a": ("N", 4), "b": ("N", 4), "idx": ("K",), "scale": ()}
    assert {o.name: o.shape for o in multi.outputs}["picked"] == ("K", 4)
    unknown = unirt.Session(model("unknown_dims"), backend="openvino")
    assert unknown.inputs[0].shape == (None, 3, "H", "W")  # a dim the file leaves unnamed stays unnamed
    # a dim the user fixes with `shapes` is static, the others keep their names
    fixed = unirt.Session(model("unknown_dims"), backend="openvino", backend_options={"shapes": {"x": [2, 3, 4, -1]}})
    assert fixed.inputs[0].shape == (2, 3, 4, "W")


def test_an_ir_converted_by_unirt_keeps_the_onnx_dim_names(model, tmp_path, monkeypatch):
    """OpenVINO IR keeps no dim names, so an IR converted from a dynamic-batch ONNX model had an unnamed dim 0: no
    batch dim, and run_many ran requests one by one. The conversion's sidecar has the ONNX dims: the batch "N" is
    back, and run_many packs. An IR without a sidecar stays unnamed (batched=True says it is a batch dim)."""
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    converted = unirt.convert(model("dynamic_mlp"), "openvino", tmp_path / "mlp.xml")
    sess = unirt.Session(converted.path, backend="openvino")
    assert [i.shape for i in sess.inputs] == [("N", 8)] and str(sess.batch) == "dynamic batch (N)"
    rng = np.random.default_rng(0)
    requests = [rng.standard_normal((n, 8)).astype(np.float32) for n in (1, 3, 2)]
    many = sess.run_many(requests)
    assert sess.batch_stats().backend_runs == 1
    for got, x in zip(many, requests):
        np.testing.assert_allclose(got["probs"], sess.run(x)["probs"], rtol=1e-6)
    ov.save_model(ov.Core().read_model(str(model("dynamic_mlp"))), str(tmp_path / "plain.xml"))
    plain = unirt.Session(tmp_path / "plain.xml", backend="openvino")
    assert plain.inputs[0].shape == (None, 8) and "batched=True" in plain.batch.reason


def test_a_shared_dim_name_with_two_sizes_is_an_input_error(model):
    sess = unirt.Session(model("multi_io"), backend="openvino")
    feeds = sample_feeds("multi_io", seed=1, batch=3)
    feeds["b"] = np.ones((4, 4), np.float32)
    with pytest.raises(InputError, match="dim 'N' must be the same size everywhere it appears"):
        sess.run(feeds)


def test_bounded_dims_are_checked_before_the_run(model):
    sess = unirt.Session(model("dynamic_mlp"), backend="openvino", backend_options={"shapes": {"x": ["2..4", 8]}})
    assert sess.inputs[0].shape == ("N", 8)
    feeds = sample_feeds("dynamic_mlp", batch=3)
    np.testing.assert_allclose(
        sess.run(feeds)["probs"], reference_outputs(model("dynamic_mlp"), feeds)["probs"], rtol=1e-5, atol=1e-6
    )
    for rows in (1, 5):
        with pytest.raises(
            InputError,
            match=rf"input 'x': dim 0 must be in 2..4 \(the model's bounds\), got "
            rf"shape \({rows}, 8\)",
        ):
            sess.run(np.ones((rows, 8), np.float32))


def test_openvino_messages_lose_their_source_locations(model):
    from unirt_openvino.session import _message

    compiled = ov.Core().compile_model(str(model("dynamic_mlp")), "CPU")
    with pytest.raises(RuntimeError) as err:
        compiled({0: np.ones((2, 7), np.float32)})  # a static dim of the wrong size
    assert "src/" in str(err.value)
    assert "src/" not in _message(err.value) and "Check '" not in _message(err.value) and _message(err.value)


def test_dynamic_batch_outputs_are_pooled(tmp_path):
    path = unirt.testing.batched_cnn(tmp_path / "cnn.onnx", batch="N")  # features: 64 KiB a row
    sess = unirt.Session(path, backend="openvino")
    assert sess.outputs[0].shape == ("N", 16, 32, 32)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    expected = reference_outputs(path, {"x": x})
    for _ in range(3):  # warm-up: the first runs fill the pool
        sess.run(x)
    before = sess.pool.stats()
    for _ in range(20):
        out = sess.run(x)
        np.testing.assert_allclose(out["features"], expected["features"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["pooled"], expected["pooled"], rtol=1e-5, atol=1e-5)
        del out
    after = sess.pool.stats()
    assert after.allocations == before.allocations, "steady-state runs took new memory for outputs"
    assert after.reuses - before.reuses == 20  # `features`, written by OpenVINO straight into the pool's block


@pytest.mark.parametrize("threads", [1, None])  # single-threaded, OpenVINO leaves a too-small tensor unwritten
def test_dynamic_outputs_into_caller_arrays_of_the_wrong_size(tmp_path, threads):
    path = unirt.testing.batched_cnn(tmp_path / "cnn.onnx", batch="N", size=8)
    sess = unirt.Session(path, backend="openvino", threads=threads)
    x = np.ones((3, 3, 8, 8), np.float32)
    expected = reference_outputs(path, {"x": x})["pooled"]
    mine = np.full((3, 16, 1, 1), np.nan, np.float32)
    assert sess.run(x, out={"pooled": mine})["pooled"] is mine
    np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-6)
    for rows in (2, 4):  # refused before the run: 'pooled' dim 0 is the input's dim N
        with pytest.raises(
            unirt.InputError,
            match=rf"out\['pooled'\]: expected shape \[3, 16, 1, 1\] for these "
            rf"inputs, got \[{rows}, 16, 1, 1\]",
        ):
            sess.run(x, out={"pooled": np.empty((rows, 16, 1, 1), np.float32)})
    np.testing.assert_allclose(sess.run(x)["pooled"], expected, rtol=1e-5, atol=1e-6)  # the request recovered


def test_output_dim_names_that_do_not_hold_are_not_trusted(tmp_path):
    """y is declared [N, 4] but is Concat(x, x): [2N, 4]. unirt sizes it from the name; OpenVINO's shape inference
    does not prove it, so it is not bound and the session falls back to OpenVINO's own array."""
    from onnx import TensorProto, save
    from onnx import helper as h

    graph = h.make_graph(
        [h.make_node("Concat", ["x", "x"], ["y"], axis=0)],
        "liar",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    path = tmp_path / "liar.onnx"
    save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    sess = unirt.Session(path, backend="openvino", threads=1, pooled_outputs=True)
    assert sess.outputs[0].shape == ("N", 4) and "y" not in sess._runner._sizable
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    for _ in range(2):
        np.testing.assert_array_equal(sess.run(x)["y"], np.concatenate([x, x]))


def test_tflite_from_bytes(tmp_path, model):
    import tempfile
    from pathlib import Path

    before = set(Path(tempfile.gettempdir()).glob("unirt_openvino_*"))
    sess = unirt.Session(build_tflite("matmul_relu", tmp_path).read_bytes(), backend="openvino")
    assert set(Path(tempfile.gettempdir()).glob("unirt_openvino_*")) == before  # the spilled file is gone
    feeds = sample_feeds("matmul_relu", seed=6)
    np.testing.assert_allclose(
        sess.run(feeds)["y"], reference_outputs(model("matmul_relu"), feeds)["y"], rtol=1e-5, atol=1e-5
    )
    ir = OpenVinoBackend().convert(
        unirt.open_model(build_tflite("dynamic_mlp", tmp_path).read_bytes()), tmp_path / "ir", unirt.LoadOptions()
    )
    assert ir.format is unirt.ModelFormat.OPENVINO


def test_an_output_an_identity_produces_keeps_the_models_name(tmp_path):
    """OpenVINO folds the Identity and gives its output the producer's name too ("gemm91" sorts first): unirt keeps
    the name the model declares."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["gemm91"]), helper.make_node("Identity", ["gemm91"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "identity_out.onnx"))
    sess = unirt.Session(tmp_path / "identity_out.onnx", backend="openvino")
    assert [o.name for o in sess.outputs] == ["logits"]
    x = rng.standard_normal((1, 4)).astype(np.float32)
    got = sess.run({"x": x})
    assert list(got) == ["logits"]
    np.testing.assert_allclose(
        got["logits"], x @ onnx.numpy_helper.to_array(w) + onnx.numpy_helper.to_array(b), rtol=1e-5, atol=1e-5
    )
