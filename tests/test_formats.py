from __future__ import annotations

import pytest
from formats_samples import mnn_bytes, tensorrt_bytes, tflite_bytes, write_ncnn, write_openvino

import unirt
from unirt import ModelFormat, ModelFormatError, ModelLoadError, detect_format, open_model


def test_onnx_detected_by_content_whatever_the_suffix(model, tmp_path):
    data = model("dynamic_mlp").read_bytes()
    renamed = tmp_path / "weights.dat"
    renamed.write_bytes(data)
    m = open_model(renamed)
    assert m.format is ModelFormat.ONNX and m.files == (renamed,) and m.size == len(data)
    assert detect_format(data)[0] is ModelFormat.ONNX


def test_onnx_from_bytes(model):
    data = model("matmul_relu").read_bytes()
    m = open_model(data)
    assert m.format is ModelFormat.ONNX and m.path is None and m.read_bytes() == data


@pytest.mark.parametrize("cut", [1, 2, 10, 100, -1])
def test_truncated_onnx_is_a_load_error_naming_the_format(model, tmp_path, cut):
    data = model("matmul_relu").read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelLoadError, match="onnx") as err:
        open_model(path)
    assert str(path) in str(err.value)


def test_tflite_by_identifier(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(tflite_bytes())
    assert open_model(path).format is ModelFormat.TFLITE


def test_truncated_tflite(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite_bytes()[:30])
    with pytest.raises(ModelLoadError, match="tflite"):
        open_model(path)


def test_mnn_by_structure(tmp_path):
    path = tmp_path / "model.mnn"
    path.write_bytes(mnn_bytes())
    assert open_model(path).format is ModelFormat.MNN
    path2 = tmp_path / "noext"
    path2.write_bytes(mnn_bytes())
    assert open_model(path2).format is ModelFormat.MNN


def test_openvino_ir_with_weights(tmp_path):
    xml = write_openvino(tmp_path)
    m = open_model(xml)
    assert m.format is ModelFormat.OPENVINO
    assert m.files == (xml, tmp_path / "model.bin") and m.companion(".bin") == tmp_path / "model.bin"


def test_openvino_ir_missing_weights(tmp_path):
    xml = write_openvino(tmp_path, with_bin=False)
    with pytest.raises(ModelLoadError, match=r"openvino.*model\.bin is missing"):
        open_model(xml)


def test_ncnn_param(tmp_path):
    param = write_ncnn(tmp_path)
    m = open_model(param)
    assert m.format is ModelFormat.NCNN and m.files == (param, tmp_path / "model.bin")
    assert m.details["param_format"] == "text"


def test_tensorrt_plan(tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(tensorrt_bytes())
    assert open_model(path).format is ModelFormat.TENSORRT
    wrapped = tmp_path / "yolo.engine"  # Ultralytics: [u32 len][json][plan]
    meta = b'{"imgsz": [640, 640]}'
    wrapped.write_bytes(len(meta).to_bytes(4, "little") + meta + tensorrt_bytes())
    m = open_model(wrapped)
    assert m.format is ModelFormat.TENSORRT and m.details["payload_offset"] == 4 + len(meta)


def test_missing_empty_directory_garbage(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model file"):
        open_model(tmp_path / "nope.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty"):
        open_model(empty)
    with pytest.raises(ModelLoadError, match="directory"):
        open_model(tmp_path)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ModelFormatError, match="unrecognised model format"):
        open_model(garbage)
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="suffix says onnx"):
        open_model(fake)
    with pytest.raises(ModelLoadError, match="expected a model path"):
        open_model(123)  # type: ignore[arg-type]


def test_every_error_is_a_unirt_error(tmp_path):
    path = tmp_path / "x.tflite"
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(unirt.UnirtError):
        open_model(path)


def test_onnx_external_data_files_are_part_of_the_model(model, tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    from unirt import testing

    path = testing.with_external_data(model("dynamic_mlp"), tmp_path / "mlp.onnx", location="weights/mlp.data")
    data = tmp_path / "weights" / "mlp.data"
    found = open_model(path)
    assert found.format is ModelFormat.ONNX and found.files == (path, data)
    assert found.details["external_data"] == (data,)
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    expected = unirt.Session(model("dynamic_mlp"), backend="onnxruntime").run(x)["probs"]
    np.testing.assert_allclose(unirt.Session(path, backend="onnxruntime").run(x)["probs"], expected, rtol=1e-6)
    # the bytes alone cannot find the weights; a missing or escaping data file is named
    with pytest.raises(ModelLoadError, match=r"external data files \(weights/mlp.data\): load it from its .onnx path"):
        open_model(path.read_bytes())
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../outside.data"
    onnx.save(proto, str(tmp_path / "escapes.onnx"))
    with pytest.raises(ModelLoadError, match="location '../outside.data' is not a relative path inside"):
        open_model(tmp_path / "escapes.onnx")
    data.rename(tmp_path / "moved.data")
    with pytest.raises(ModelLoadError, match=f"external data file {data} is missing"):
        open_model(path)

    # Constant values kept outside (onnx's convert_attribute), in a subgraph too
    def const(name, value):
        return h.make_node("Constant", [], [name], value=nh.from_array(np.full((4,), value, np.float32), name + "_v"))

    branch = [
        h.make_graph([const(f"{b}c", v)], b, [], [h.make_tensor_value_info(f"{b}c", T.FLOAT, [4])])
        for b, v in (("then", 1.0), ("else", 2.0))
    ]
    graph = h.make_graph(
        [h.make_node("If", ["cond"], ["y"], then_branch=branch[0], else_branch=branch[1])],
        "g",
        [h.make_tensor_value_info("cond", T.BOOL, [])],
        [h.make_tensor_value_info("y", T.FLOAT, [4])],
    )
    onnx.save_model(
        h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]),
        str(tmp_path / "if.onnx"),
        save_as_external_data=True,
        location="if.bin",
        size_threshold=0,
        convert_attribute=True,
    )
    assert open_model(tmp_path / "if.onnx").files == (tmp_path / "if.onnx", tmp_path / "if.bin")
    with unirt.Session(tmp_path / "if.onnx", backend="onnxruntime") as sess:
        assert sess.run({"cond": np.array(False)})["y"].tolist() == [2.0] * 4
