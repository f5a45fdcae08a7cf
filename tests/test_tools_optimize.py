"""unirt.tools.optimize (onnxslim) and unirt.tools.quantize (ONNX Runtime) on models built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from unirt import ConversionError, InputError, ModelLoadError, Session, UnsupportedOptionError
from unirt.cli import main
from unirt.testing import dynamic_mlp
from unirt.tools import onnx_model as om
from unirt.tools import optimize, quantize
from unirt.tools.quantize import _check_interface, calibration_feeds

rng = np.random.default_rng(0)


def _w(*shape):
    return (rng.standard_normal(shape) / 4).astype(np.float32)


@pytest.fixture(scope="module")
def foldable(tmp_path_factory):
    """A conv net with work for a simplifier: constants to fold, an Identity, a dead branch, a Conv+BN pair."""
    path = tmp_path_factory.mktemp("opt") / "foldable.onnx"
    nodes = [
        h.make_node("Add", ["c1", "c2"], ["c12"]),  # constant subexpression
        h.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        h.make_node("BatchNormalization", ["conv", "s", "b", "m", "v"], ["bn"]),
        h.make_node("Identity", ["bn"], ["ident"]),
        h.make_node("Add", ["ident", "c12"], ["shifted"]),
        h.make_node("Relu", ["shifted"], ["y"]),
        h.make_node("Mul", ["bn", "c1"], ["dead"]),  # feeds no output
    ]
    graph = h.make_graph(
        nodes,
        "foldable",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 4, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 8, 8, 8])],
        [
            nh.from_array(_w(8, 4, 3, 3), "w"),
            nh.from_array(_w(8) + 1, "s"),
            nh.from_array(_w(8), "b"),
            nh.from_array(_w(8), "m"),
            nh.from_array(np.abs(_w(8)) + 0.5, "v"),
            nh.from_array(_w(1, 8, 1, 1), "c1"),
            nh.from_array(_w(1, 8, 1, 1), "c2"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_optimize_shrinks_the_graph_and_keeps_outputs(foldable, tmp_path):
    out = tmp_path / "slim.onnx"
    report = optimize(foldable, out, shapes="x:2x4x8x8")
    assert report.output == str(out) and out.is_file()
    assert report.nodes_before == 7 and report.nodes_after < report.nodes_before
    assert "Identity" not in report.ops_after and "BatchNormalization" not in report.ops_after
    assert report.check is not None and report.check.passed
    assert report.check.reference == "original" and report.check.targets == ["optimized"]
    assert report.check.shapes == {"x": [2, 4, 8, 8]}
    # Independently of the report: same outputs on the optimized file.
    x = rng.standard_normal((3, 4, 8, 8)).astype(np.float32)
    with Session(foldable, backend="onnxruntime") as a, Session(out, backend="onnxruntime") as b:
        assert [i.shape for i in b.inputs] == [i.shape for i in a.inputs]  # interface unchanged (dynamic N)
        np.testing.assert_allclose(b.run(x)["y"], a.run(x)["y"], rtol=1e-4, atol=1e-5)


def test_optimize_refuses_bad_requests(foldable, tmp_path):
    with pytest.raises(UnsupportedOptionError, match="is the input model"):
        optimize(foldable, foldable)
    with pytest.raises(ModelLoadError, match="no such model file"):
        optimize(tmp_path / "nope.onnx", tmp_path / "out.onnx")
    with pytest.raises(UnsupportedOptionError, match="is a directory"):
        optimize(foldable, tmp_path)


def test_optimize_cli(foldable, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    assert main(["optimize", str(foldable), "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] and data["nodes_after"] < data["nodes_before"] and data["check"]["passed"]
    assert main(["optimize", str(foldable), "-o", str(tmp_path / "t.onnx")]) == 0
    text = capsys.readouterr().out
    assert "nodes:      7 ->" in text and "PASSED" in text


def test_fp16_keeps_float32_io_and_reports_deltas(foldable, tmp_path):
    out = tmp_path / "fp16.onnx"
    report = quantize(foldable, out, "fp16", shapes="x:1x4x8x8", bench_iterations=5)
    assert report.mode == "fp16" and report.bytes_after < report.bytes_before
    with Session(out, backend="onnxruntime") as sess:
        assert str(sess.inputs[0].dtype) == "float32" and str(sess.outputs[0].dtype) == "float32"
    acc = report.accuracy
    assert acc is not None and acc.targets == ["fp16"]
    (row,) = acc.results
    assert 0 < row.max_abs < 0.05 and row.cosine > 0.999  # fp16 rounding, not garbage
    assert report.latency_before_ms > 0 and report.latency_after_ms > 0 and report.speedup > 0
    assert report.passed  # no tolerance asked for: reported, not judged


def test_int8_dynamic_and_static(tmp_path):
    model = dynamic_mlp(tmp_path / "mlp.onnx", features=32, classes=16)
    dyn = quantize(model, tmp_path / "dyn.onnx", "int8", measure=False)
    assert dyn.mode == "int8-dynamic" and any("dynamic quantization" in n for n in dyn.notes)
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in onnx.load(dyn.output).graph.node)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        np.savez(calib / f"batch{i}.npz", x=rng.standard_normal((8, 32)).astype(np.float32))
    static = quantize(
        model,
        tmp_path / "static.onnx",
        "int8",
        calibration=calib,
        shapes="x:8x32",
        bench_iterations=3,
        atol=10,
        rtol=10,
    )
    assert static.mode == "int8-static" and static.tolerance_checked and static.passed
    ops = {n.op_type for n in onnx.load(static.output).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert static.accuracy.shapes == {"x": [8, 32]}  # measured on the held-out calibration batch
    assert static.accuracy_inputs.startswith("1 held-out calibration sample") and static.calibration_samples == 3
    in_sample = quantize(
        model, tmp_path / "in_sample.onnx", "int8", calibration=calib / "batch0.npz", measure=True, bench_iterations=2
    )
    assert "in-sample" in in_sample.accuracy_inputs and any("flatters static int8" in n for n in in_sample.notes)
    held_out = tmp_path / "held_out.npz"
    np.savez(held_out, x=rng.standard_normal((5, 32)).astype(np.float32))
    out_of_sample = quantize(
        model, tmp_path / "static2.onnx", "int8", calibration=calib, inputs=held_out, bench_iterations=2, accept=True
    )  # random data and weights: judged, kept on request
    assert out_of_sample.accuracy_inputs == f"held-out inputs {held_out}"
    assert out_of_sample.accuracy.shapes == {"x": [5, 32]} and out_of_sample.passed
    assert out_of_sample.drop.samples == 1 and out_of_sample.drop.rel_l2 > 0
    assert out_of_sample.drop.within or any("kept because it was accepted" in n for n in out_of_sample.notes)
    strict = quantize(
        model, tmp_path / "strict.onnx", "int8", calibration=calib / "batch0.npz", atol=0, rtol=0, bench_iterations=2
    )
    assert strict.tolerance_checked and not strict.passed


def _ir3_model(path):
    """IR 3 style: every initializer also listed as a graph input; two equal ConstantOfShape shapes, which ONNX
    Runtime's pre-processing merges, leaving the dropped one behind as a real graph input."""
    value = nh.from_array(np.array([0.1], np.float32))
    nodes = [
        h.make_node("ConstantOfShape", ["b_shape"], ["b"], value=value),
        h.make_node("ConstantOfShape", ["c_shape"], ["c"], value=value),
        h.make_node("MatMul", ["x", "w"], ["mm"]),
        h.make_node("Add", ["mm", "b"], ["y0"]),
        h.make_node("Add", ["y0", "c"], ["y"]),
    ]
    inits = [
        nh.from_array(_w(16, 8), "w"),
        nh.from_array(np.array([8], np.int64), "b_shape"),
        nh.from_array(np.array([8], np.int64), "c_shape"),
    ]
    graph = h.make_graph(
        nodes,
        "ir3",
        [h.make_tensor_value_info("x", T.FLOAT, [2, 16])]
        + [h.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits],
        [h.make_tensor_value_info("y", T.FLOAT, [2, 8])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 9)])
    model.ir_version = 3
    onnx.save(model, str(path))
    return path


def test_int8_of_an_ir3_model_keeps_its_inputs(tmp_path):
    model = _ir3_model(tmp_path / "ir3.onnx")
    report = quantize(model, tmp_path / "sub" / "q.onnx", "int8", bench_iterations=2)  # parent made too
    assert [i.name for i in onnx.load(report.output).graph.input] == ["x"]
    assert report.accuracy.failures == {} and report.passed
    assert report.latency_after_ms is not None and not any("failed" in n for n in report.notes)
    assert any("dropped 3 initializers listed as graph inputs" in n for n in report.notes)
    x = rng.standard_normal((2, 16)).astype(np.float32)
    with Session(model, backend="onnxruntime") as a, Session(report.output, backend="onnxruntime") as b:
        np.testing.assert_allclose(b.run(x)["y"], a.run(x)["y"], atol=0.05)


def test_a_quantized_model_with_another_interface_is_refused(tmp_path):
    original = onnx.load(str(_ir3_model(tmp_path / "ir3.onnx")))
    inputs, outputs = om.graph_inputs(original), om.graph_outputs(original)
    assert [i.name for i in inputs] == ["x"]
    _check_interface("ir3.onnx", tmp_path / "ir3.onnx", inputs, outputs, dtypes=True)  # itself: accepted
    leaky = onnx.load(str(tmp_path / "ir3.onnx"))
    del leaky.graph.initializer[1:]  # b_shape, c_shape stay listed as inputs without values: real inputs now
    onnx.save(leaky, str(tmp_path / "leaky.onnx"))
    with pytest.raises(
        ConversionError,
        match=r"changed the model's inputs: x: float32 became x: float32, "
        r"b_shape: int64, c_shape: int64 in .*leaky.onnx",
    ):
        _check_interface("ir3.onnx", tmp_path / "leaky.onnx", inputs, outputs, dtypes=True)
    fp16 = quantize(
        dynamic_mlp(tmp_path / "mlp.onnx"), tmp_path / "fp16.onnx", "fp16", keep_io_types=False, measure=False
    )  # float16 I/O asked for: names checked, dtypes not
    proto = onnx.load(str(tmp_path / "mlp.onnx"))
    with pytest.raises(ConversionError, match=r"changed the model's inputs: x: float32 became x: float16"):
        _check_interface("mlp.onnx", Path(fp16.output), om.graph_inputs(proto), om.graph_outputs(proto), dtypes=True)


def test_quantize_fails_when_the_quantized_model_cannot_run(tmp_path, capsys):
    """ncnn runs the fp32 model but has no layers for dynamic int8's operators: not a pass, exit 1."""
    model = dynamic_mlp(tmp_path / "mlp.onnx", features=16, classes=8)
    assert (
        main(
            [
                "quantize",
                str(model),
                "-o",
                str(tmp_path / "q.onnx"),
                "--int8",
                "--backend",
                "ncnn",
                "--iterations",
                "2",
                "--json",
            ]
        )
        == 1
    )
    data = json.loads(capsys.readouterr().out)
    assert not data["passed"] and "DynamicQuantizeLinear" in data["accuracy"]["failures"]["int8-dynamic"]


def test_calibration_data_is_checked(tmp_path):
    np.savez(tmp_path / "wrong.npz", y=np.zeros((1, 8), np.float32))
    with pytest.raises(Exception, match=r"has arrays \['y'\]; the model's inputs are \['x'\]"):
        calibration_feeds(tmp_path / "wrong.npz", ["x"])
    with pytest.raises(Exception, match="does not exist"):
        calibration_feeds(tmp_path / "missing", ["x"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no .npz or .npy files"):
        calibration_feeds(tmp_path / "empty", ["x"])


def test_calibration_dtype_and_rank_are_checked_before_onnx_runtime(tmp_path, capsys):
    model = dynamic_mlp(tmp_path / "mlp.onnx", features=8, classes=3)  # x: float32[N,8]
    inputs = om.graph_inputs(onnx.load(str(model)))
    np.savez(tmp_path / "f64.npz", x=rng.standard_normal((4, 8)))
    with pytest.raises(
        InputError,
        match=r"calibration file .*f64.npz: input 'x' is float64\[4,8\]; the model's "
        r"'x' is float32\[N,8\] \(dtype float32, got float64",
    ):
        calibration_feeds(tmp_path / "f64.npz", inputs)
    np.savez(tmp_path / "rank3.npz", x=np.zeros((4, 8, 1), np.float32))
    with pytest.raises(InputError, match=r"rank3.npz: input 'x' is float32\[4,8,1\]; .* \(rank 2, got 3"):
        calibration_feeds(tmp_path / "rank3.npz", inputs)
    np.save(tmp_path / "wide.npy", np.zeros((4, 9), np.float32))
    with pytest.raises(InputError, match=r"wide.npy: input 'x' is float32\[4,9\]; .*fixed dims must match"):
        calibration_feeds(tmp_path / "wide.npy", inputs)
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 8), np.float32))
    assert calibration_feeds(tmp_path / "ok.npz", inputs)[0]["x"].shape == (4, 8)
    assert (
        main(
            [
                "quantize",
                str(model),
                "-o",
                str(tmp_path / "q.onnx"),
                "--int8",
                "--calibration",
                str(tmp_path / "f64.npz"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "f64.npz: input 'x' is float64[4,8]" in err and not (tmp_path / "q.onnx").exists()


def test_quantize_cli(tmp_path, capsys):
    model = dynamic_mlp(tmp_path / "mlp.onnx")
    assert (
        main(
            ["quantize", str(model), "-o", str(tmp_path / "q.onnx"), "--int8", "--iterations", "3", "--shapes", "x:4x8"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "int8-dynamic" in out and "latency:" in out and "accuracy:" in out
    assert (
        main(["quantize", str(model), "-o", str(tmp_path / "q2.onnx"), "--fp16", "--calibration", str(tmp_path)]) == 2
    )
    assert "calibration data is for --int8" in capsys.readouterr().err
