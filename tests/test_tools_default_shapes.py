"""The shapes the CLI tools make random inputs at (`unirt.tools.inputs.default_shapes`): a dynamic dim takes the
size the user gave, else the size the model file carries (ONNX metadata, a constant in the graph, a TFLite file's
shape, a conversion record), else 1 where it is a batch; any other dim is refused with the dims to give and the
`--shape name:DIMS` that gives them. Never a silent 1 (a detector at 1x1, a VAD at one sample)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from unirt import InputError, Session
from unirt.cli import main
from unirt.tools import bench, compare
from unirt.tools.inputs import default_shapes, random_feeds
from unirt.tools.model_shapes import carried_shapes


def _save(graph, path, metadata=None):
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        h.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def detector(path, metadata=None, dims=("batch", 3, "height", "width")):
    """A 3x3 conv detector head, images float32[batch, 3, height, width] -> scores [batch, 4, height, width]."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("Conv", ["images", "w"], ["scores"], pads=[1, 1, 1, 1])],
        "det",
        [h.make_tensor_value_info("images", T.FLOAT, list(dims))],
        [h.make_tensor_value_info("scores", T.FLOAT, [dims[0], 4, dims[2], dims[3]])],
        [nh.from_array(w, "w")],
    )
    return _save(graph, path, metadata)


def vad(path):
    """audio float32[batch, samples] -> speech float32[batch, 1]: nothing in the file sizes `samples`."""
    graph = h.make_graph(
        [h.make_node("ReduceMean", ["audio"], ["speech"], axes=[1], keepdims=1)],
        "vad",
        [h.make_tensor_value_info("audio", T.FLOAT, ["batch", "samples"])],
        [h.make_tensor_value_info("speech", T.FLOAT, ["batch", 1])],
    )
    return _save(graph, path)


def ort_run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_ultralytics_metadata_sizes_the_image(tmp_path):
    # what ultralytics' exporter writes: str() of each value
    path = detector(tmp_path / "det.onnx", {"imgsz": "[64, 96]", "batch": "1", "stride": "32", "task": "detect"})
    sess = Session(path, backend="onnxruntime")
    sources: dict[str, str] = {}
    shapes = default_shapes(sess.inputs, model=path, sources=sources)
    assert shapes == {"images": (1, 3, 64, 96)} and sources == {"images": "the model's metadata"}
    feeds = random_feeds(sess.inputs, shapes)
    np.testing.assert_allclose(sess.run(feeds)["scores"], ort_run(path, feeds)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "key,value,want",
    [
        ("input_shape", "[1, 3, 48, 160]", (1, 3, 48, 160)),
        ("input_shape", "1x3x48x160", (1, 3, 48, 160)),
        ("input_shapes", json.dumps({"images": [2, 3, 40, 40]}), (2, 3, 40, 40)),
        ("images_shape", "(1, 3, 32, 64)", (1, 3, 32, 64)),
        ("image_size", "224", (1, 3, 224, 224)),
        ("input_size", "[-1, 3, 48, -1]", None),  # a 4-list is not H and W; a whole shape with -1s leaves them open
    ],
)
def test_metadata_spellings(tmp_path, key, value, want):
    path = detector(tmp_path / "det.onnx", {key: value})
    inputs = Session(path, backend="onnxruntime").inputs
    if want is None:
        with pytest.raises(InputError, match="height"):
            default_shapes(inputs, model=path)
    else:
        assert default_shapes(inputs, model=path) == {"images": want}


def test_nhwc_image_size_goes_to_h_and_w(tmp_path):
    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["y"])],
        "nhwc",
        [h.make_tensor_value_info("x", T.FLOAT, ["n", "h", "w", 3])],
        [h.make_tensor_value_info("y", T.FLOAT, ["n", "h", "w", 3])],
    )
    path = _save(graph, tmp_path / "nhwc.onnx", {"imgsz": "[32, 48]"})
    assert default_shapes(Session(path, backend="onnxruntime").inputs, model=path) == {"x": (1, 32, 48, 3)}


def test_without_a_carried_size_it_refuses_naming_the_dims_and_the_option(tmp_path):
    path = detector(tmp_path / "det.onnx")
    inputs = Session(path, backend="onnxruntime").inputs
    with pytest.raises(InputError) as err:
        default_shapes(inputs, model=path)
    text = str(err.value)
    assert "input 'images'" in text and "dims 2 ('height'), 3 ('width')" in text
    assert "--shape images:1x3x<height>x<width>" in text
    # what the user gives wins; the batch dim alone defaults to 1
    assert default_shapes(inputs, {"images": (1, 3, 32, 32)}, model=path) == {"images": (1, 3, 32, 32)}
    # a user's shape beats the metadata
    tagged = detector(tmp_path / "tagged.onnx", {"imgsz": "64"})
    assert default_shapes(inputs, {"images": (2, 3, 16, 16)}, model=tagged) == {"images": (2, 3, 16, 16)}


def test_a_sequence_dim_is_not_a_batch(tmp_path):
    path = vad(tmp_path / "vad.onnx")
    with pytest.raises(InputError, match=r"dim 1 \('samples'\).*--shape audio:1x<samples>"):
        default_shapes(Session(path, backend="onnxruntime").inputs, model=path)


def test_dims_the_graph_fixes_with_constants(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 4)).astype(np.float32)
    k = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal((1, 5, 1)).astype(np.float32)
    graph = h.make_graph(
        [
            h.make_node("MatMul", ["feat", "w"], ["proj"]),  # feat's last dim: 16
            h.make_node("Conv", ["img", "k"], ["conv"]),  # img's channels: 3
            h.make_node("Add", ["seq", "bias"], ["shifted"]),  # seq's dim 1 broadcasts against 5
            h.make_node("Reshape", ["flat", "to"], ["frames"]),
        ],  # flat [1, ?] -> [1, 4, 100]: 400
        "implied",
        [
            h.make_tensor_value_info("feat", T.FLOAT, ["n", "d"]),
            h.make_tensor_value_info("img", T.FLOAT, ["n", "c", 8, 8]),
            h.make_tensor_value_info("seq", T.FLOAT, ["n", "t", 7]),
            h.make_tensor_value_info("flat", T.FLOAT, [1, "len"]),
        ],
        [
            h.make_tensor_value_info("proj", T.FLOAT, ["n", 4]),
            h.make_tensor_value_info("conv", T.FLOAT, ["n", 8, 6, 6]),
            h.make_tensor_value_info("shifted", T.FLOAT, ["n", 5, 7]),
            h.make_tensor_value_info("frames", T.FLOAT, [1, 4, 100]),
        ],
        [
            nh.from_array(w, "w"),
            nh.from_array(k, "k"),
            nh.from_array(bias, "bias"),
            nh.from_array(np.array([1, 4, 100], np.int64), "to"),
        ],
    )
    path = _save(graph, tmp_path / "implied.onnx")
    sess = Session(path, backend="onnxruntime")
    shapes = default_shapes(sess.inputs, model=path)
    assert shapes == {"feat": (1, 16), "img": (1, 3, 8, 8), "seq": (1, 5, 7), "flat": (1, 400)}
    assert carried_shapes(path, sess.inputs)["flat"] == ((1, 400), "the model's graph")
    feeds = random_feeds(sess.inputs, shapes)
    for got, want in zip(sess.run(feeds).values(), ort_run(path, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_tflite_file_shape_sizes_a_dynamic_dim_unless_it_is_the_placeholder(tmp_path):
    from unirt.testing.tflite import TFLiteGraph, _options

    def mul2(path, file_shape):
        g = TFLiteGraph()
        x = g.tensor("audio", [None, None], np.float32)
        g.tensors[x].shape = list(file_shape)  # what a converter given a concrete shape writes
        two = g.tensor("two", [], np.float32, np.array(2.0, np.float32))
        y = g.tensor("y", [None, None], np.float32)
        g.op("MUL", [x, two], [y], _options("MulOptionsT"))
        g.inputs, g.outputs = [x], [y]
        return g.save(path)

    sized = mul2(tmp_path / "sized.tflite", [1, 160])
    sess = Session(sized, backend="tflite")
    assert default_shapes(sess.inputs, model=sized) == {"audio": (1, 160)}
    placeholder = mul2(tmp_path / "placeholder.tflite", [1, 1])
    with pytest.raises(InputError, match=r"--shape audio:1x<d1>"):
        default_shapes(Session(placeholder, backend="tflite").inputs, model=placeholder)


def test_unirt_run_uses_the_carried_shape_and_says_so(tmp_path, capsys):
    path = detector(tmp_path / "det.onnx", {"imgsz": "[32, 48]"})
    out = tmp_path / "out.npz"
    assert (
        main(["run", str(path), "--backend", "onnxruntime", "--iterations", "0", "--json", "--save-outputs", str(out)])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"][0]["shape"] == [1, 3, 32, 48]
    assert report["inputs"][0]["source"] == "random, sized by the model's metadata"
    with np.load(out) as saved:
        assert saved["scores"].shape == (1, 4, 32, 48)


def test_unirt_run_bench_compare_refuse_a_dim_nothing_sizes(tmp_path, capsys):
    path = vad(tmp_path / "vad.onnx")
    assert main(["run", str(path), "--backend", "onnxruntime", "--iterations", "0"]) == 2
    assert "--shape audio:1x<samples>" in capsys.readouterr().err
    with pytest.raises(InputError, match="samples"):
        bench(path, backends=["onnxruntime"], iterations=1, warmup=0)
    with pytest.raises(InputError, match="samples"):
        compare(path, backends=["openvino"], reference="onnxruntime")
    report = compare(path, backends=["openvino"], reference="onnxruntime", shapes="audio:2x400")
    assert report.shapes == {"audio": [2, 400]}


def test_info_takes_the_sizes_the_model_carries(tmp_path):
    from unirt.tools import info

    tagged = detector(tmp_path / "tagged.onnx", {"imgsz": "[64, 96]", "batch": "1"})
    report = info(tagged)  # no --shapes needed: ultralytics' metadata sizes every dynamic dim
    assert report.inputs[0].resolved == [1, 3, 64, 96] and report.outputs[0].resolved == [1, 4, 64, 96]
    assert report.flops_by_op == info(tagged, "images:1x3x64x96").flops_by_op and report.flops_by_op["Conv"] > 0
    assert info(tagged, "images:2x3x32x32").inputs[0].resolved == [2, 3, 32, 32]
    with pytest.raises(InputError, match=r"dim 0 \('batch'\) is dynamic"):
        info(detector(tmp_path / "det.onnx"))  # info never guesses, not even a batch of 1
