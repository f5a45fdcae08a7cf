"""A frontend is a conversion (`unirt.conversion.frontend`): OpenVINO reading ONNX or TFLite is verified against the
format's reference engine (ONNX Runtime, LiteRT) on the first run's inputs, cached per model and engines; a
disagreement raises on the first run unless accepted."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import unirt
from unirt import ConversionError, FrontendMismatchError, registry
from unirt.cli import main
from unirt.conversion.frontend import CACHE_FOLDER
from unirt.testing.threads import run_concurrently


def _usable(*names):
    return all(n in registry.installed_names() and registry.availability(n).available for n in names)


pytestmark = pytest.mark.skipif(not _usable("openvino", "onnxruntime"), reason="needs openvino and onnxruntime")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def dynamic_quant(path):
    """Dynamically quantized ops as quantize_dynamic writes them: DynamicQuantizeLinear on the activation, then
    MatMulInteger and ConvInteger with uint8 weights, rescaled to float."""
    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        h.make_node("MatMulInteger", ["xq", "W", "xz", "wz"], ["mi"]),
        h.make_node("Cast", ["mi"], ["mf"], to=T.FLOAT),
        h.make_node("Mul", ["mf", "xs"], ["y"]),
        h.make_node("Reshape", ["xq", "shape"], ["img"]),
        h.make_node("ConvInteger", ["img", "K", "xz", "wz"], ["ci"]),
        h.make_node("Cast", ["ci"], ["cf"], to=T.FLOAT),
        h.make_node("Mul", ["cf", "xs"], ["z"]),
    ]
    inits = [
        nh.from_array(rng.integers(0, 255, (16, 4)).astype(np.uint8), "W"),
        nh.from_array(rng.integers(0, 255, (2, 1, 3, 3)).astype(np.uint8), "K"),
        nh.from_array(np.array(128, np.uint8), "wz"),
        nh.from_array(np.array([2, 1, 4, 4], np.int64), "shape"),
    ]
    graph = h.make_graph(
        nodes,
        "dynamic_quant",
        [h.make_tensor_value_info("x", T.FLOAT, [2, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, [2, 4]), h.make_tensor_value_info("z", T.FLOAT, [2, 2, 2, 2])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def symmetric_input():
    """Inputs normalized to [-1, 1] (an image scaled so): DynamicQuantizeLinear's zero point is round(127.5),
    which ONNX Runtime rounds to even (128) and OpenVINO does not."""
    x = np.random.default_rng(3).uniform(-1, 1, (2, 16)).astype(np.float32)
    x[0, 0], x[0, 1] = -1.0, 1.0
    return x


def files(cache):
    folder = cache / CACHE_FOLDER
    return sorted(folder.glob("*.json")) if folder.exists() else []


def test_openvino_disagreeing_with_onnxruntime_raises_on_the_first_run(tmp_path, own_cache):
    model = dynamic_quant(tmp_path / "dq.onnx")
    x = symmetric_input()
    with unirt.Session(model, backend="onnxruntime") as ort_sess:
        assert ort_sess.verification is None  # onnxruntime owns ONNX: nothing to verify
        expected = ort_sess.run(x)
    sess = unirt.Session(model, backend="openvino")
    assert sess.verification.state == "pending" and "pending: checked against onnxruntime" in repr(sess)
    with pytest.raises(FrontendMismatchError) as info:
        sess.run(x)
    message = str(info.value)
    assert "openvino reads this onnx model through its frontend and disagrees with onnxruntime" in message
    assert "beyond the fp32 tolerance 0.001: y: rel-L2" in message and "accept" in message
    assert "verified on the first run's inputs (x: 2x16)" in message
    assert "The model is quantized (it computes int8 whatever is asked): load it with precision='int8'" in message
    worst = max(e.error for e in info.value.errors)
    got = unirt.Session(model, backend="openvino", backend_options={"conversion": {"verify": False}}).run(x)
    measured = max(float(np.linalg.norm(got[k] - expected[k]) / np.linalg.norm(expected[k])) for k in expected)
    assert worst == pytest.approx(measured, rel=1e-5) and measured > 1e-3  # the error stated is the one there is
    assert isinstance(info.value, ConversionError) and info.value.reference == "onnxruntime"
    assert sess.verification.state == "failed" and "FAILED against onnxruntime" in repr(sess)
    with pytest.raises(FrontendMismatchError):  # never a wrong answer: every run refuses
        sess.run(x)
    assert len(files(own_cache)) == 1
    # a second session knows at load; its first run raises without running the reference again
    again = unirt.Session(model, backend="openvino")
    assert again.verification.state == "failed" and again.verification.cached
    with pytest.raises(FrontendMismatchError, match="disagrees with onnxruntime"):
        again.run(x)
    # precision='int8' (what the quantized model computes) is judged at the int8 tolerance, and runs
    as_int8 = unirt.Session(model, backend="openvino", precision="int8")
    assert as_int8.precision == "int8" and as_int8.run(x)["y"].shape == (2, 4)
    assert as_int8.verification.verified and as_int8.verification.tolerance == 0.1


def test_accept_or_a_larger_tolerance_runs_it(tmp_path, caplog):
    model = dynamic_quant(tmp_path / "dq.onnx")
    x = symmetric_input()
    with caplog.at_level(logging.WARNING):
        sess = unirt.Session(model, backend="openvino", backend_options={"conversion": {"accept": True}})
        out = sess.run(x)
    assert set(out) == {"y", "z"} and sess.verification.state == "accepted"
    assert "accepted against onnxruntime" in repr(sess) and "accepted" in caplog.text
    loose = unirt.Session(model, backend="openvino", backend_options={"conversion": {"tolerance": 10.0}})
    loose.run(x)
    assert loose.verification.verified and loose.verification.cached  # measured once, judged per session


def test_a_plain_model_is_verified_once_and_cached(tmp_path, own_cache, monkeypatch):
    model = unirt.testing.models.batched_cnn(tmp_path / "cnn.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    sess = unirt.Session(model, backend="openvino")
    out = sess.run(x)
    status = sess.verification
    assert status.verified and not status.cached and status.reference == "onnxruntime"
    assert status.verified_on == "the first run's inputs (x: 1x3x32x32)"
    assert status.max_error < 1e-5 and sess._frontend is None  # later runs: one attribute test
    assert "verified against onnxruntime on the first run's inputs (x: 1x3x32x32)" in str(status)
    assert "frontend='onnx' (verified against onnxruntime" in repr(sess)
    np.testing.assert_allclose(
        out["pooled"], unirt.Session(model, backend="onnxruntime").run(x)["pooled"], rtol=1e-4, atol=1e-6
    )
    (record,) = files(own_cache)
    assert json.loads(record.read_text())["reference"] == "onnxruntime"
    # the second Session pays nothing: verified at load from the cache, the reference never loads
    from unirt.conversion import frontend

    def no_reference(*a, **k):
        raise AssertionError("the reference ran again")

    monkeypatch.setattr(frontend.FrontendCheck, "run", no_reference)
    second = unirt.Session(model, backend="openvino")
    assert second.verification.verified and second.verification.cached and second._frontend is None
    second.run(x)


def test_opting_out_is_one_option(tmp_path, own_cache):
    model = unirt.testing.models.batched_cnn(tmp_path / "cnn.onnx")
    sess = unirt.Session(model, backend="openvino", backend_options={"conversion": {"verify": False}})
    sess.run(np.zeros((1, 3, 32, 32), np.float32))
    assert sess.verification.state == "off" and "not verified (verify=False)" in repr(sess)
    assert not files(own_cache)
    with pytest.raises(unirt.UnsupportedOptionError, match="unknown key"):
        unirt.Session(model, backend="openvino", backend_options={"conversion": {"verfy": False}})


def test_run_many_verifies_on_the_first_request(tmp_path):
    model = dynamic_quant(tmp_path / "dq.onnx")
    sess = unirt.Session(model, backend="openvino")
    with pytest.raises(FrontendMismatchError):
        sess.run_many([{"x": symmetric_input()}])


def test_explain_and_fastest_name_the_frontend(tmp_path):
    model = unirt.testing.models.batched_cnn(tmp_path / "cnn.onnx")
    text = str(unirt.explain(model))
    assert "openvino" in text and "reads onnx through its frontend" in text
    assert "onnxruntime  chosen   reads onnx, runs on" in text  # the owner reads it as it is


def test_the_plugin_contract_declares_owned_formats():
    ov, ort = registry.get_backend("openvino"), registry.get_backend("onnxruntime")
    assert ov.owns(unirt.ModelFormat.OPENVINO) and not ov.owns(unirt.ModelFormat.ONNX)
    assert ort.owns(unirt.ModelFormat.ONNX) and ort.native_formats is None


@pytest.mark.skipif(not _usable("tflite"), reason="needs the tflite backend (ai-edge-litert)")
def test_tflite_on_openvino_is_verified_against_litert(tmp_path, own_cache):
    from unirt.testing.tflite import build_tflite

    model = build_tflite("dynamic_mlp", tmp_path)
    sess = unirt.Session(model, backend="openvino")
    assert sess.verification.reference == "tflite"
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    out = sess.run(x)
    assert sess.verification.verified and sess.verification.verified_on == "the first run's inputs (x: 3x8)"
    ref = unirt.Session(model, backend="tflite").run(x)
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-4, atol=1e-6)
    assert "frontend='tflite' (verified against tflite" in repr(sess)


def test_cli_flags_reach_the_check(tmp_path, capsys):
    model = dynamic_quant(tmp_path / "dq.onnx")
    np.save(tmp_path / "x.npy", symmetric_input())
    args = ["run", str(model), "--backend", "openvino", "--input", f"x={tmp_path / 'x.npy'}", "--iterations", "1"]
    assert main(args) == 2
    assert "FrontendMismatchError" in capsys.readouterr().err
    assert main(args + ["--accept"]) == 0
    assert "frontend: onnx read by openvino's frontend: ACCEPTED against onnxruntime" in capsys.readouterr().out
    assert main(args + ["--tolerance", "10"]) == 0
    assert "verified against onnxruntime" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command", [["run"], ["bench"], ["compare"], ["explain", "--fastest"], ["convert", "--to", "ncnn"]]
)
def test_every_converting_command_takes_tolerance_and_accept(command):
    from unirt.cli import build_parser

    args = build_parser().parse_args([command[0], "m.onnx", *command[1:], "--tolerance", "0.01", "--accept"])
    assert args.tolerance == 0.01 and args.accept is True


def test_a_static_batch_model_run_at_another_batch_is_checked_first(tmp_path):
    """A request of 4 rows on a model fixed at 2 is split by the session: its first run is still checked."""
    model = dynamic_quant(tmp_path / "dq.onnx")
    sess = unirt.Session(model, backend="openvino", batched=True)
    x = np.concatenate([symmetric_input(), symmetric_input()])
    with pytest.raises(FrontendMismatchError, match=r"verified on the first run's inputs \(x: 2x16\)"):
        sess.run(x)
    plain = unirt.testing.models.batched_cnn(tmp_path / "cnn.onnx", batch=1)
    sess = unirt.Session(plain, backend="openvino")
    out = sess.run(np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))
    assert out["pooled"].shape == (3, 16, 1, 1) and sess.verification.verified
    assert sess.verification.verified_on == "the first run's inputs (x: 1x3x32x32)"


def test_isolated_sessions_are_checked_too(tmp_path):
    model = dynamic_quant(tmp_path / "dq.onnx")
    with unirt.Session(model, backend="openvino", isolate=True) as sess:
        with pytest.raises(FrontendMismatchError):
            sess.run(symmetric_input())


def test_bench_compare_and_fastest_take_the_settings(tmp_path, capsys):
    model = dynamic_quant(tmp_path / "dq.onnx")
    np.savez(tmp_path / "in.npz", x=symmetric_input())
    # compare is itself the check: the frontend's disagreement shows as its numbers (beyond compare's own atol/rtol:
    # exit 1), not as a FrontendMismatchError row; --accept / larger tolerances still pass through
    assert (
        main(
            [
                "compare",
                str(model),
                "--backends",
                "onnxruntime,openvino",
                "--inputs",
                str(tmp_path / "in.npz"),
                "--json",
            ]
        )
        == 1
    )
    report = json.dumps(json.loads(capsys.readouterr().out))
    assert "FrontendMismatchError" not in report and "openvino" in report
    assert (
        main(
            [
                "compare",
                str(model),
                "--backends",
                "onnxruntime,openvino",
                "--inputs",
                str(tmp_path / "in.npz"),
                "--json",
                "--accept",
                "--atol",
                "10",
                "--rtol",
                "1",
            ]
        )
        == 0
    )
    capsys.readouterr()
    plain = unirt.testing.models.batched_cnn(tmp_path / "cnn.onnx", batch=1)
    assert (
        main(
            [
                "bench",
                str(plain),
                "--backends",
                "openvino",
                "--iterations",
                "2",
                "--warmup",
                "1",
                "--tolerance",
                "0.01",
                "--no-progress",
            ]
        )
        == 0
    )
    with unirt.Session(plain, backend="fastest", backend_options={"conversion": {"tolerance": 1e-2}}) as sess:
        sess.run(np.zeros((1, 3, 32, 32), np.float32))
        if sess.backend == "openvino":
            assert sess.verification.verified and sess.verification.tolerance == 1e-2


def test_concurrent_first_runs_check_once_and_none_returns_unchecked(tmp_path, own_cache, monkeypatch):

    from unirt.conversion import frontend

    model = unirt.testing.models.batched_cnn(tmp_path / "cnn.onnx", batch=1)
    calls = []
    original = frontend.FrontendCheck.run

    def counted(self, *a, **k):
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(frontend.FrontendCheck, "run", counted)
    sess = unirt.Session(model, backend="openvino")
    x = np.ones((1, 3, 32, 32), np.float32)
    seen = []

    def first(_):
        sess.run(x)
        seen.append(sess.verification.state)

    run_concurrently(first, 4)
    assert len(calls) == 1 and seen == ["verified"] * 4
