"""unirt.tools.compare across two real backends (ONNX Runtime and onnx's reference evaluator) and across models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper as nh

from unirt import BackendUnavailableError, InputError, UnsupportedOptionError
from unirt.cli import main
from unirt.testing import matmul_relu
from unirt.tools import compare, compare_models
from unirt.tools.compare import compare_arrays


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory):
    """matmul_relu and a copy whose weights moved by 1e-2: what a broken conversion or quantization looks like."""
    d = tmp_path_factory.mktemp("perturbed")
    original = matmul_relu(d / "original.onnx", n=16)
    model = onnx.load(str(original))
    w = nh.to_array(model.graph.initializer[0]) + np.float32(1e-2)
    model.graph.initializer[0].CopyFrom(nh.from_array(w, model.graph.initializer[0].name))
    onnx.save(model, str(d / "perturbed.onnx"))
    return original, d / "perturbed.onnx"


def test_identical_model_passes_on_two_backends(test_plugins, model):
    report = compare(model("multi_io"), ["onnxruntime", "reference"], shapes="a:3x4,b:3x4,idx:2")
    assert report.reference == "onnxruntime" and report.targets == ["reference"]
    assert report.passed and not report.failures
    rows = {r.output: r for r in report.results}
    assert set(rows) == {"sum", "picked", "count", "mask"}
    assert rows["sum"].max_abs == 0.0 and rows["sum"].cosine == pytest.approx(1.0)
    assert rows["mask"].dtype == "bool" and rows["mask"].mismatched == 0
    assert report.shapes == {"a": [3, 4], "b": [3, 4], "idx": [2], "scale": []}


def test_all_takes_backends_that_convert_on_load(model):
    report = compare(model("dynamic_mlp"), shapes="x:3x8")  # backends "all": ncnn and MNN convert ONNX on load
    assert report.reference == "onnxruntime" and {"ncnn", "mnn"} <= set(report.targets)
    assert report.passed and {r.target for r in report.results} >= {"ncnn", "mnn"}


def test_perturbed_model_fails_and_identical_model_passes(perturbed):
    original, changed = perturbed
    same = compare_models(original, original, backend="onnxruntime")
    assert same.passed and all(r.max_abs == 0 for r in same.results)
    bad = compare_models(original, changed, backend="onnxruntime", labels=("original", "perturbed"))
    assert not bad.passed
    (row,) = bad.results
    assert row.target == "perturbed" and not row.passed and row.mismatched > 0
    assert row.max_abs > 1e-3 and row.rel_l2 > 1e-3 and row.cosine < 1.0


def test_tolerances_decide(test_plugins, model):
    # Softmax differs by ~1e-8 between the two engines: within default tolerance, not within zero tolerance.
    loose = compare(model("dynamic_mlp"), ["reference"], shapes="x:16x8")
    assert loose.passed and loose.reference == "onnxruntime"
    strict = compare(model("dynamic_mlp"), ["reference"], shapes="x:16x8", atol=0, rtol=0, seed=3)
    probs = next(r for r in strict.results if r.output == "probs")
    assert probs.passed == (probs.max_abs == 0)


def test_metrics_by_hand():
    ref = np.array([1.0, 2.0, 0.0, -4.0], np.float32)
    got = np.array([1.0, 2.5, 0.0, -4.0], np.float32)
    r = compare_arrays(got, ref, atol=0.1, rtol=0.1)
    assert r.max_abs == pytest.approx(0.5) and r.max_rel == pytest.approx(0.25)
    assert r.rel_l2 == pytest.approx(0.5 / np.sqrt(21))
    assert r.cosine == pytest.approx(float(got @ ref) / (np.linalg.norm(got) * np.linalg.norm(ref)))
    assert not r.passed and r.mismatched == 1
    assert compare_arrays(got, ref, atol=0.5, rtol=0).passed
    shape = compare_arrays(got[:3], ref, 1, 1)
    assert not shape.passed and "shape" in shape.reason
    nan = compare_arrays(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), 0, 0)
    assert nan.passed
    assert not compare_arrays(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), 1, 1).passed
    assert not compare_arrays(np.array([1, 2], np.int64), np.array([1, 3], np.int64), 10, 10).passed  # ints exact


def test_inputs_from_file_and_saved_arrays(test_plugins, model, tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    report = compare(
        model("dynamic_mlp"),
        ["onnxruntime", "reference"],
        inputs=tmp_path / "in.npz",
        save_inputs=tmp_path / "used.npz",
        save_outputs=tmp_path / "outs.npz",
    )
    assert report.inputs_source == "file" and report.passed
    with np.load(tmp_path / "used.npz") as used:
        np.testing.assert_array_equal(used["x"], x)
    with np.load(tmp_path / "outs.npz") as outs:
        assert set(outs.files) == {"onnxruntime/logits", "onnxruntime/probs", "reference/logits", "reference/probs"}
        np.testing.assert_allclose(outs["reference/logits"], outs["onnxruntime/logits"], rtol=1e-5)
    np.savez(tmp_path / "wrong.npz", y=x)
    with pytest.raises(InputError, match="missing.*'x'.*unknown.*'y'"):
        compare(model("dynamic_mlp"), ["onnxruntime", "reference"], inputs=tmp_path / "wrong.npz")


def test_bad_requests(test_plugins, model):
    with pytest.raises(BackendUnavailableError, match="'nosuch' is not installed"):
        compare(model("dynamic_mlp"), ["onnxruntime", "nosuch"])
    with pytest.raises(UnsupportedOptionError, match="needs a backend besides the reference"):
        compare(model("dynamic_mlp"), ["onnxruntime"])
    with pytest.raises(InputError, match="contradicts the model"):
        compare(model("dynamic_mlp"), ["reference"], shapes="x:2x7")


def test_cli_exit_codes(test_plugins, model, capsys):
    path = str(model("dynamic_mlp"))
    assert main(["compare", path, "--backends", "onnxruntime,reference", "--shapes", "x:4x8"]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "reference  logits" in out
    # Out of tolerance: exit 1, the failing rows marked.
    exit_code = main(
        ["compare", path, "--backends", "reference", "--atol", "0", "--rtol", "0", "--shapes", "x:64x8", "--json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert exit_code == (0 if data["passed"] else 1)
    assert {r["output"] for r in data["results"]} == {"logits", "probs"}
    # Bad input: exit 2 with one line naming the problem.
    for argv, message in [
        (["compare", "missing.onnx"], "no such model file"),
        (["compare", path, "--backends", "onnxruntime,nosuch"], "'nosuch' is not installed"),
        (["compare", path, "--shapes", "x=4by8"], "malformed shape"),
        (["compare", path, "--backends", "reference", "--shapes", "x:4x9"], "contradicts"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err
