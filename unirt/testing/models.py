"""Test models built with `onnx.helper` (onnx is a test dependency, imported lazily, never by `import unirt`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["MODEL_BUILDERS", "build", "matmul_relu", "dynamic_mlp", "multi_io", "int_ops", "unknown_dims",
           "string_concat", "conv_net"]


def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def _save(model, path: Path, opset: int = 17) -> Path:
    onnx, _, helper, _ = _onnx()
    model.opset_import[0].version = opset
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def matmul_relu(path: Path, n: int = 64, seed: int = 0) -> Path:
    """y = relu(x @ W): x float32[n, n] (static)."""
    onnx, T, h, nh = _onnx()
    w = (np.random.default_rng(seed).standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    graph = h.make_graph([h.make_node("MatMul", ["x", "W"], ["xw"]), h.make_node("Relu", ["xw"], ["y"])],
                         "matmul_relu", [h.make_tensor_value_info("x", T.FLOAT, [n, n])],
                         [h.make_tensor_value_info("y", T.FLOAT, [n, n])], [nh.from_array(w, "W")])
    return _save(h.make_model(graph), path)


def dynamic_mlp(path: Path, features: int = 8, classes: int = 3, seed: int = 0) -> Path:
    """logits = x @ W + b, probs = softmax(logits): x float32[N, features] with a symbolic batch dim 'N'."""
    onnx, T, h, nh = _onnx()
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("Gemm", ["x", "W", "b"], ["logits"]), h.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "dynamic_mlp", [h.make_tensor_value_info("x", T.FLOAT, ["N", features])],
        [h.make_tensor_value_info("logits", T.FLOAT, ["N", classes]),
         h.make_tensor_value_info("probs", T.FLOAT, ["N", classes])],
        [nh.from_array(w, "W"), nh.from_array(b, "b")])
    return _save(h.make_model(graph), path)


def multi_io(path: Path) -> Path:
    """Several inputs of several dtypes, a scalar input and several outputs.

    a float32[N, 4], b float32[N, 4], idx int64[K], scale float32 scalar ->
    sum = (a + b) * scale  float32[N, 4];  picked = Gather(a, idx) float32[K, 4];  count = Size(idx) int64 scalar;
    mask = a > b  bool[N, 4]
    """
    onnx, T, h, nh = _onnx()
    graph = h.make_graph(
        [h.make_node("Add", ["a", "b"], ["ab"]), h.make_node("Mul", ["ab", "scale"], ["sum"]),
         h.make_node("Gather", ["a", "idx"], ["picked"], axis=0), h.make_node("Size", ["idx"], ["count"]),
         h.make_node("Greater", ["a", "b"], ["mask"])],
        "multi_io",
        [h.make_tensor_value_info("a", T.FLOAT, ["N", 4]), h.make_tensor_value_info("b", T.FLOAT, ["N", 4]),
         h.make_tensor_value_info("idx", T.INT64, ["K"]), h.make_tensor_value_info("scale", T.FLOAT, [])],
        [h.make_tensor_value_info("sum", T.FLOAT, ["N", 4]), h.make_tensor_value_info("picked", T.FLOAT, ["K", 4]),
         h.make_tensor_value_info("count", T.INT64, []), h.make_tensor_value_info("mask", T.BOOL, ["N", 4])])
    return _save(h.make_model(graph), path)


def int_ops(path: Path) -> Path:
    """Integer inputs: y = (a * b) int32[2, 3] (static); z = Cast(a, float32) float32[2, 3]."""
    onnx, T, h, nh = _onnx()
    graph = h.make_graph(
        [h.make_node("Mul", ["a", "b"], ["y"]), h.make_node("Cast", ["a"], ["z"], to=T.FLOAT)],
        "int_ops", [h.make_tensor_value_info("a", T.INT32, [2, 3]), h.make_tensor_value_info("b", T.INT32, [2, 3])],
        [h.make_tensor_value_info("y", T.INT32, [2, 3]), h.make_tensor_value_info("z", T.FLOAT, [2, 3])])
    return _save(h.make_model(graph), path)


def unknown_dims(path: Path) -> Path:
    """A dim with neither a value nor a name (unknown), and a 4-d NCHW input: y = x * 2 float32[?, 3, H, W]."""
    onnx, T, h, nh = _onnx()
    x = h.make_tensor_value_info("x", T.FLOAT, [None, 3, "H", "W"])
    graph = h.make_graph([h.make_node("Mul", ["x", "two"], ["y"])], "unknown_dims", [x],
                         [h.make_tensor_value_info("y", T.FLOAT, [None, 3, "H", "W"])],
                         [nh.from_array(np.array(2.0, np.float32), "two")])
    return _save(h.make_model(graph), path)


def string_concat(path: Path) -> Path:
    """String tensors: y = Identity(s) string[N]."""
    onnx, T, h, nh = _onnx()
    graph = h.make_graph([h.make_node("Identity", ["s"], ["y"])], "strings",
                         [h.make_tensor_value_info("s", T.STRING, ["N"])],
                         [h.make_tensor_value_info("y", T.STRING, ["N"])])
    return _save(h.make_model(graph), path)


def conv_net(path: Path, batch: int | str = "N", channels: int = 16, size: int | None = 32, seed: int = 0) -> Path:
    """A small CNN whose rows are independent: x float32[batch, 3, size, size] ->
    features = relu(conv3x3(x)) float32[batch, channels, size, size], pooled = GlobalAveragePool float32[batch,
    channels, 1, 1]. `batch` is a fixed size (a static-batch model) or a dim name (a dynamic one); `size=None`
    makes the spatial dims dynamic ("H", "W")."""
    onnx, T, h, nh = _onnx()
    hw = [size, size] if size is not None else ["H", "W"]
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((channels, 3, 3, 3)) / 5).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32) / 10
    graph = h.make_graph(
        [h.make_node("Conv", ["x", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
         h.make_node("Relu", ["conv"], ["features"]),
         h.make_node("GlobalAveragePool", ["features"], ["pooled"])],
        "conv_net", [h.make_tensor_value_info("x", T.FLOAT, [batch, 3, *hw])],
        [h.make_tensor_value_info("features", T.FLOAT, [batch, channels, *hw]),
         h.make_tensor_value_info("pooled", T.FLOAT, [batch, channels, 1, 1])],
        [nh.from_array(w, "W"), nh.from_array(b, "B")])
    return _save(h.make_model(graph), path)


MODEL_BUILDERS = {
    "matmul_relu": matmul_relu,
    "dynamic_mlp": dynamic_mlp,
    "multi_io": multi_io,
    "int_ops": int_ops,
    "unknown_dims": unknown_dims,
    "strings": string_concat,
    "conv_dynamic": conv_net,
    "conv_static": lambda path: conv_net(path, batch=4),
}


def build(name: str, directory: Path | str) -> Path:
    """Build test model `name` as `<directory>/<name>.onnx` (once) and return its path."""
    path = Path(directory) / f"{name}.onnx"
    if not path.exists():
        MODEL_BUILDERS[name](path)
    return path
