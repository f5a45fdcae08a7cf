"""Shapes ncnn files do not record. A native .param made by pnnx (no unirt sidecar) writes its Input layers with no
shape and records no output shapes: unirt reports what the file fixes (the channels a Convolution's weights imply)
and leaves the rest unknown (untied dims; outputs of unknown rank until a run shows them), and runs it like
ncnn.Net by hand. A converted model's outputs keep the ONNX output's rank, also where dim 0 is not a batch."""

from __future__ import annotations

import shutil

import ncnn
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, save

import unirt
from unirt import InputError, LoadOptions, open_model
from unirt.cli import main
from unirt_ncnn.backend import NcnnBackend


def _save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def ort_run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def by_hand(param, blob_in, x, blob_out="out0"):
    """ncnn's own way, in fp32: one sample (ncnn has no batch dim)."""
    net = ncnn.Net()
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    assert net.load_param(str(param)) == 0 and net.load_model(str(param.with_suffix(".bin"))) == 0
    ex = net.create_extractor()
    sample = np.ascontiguousarray(x)
    ex.input(blob_in, ncnn.Mat(sample))
    code, out = ex.extract(blob_out)
    assert code == 0
    return np.array(out)


@pytest.fixture(scope="module")
def native_detector(tmp_path_factory):
    d = tmp_path_factory.mktemp("ncnn_native")
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w1"], ["c1"], strides=[2, 2]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["c2"]),
            helper.make_node("Sigmoid", ["c2"], ["heat"]),
            helper.make_node("Flatten", ["heat"], ["flat"], axis=2),
        ],  # [1, 4, oh*ow]: rank 3
        "detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, [1, 4, "n"])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    source = _save(graph, d / "det.onnx")
    out = d / "conv"
    out.mkdir()
    conv = NcnnBackend().convert(
        open_model(source), out, LoadOptions(backend_options={"input_shapes": {"images": [1, 3, 64, 48]}})
    )
    param = d / "det.param"
    shutil.copy(conv.path, param)  # alone: no sidecar beside it
    shutil.copy(conv.path.with_suffix(".bin"), d / "det.bin")
    return source, param


def test_pnnx_writes_no_input_shape(native_detector):
    _, param = native_detector
    assert any(line.split()[:2] == ["Input", "in0"] and "=" not in line for line in param.read_text().splitlines())


def test_native_param_reports_unknown_as_unknown_and_records_the_run(native_detector):
    source, param = native_detector
    sess = unirt.Session(param, backend="ncnn")
    assert sess.inputs[0].shape == ("N", 3, None, None)  # channels from the Convolution's weights
    assert sess.outputs[0].shape is None  # not a rank copied from the input
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 48)).astype(np.float32)
    got = sess.run({"in0": x})["out0"]
    mine = by_hand(param, "in0", x[0])
    assert got.shape == (1,) + mine.shape  # ncnn's own rank, one sample per row
    np.testing.assert_allclose(got[0], mine, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.reshape(-1), ort_run(source, {"images": x})[0].reshape(-1), rtol=1e-4, atol=1e-5)
    assert sess.outputs[0].shape == got.shape and sess.outputs[0].rank == 1 + mine.ndim
    with pytest.raises(InputError, match="dim 1"):  # a 1-channel image no longer passes silently
        sess.run({"in0": np.zeros((1, 1, 1, 1), np.float32)})


def test_unirt_run_asks_for_the_native_dims(native_detector, capsys):
    _, param = native_detector
    assert main(["run", str(param), "--backend", "ncnn", "--iterations", "0"]) == 2
    assert "--shape in0:1x3x<d2>x<d3>" in capsys.readouterr().err


def test_an_output_whose_dim_0_is_not_a_batch_keeps_the_onnx_rank(tmp_path):
    """x [N, 16] -> MatMul -> Reshape to [28, 1, 16]: dim 0 of the output is not the batch, and no batch dim is
    added to it (as ncnn would, run sample by sample: [1, 28, 1, 16])."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 28 * 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Reshape", ["xw", "to"], ["y"])],
        "r3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [28, 1, 16])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([28, 1, 16], np.int64), "to")],
    )
    source = _save(graph, tmp_path / "r3.onnx")
    sess = unirt.Session(source, backend="ncnn", backend_options={"conversion": {"input_shapes": {"x": [1, 16]}}})
    assert sess.outputs[0].shape == (28, 1, 16)
    x = rng.standard_normal((1, 16)).astype(np.float32)
    got = sess.run({"x": x})["y"]
    (ref,) = ort_run(source, {"x": x})
    assert got.shape == ref.shape == (28, 1, 16)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    mine = by_hand(sess.conversion.path, "in0", x[0])
    np.testing.assert_allclose(got.reshape(mine.shape), mine, rtol=1e-5, atol=1e-6)


def test_serve_asks_for_the_dims_of_outputs_the_file_has_no_shape_for(native_detector):
    from unirt.serve.config import ConfigError, build_spec, parse_config_text

    _, param = native_detector
    sess = unirt.Session(param, backend="ncnn")
    with pytest.raises(ConfigError, match="no shape in the model file.*config.pbtxt"):
        build_spec(parse_config_text(""), "det", sess.inputs, sess.outputs, "ncnn")
    text = (
        'input [{ name: "in0" data_type: TYPE_FP32 dims: [1, 3, -1, -1] }] '
        'output [{ name: "out0" data_type: TYPE_FP32 dims: [1, 4, -1] }]'
    )
    spec = build_spec(parse_config_text(text), "det", sess.inputs, sess.outputs, "ncnn")
    assert [t.name for t in spec.outputs] == ["out0"]


def test_batched_true_batches_a_native_model_whose_outputs_have_no_shape_yet(native_detector):
    _, param = native_detector
    assert not unirt.Session(param, backend="ncnn").batch.batched  # nothing says dim 0 of the output is a batch
    sess = unirt.Session(param, backend="ncnn", batched=True)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, 3, 64, 48)).astype(np.float32) for _ in range(3)]
    together = sess.run_many([{"in0": x} for x in xs])
    for x, got in zip(xs, together):
        np.testing.assert_array_equal(got["out0"], sess.run({"in0": x})["out0"])
        np.testing.assert_allclose(got["out0"][0], by_hand(param, "in0", x[0]), rtol=1e-5, atol=1e-6)
