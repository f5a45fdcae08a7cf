"""The precision axis of bench and compare, and int8 end to end (quantize's calibration, schemes and accuracy
drop), on real engines with models built here."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import onnx
import pytest

from unirt import InputError, UnsupportedOptionError
from unirt.cli import main
from unirt.testing.models import batched_cnn, dynamic_mlp
from unirt.tools import bench, compare, quantize
from unirt.tools import onnx_model as om
from unirt.tools.bench import BENCH_SCHEMA
from unirt.tools.precision import error_vs_reference, parse_precisions, top1_agreement
from unirt.tools.quantize import calibration_feeds

rng = np.random.default_rng(7)


@pytest.fixture(scope="module")
def schema():
    return json.loads(BENCH_SCHEMA.read_text())


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """A classifier: logits float32[N, 16] (top-1 agreement applies)."""
    return dynamic_mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx", features=32, classes=16)


def test_precision_lists_are_checked():
    assert parse_precisions("fp32, int8") == ["fp32", "int8"] and parse_precisions(["bf16"]) == ["bf16"]
    with pytest.raises(UnsupportedOptionError, match="precision must be one of .* got 'fp64'"):
        parse_precisions("fp32,fp64")
    with pytest.raises(UnsupportedOptionError, match="listed twice"):
        parse_precisions("int8,int8")
    with pytest.raises(UnsupportedOptionError, match="expected one or more"):
        parse_precisions(" , ")


def test_top1_agreement_and_error_metrics():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
    got = np.array([[0.2, 0.8], [0.1, 0.9], [0.4, 0.6], [0.6, 0.4]], np.float32)
    assert top1_agreement(got, ref) == 0.75
    assert top1_agreement(got[:, :1], ref[:, :1]) is None  # one class: not a classifier
    assert top1_agreement(np.zeros((2, 3, 4)), np.zeros((2, 3, 4))) is None
    err = error_vs_reference([{"y": got[:2]}, {"y": got[2:]}], [{"y": ref[:2]}, {"y": ref[2:]}])
    assert err.top1_agreement == 0.75 and err.max_abs == pytest.approx(0.7)
    assert err.rel_l2 == pytest.approx(np.linalg.norm(got - ref) / np.linalg.norm(ref), rel=1e-6)


def test_bench_fp32_int8_rows_speed_error_and_a_refusal(mlp, schema):
    report = bench(mlp, ["onnxruntime", "openvino", "ncnn"], precision="fp32,int8", batch=8, iterations=5, warmup=1)
    by = {(r.backend, r.precision_asked): r for r in report.results}
    assert set(by) == {(b, p) for b in ("onnxruntime", "openvino", "ncnn") for p in ("fp32", "int8")}
    for backend in ("onnxruntime", "openvino"):
        fp32, int8 = by[backend, "fp32"], by[backend, "int8"]
        assert fp32.error is None and int8.error is None and int8.precision == "int8"
        assert fp32.speed_vs_fp32 == pytest.approx(1.0) and int8.speed_vs_fp32 > 0
        assert fp32.speed_interleaved and int8.speed_interleaved  # one worker: timed alternating with fp32
        assert fp32.rel_l2 < 1e-5 and 0 < int8.rel_l2 < 0.5  # int8 moves the outputs, not to garbage
        assert 0 <= int8.top1_agreement <= 1 and fp32.top1_agreement == 1.0
        assert "static Q/DQ int8 from unirt quantize" in int8.model_note and "random" in int8.model_note
    refused = by["ncnn", "int8"]
    assert refused.refused and "int8" in refused.error and refused.latency_ms is None
    assert report.refused == [refused] and not report.failed  # a refusal is an answer, not a failure
    jsonschema.validate(report.to_dict(), schema)
    assert report.to_dict()["settings"]["precision"] == "fp32,int8"


def test_a_reduced_precision_alone_is_measured_against_fp32(mlp):
    report = bench(mlp, ["onnxruntime"], precision="bf16", iterations=2, warmup=0)
    fp32, bf16 = report.results
    assert (fp32.precision_asked, bf16.precision_asked) == ("fp32", "bf16")
    assert bf16.refused and "bf16" in bf16.error and fp32.error is None


def test_bench_cli_precision_table(mlp, tmp_path, capsys, schema):
    calib = tmp_path / "cal.npz"
    np.savez(calib, x=rng.standard_normal((6, 4, 32)).astype(np.float32))  # 6 samples of batch 4
    assert (
        main(
            [
                "bench",
                str(mlp),
                "--backends",
                "onnxruntime,mnn",
                "--precision",
                "fp32,int8",
                "--iterations",
                "3",
                "--warmup",
                "0",
                "--batch",
                "4",
                "--calibration",
                str(calib),
                "--no-progress",
                "--json",
                str(tmp_path / "b.json"),
                "--plot",
                str(tmp_path / "b.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "vs fp32" in out and "top-1" in out and f"calibrated on {calib}" in out
    # MNN's converter cannot take the Q/DQ model: refused before converting, naming what it lacks
    assert "REFUSED mnn int8: ConversionError" in out and "cannot convert a quantized ONNX model" in out
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "b.json").read_text())
    jsonschema.validate(data, schema)
    assert {(r["backend"], r["precision_asked"], r["refused"]) for r in data["results"]} == {
        ("onnxruntime", "fp32", False),
        ("onnxruntime", "int8", False),
        ("mnn", "fp32", False),
        ("mnn", "int8", True),
    }
    assert main(["bench", str(mlp), "--precision", "fp32,fp64", "--iterations", "1"]) == 2


def test_compare_over_precisions(mlp):
    inputs = {"x": rng.standard_normal((32, 32)).astype(np.float32)}
    report = compare(
        mlp, ["onnxruntime", "openvino"], precision=["fp32", "bf16", "int8"], inputs=inputs, atol=10, rtol=10
    )
    assert report.precisions == ["fp32", "bf16", "int8"]
    assert report.targets == ["openvino@fp32", "onnxruntime@bf16", "openvino@bf16", "onnxruntime@int8", "openvino@int8"]
    assert "onnxruntime@bf16" in report.refused and not report.failures
    for label in ("onnxruntime@int8", "openvino@int8"):
        worst = report.worst(label)
        assert 0 < worst["rel_l2"] < 0.5 and 0 <= worst["top1_agreement"] <= 1
    assert report.worst("openvino@fp32")["top1_agreement"] == 1.0
    assert any("calibrated on 1 compared input(s)" in n for n in report.notes)
    assert report.passed  # refusals are listed, not failures; tolerances loose on purpose


def test_compare_cli_precision_summary(mlp, capsys):
    assert (
        main(
            [
                "compare",
                str(mlp),
                "--backends",
                "onnxruntime,ncnn",
                "--precision",
                "fp32,int8",
                "--shapes",
                "x:8x32",
                "--atol",
                "10",
                "--rtol",
                "10",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "onnxruntime@int8" in out and "REFUSED ncnn@int8" in out and "top-1" in out


def test_calibration_npz_with_a_leading_sample_axis(tmp_path):
    model = batched_cnn(tmp_path / "cnn.onnx", batch=1, size=16)  # x float32[1, 3, 16, 16]
    infos = om.graph_inputs(onnx.load(str(model)))
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((10, 1, 3, 16, 16)).astype(np.float32))
    samples = calibration_feeds(tmp_path / "cal.npz", infos)
    assert len(samples) == 10 and samples[3]["x"].shape == (1, 3, 16, 16)
    report = quantize(
        model, tmp_path / "q.onnx", "int8", calibration=tmp_path / "cal.npz", bench_iterations=2, accept=True
    )
    assert report.mode == "int8-static" and report.scheme == "static"
    assert report.calibration_samples == 8 and report.drop.samples == 2  # the last fifth held out
    assert report.accuracy_inputs == "2 held-out calibration samples (the quantizer calibrated on the other 8)"
    assert 0 < report.drop.rel_l2 < 0.5 and report.drop.top1_agreement is None  # no classifier output here
    np.savez(tmp_path / "mixed.npz", a=np.zeros((3, 1, 8), np.float32), b=np.zeros((1, 8), np.float32))
    with pytest.raises(InputError, match="some arrays have a leading sample axis and some do not"):
        calibration_feeds(tmp_path / "mixed.npz", om.graph_inputs(_two_inputs(tmp_path / "two.onnx")))


def _two_inputs(path):
    from onnx import TensorProto as T
    from onnx import helper as h

    graph = h.make_graph(
        [h.make_node("Add", ["a", "b"], ["y"])],
        "two",
        [h.make_tensor_value_info(n, T.FLOAT, [1, 8]) for n in "ab"],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 8])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return model


def test_static_and_dynamic_schemes(mlp, tmp_path):
    calib = tmp_path / "cal.npz"
    np.savez(calib, x=rng.standard_normal((5, 8, 32)).astype(np.float32))
    static = quantize(mlp, tmp_path / "s.onnx", "int8", calibration=calib, scheme="static", measure=False)
    dynamic = quantize(mlp, tmp_path / "d.onnx", "int8", calibration=calib, scheme="dynamic", measure=False)
    s_ops = {n.op_type for n in onnx.load(static.output).graph.node}
    d_ops = {n.op_type for n in onnx.load(dynamic.output).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= s_ops and static.calibration_samples == 5
    assert "DynamicQuantizeLinear" in d_ops and dynamic.mode == "int8-dynamic" and dynamic.calibration_samples == 0
    with pytest.raises(UnsupportedOptionError, match="static int8 needs calibration data"):
        quantize(mlp, tmp_path / "x.onnx", "int8", scheme="static")
    with pytest.raises(UnsupportedOptionError, match="scheme must be one of static, dynamic"):
        quantize(mlp, tmp_path / "x.onnx", "int8", scheme="qat")
    with pytest.raises(UnsupportedOptionError, match="a scheme .* is for int8"):
        quantize(mlp, tmp_path / "x.onnx", "fp16", scheme="dynamic")


def test_accuracy_drop_is_stated_and_over_the_threshold_refused(mlp, tmp_path, capsys):
    calib = tmp_path / "cal.npz"
    np.savez(calib, x=rng.standard_normal((10, 8, 32)).astype(np.float32))
    out = tmp_path / "q.onnx"
    strict = quantize(mlp, out, "int8", calibration=calib, max_rel_l2=1e-9, bench_iterations=2)
    assert strict.drop.rel_l2 > 1e-9 and not strict.drop.within and not strict.passed
    assert "accuracy drop over the threshold" in strict.refused and not out.exists()
    assert strict.bench_after is None  # nothing measured for a model that was removed
    args = [
        "quantize",
        str(mlp),
        "-o",
        str(out),
        "--int8",
        "--calibration",
        str(calib),
        "--max-rel-l2",
        "1e-9",
        "--iterations",
        "2",
    ]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "drop:       vs fp32 on 2 held-out calibration samples" in text
    assert "OVER the thresholds" in text and "REFUSED:" in text
    assert not out.exists()
    assert main(args + ["--accept"]) == 0 and out.exists()
    assert "kept because it was accepted" in capsys.readouterr().out
    assert main(args[:-4] + ["--iterations", "2", "--json"]) in (0, 1)  # default thresholds: judged either way
    data = json.loads(capsys.readouterr().out)
    d = data["drop"]
    assert d["samples"] == 2 and d["max_rel_l2"] == 0.1 and d["min_top1"] == 0.9 and 0 <= d["top1_agreement"] <= 1
    assert data["passed"] == d["within"]
