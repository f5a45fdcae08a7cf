"""Regenerate the small models shipped in examples/models (needs `pip install onnx`)."""

from pathlib import Path

import numpy as np

from unirt.testing import dynamic_mlp

HERE = Path(__file__).parent / "models"


def _save(model, path: Path) -> Path:
    import onnx

    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def detector(path: Path, size: int = 256) -> Path:
    """images float32[N, 3, size, size] in 0..1 -> heatmap float32[N, 1, size/2, size/2]: how bright each 2x2
    patch is, squashed to 0..1 (a stand-in for a real detector's centre heatmap)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    luma = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)
    graph = h.make_graph(
        [
            h.make_node("Conv", ["images", "luma"], ["gray"]),
            h.make_node("AveragePool", ["gray"], ["cells"], kernel_shape=[2, 2], strides=[2, 2]),
            h.make_node("Sub", ["cells", "half"], ["centered"]),
            h.make_node("Mul", ["centered", "gain"], ["logits"]),
            h.make_node("Sigmoid", ["logits"], ["heatmap"]),
        ],
        "detector",
        [h.make_tensor_value_info("images", T.FLOAT, ["N", 3, size, size])],
        [h.make_tensor_value_info("heatmap", T.FLOAT, ["N", 1, size // 2, size // 2])],
        [
            nh.from_array(luma, "luma"),
            nh.from_array(np.array(0.5, np.float32), "half"),
            nh.from_array(np.array(20.0, np.float32), "gain"),
        ],
    )
    return _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)


def recognizer(path: Path, crop: int = 64, classes: int = 10, seed: int = 7) -> Path:
    """crops float32[M, 3, crop, crop] -> mask float32[M, 1, crop, crop] (a per-pixel sigmoid) and probs
    float32[M, classes] (conv, relu, global pool, linear, softmax); random weights: a stand-in for a real one."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32)
    m = (rng.standard_normal((1, 16, 1, 1)) / 4).astype(np.float32)
    fc = (rng.standard_normal((16, classes)) * 2).astype(np.float32)
    graph = h.make_graph(
        [
            h.make_node("Conv", ["crops", "w"], ["conv"], pads=[1, 1, 1, 1]),
            h.make_node("Relu", ["conv"], ["act"]),
            h.make_node("Conv", ["act", "m"], ["mask_logits"]),
            h.make_node("Sigmoid", ["mask_logits"], ["mask"]),
            h.make_node("GlobalAveragePool", ["act"], ["pooled"]),
            h.make_node("Flatten", ["pooled"], ["flat"]),
            h.make_node("MatMul", ["flat", "fc"], ["logits"]),
            h.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "recognizer",
        [h.make_tensor_value_info("crops", T.FLOAT, ["M", 3, crop, crop])],
        [
            h.make_tensor_value_info("mask", T.FLOAT, ["M", 1, crop, crop]),
            h.make_tensor_value_info("probs", T.FLOAT, ["M", classes]),
        ],
        [nh.from_array(w, "w"), nh.from_array(m, "m"), nh.from_array(fc, "fc")],
    )
    return _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    # A 4-feature, 3-class classifier with a dynamic batch dim "N": outputs logits and softmax probabilities.
    print(dynamic_mlp(HERE / "classifier.onnx", features=4, classes=3, seed=42))
    print(detector(HERE / "detector.onnx"))
    print(recognizer(HERE / "recognizer.onnx"))
