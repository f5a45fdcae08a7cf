"""A native .mnn (made by MNN's own converter, no unirt sidecar) whose input has dynamic dims: a detector with
images (1, 3, -1, -1). It must load without being run at made-up sizes (a 1x1 image fails its 3x3 convolutions,
in the load and in the canary's child), report its outputs as of unknown rank until a run shows them, run like
MNN called by hand, and the CLI must ask for the dims rather than guess them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, save

import unirt
from unirt import InputError, LoadOptions, open_model
from unirt.canary import check_loads
from unirt.cli import main
from unirt_mnn.backend import MnnBackend
from unirt_mnn.mnn_file import read_inputs
from unirt_mnn.session import _mnn


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """(ONNX source, native .mnn): two VALID 3x3 convolutions (the first strided), images [1, 3, h, w]."""
    d = tmp_path_factory.mktemp("mnn_native")
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w1"], ["c1"], strides=[2, 2]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["c2"]),
            helper.make_node("Sigmoid", ["c2"], ["heat"]),
        ],
        "detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("heat", TensorProto.FLOAT, [1, 4, "oh", "ow"])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(d / "det.onnx"))
    out = d / "conv"
    out.mkdir()
    converted = MnnBackend().convert(open_model(d / "det.onnx"), out, LoadOptions())
    native = d / "det.mnn"
    shutil.copy(converted.path, native)  # alone: no sidecar beside it
    return d / "det.onnx", native


def by_hand(path, x):
    F, nn = _mnn()
    module = nn.load_module_from_file(str(path), [], [])
    (out,) = module.forward([F.const(x, list(x.shape), F.NCHW, F.float)])
    return np.array(out.read(), copy=True)


def test_the_file_has_dynamic_dims(detector):
    _, native = detector
    (spec,) = read_inputs(native.read_bytes())
    assert spec.dims == (1, 3, -1, -1)


def test_loads_without_a_run_at_made_up_shapes_and_runs_like_mnn_by_hand(detector):
    source, native = detector
    sess = unirt.Session(native, backend="mnn")  # the canary's child loads it too (a fresh cache per test run)
    # MNN's converter writes the source's dynamic batch as 1 in a file that leaves other dims open: read as dynamic
    assert sess.inputs[0].shape == (None, 3, None, None)
    assert sess.outputs[0].name == "heat" and sess.outputs[0].shape is None and "unknown rank" in repr(sess)
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 48)).astype(np.float32)
    got = sess.run({"images": x})["heat"]
    np.testing.assert_allclose(got, by_hand(native, x), rtol=1e-5, atol=1e-6)
    (ref,) = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"images": x})
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert sess.outputs[0].shape == (1, 4, 29, 21)  # what the run showed
    y = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(sess.run({"images": y})["heat"], by_hand(native, y), rtol=1e-5, atol=1e-6)
    assert sess.outputs[0].shape == (1, 4, None, None)  # the dims that varied are dynamic
    out = {"heat": np.empty((1, 4, 13, 13), np.float32)}
    assert sess.run({"images": y}, out=out)["heat"] is out["heat"]
    # batch 2 (this source fixes batch 1, which the file cannot tell from a dynamic batch): as MNN by hand runs it,
    # and row by row what ONNX Runtime gives
    z = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    got2 = sess.run({"images": z})["heat"]
    np.testing.assert_allclose(got2, by_hand(native, z), rtol=1e-5, atol=1e-6)
    ort_sess = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    rows = np.concatenate([ort_sess.run(None, {"images": z[i : i + 1]})[0] for i in range(2)])
    np.testing.assert_allclose(got2, rows, rtol=1e-4, atol=1e-5)


def test_the_canary_loads_it_without_running_it(detector, tmp_path, monkeypatch):
    _, native = detector
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    options = LoadOptions()
    check_loads(open_model(native), "mnn", "test", options)  # no ModelLoadError: the child did not run it at 1x1
    assert len(list((tmp_path / "cache" / "canary").iterdir())) == 1


def test_unirt_run_asks_for_the_dims_the_file_lacks(detector, capsys):
    _, native = detector
    assert main(["run", str(native), "--backend", "mnn", "--iterations", "0"]) == 2
    err = capsys.readouterr().err
    assert "input 'images'" in err and "--shape images:1x3x<d2>x<d3>" in err
    assert (
        main(["run", str(native), "--backend", "mnn", "--iterations", "0", "--shape", "images=1x3x40x40", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["outputs"][0]["shape"] == [1, 4, 17, 17]
    with pytest.raises(InputError, match="images"):
        unirt.Session(native, backend="mnn").run({"images": np.zeros((1, 3, 40), np.float32)})
