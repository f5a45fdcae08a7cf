"""Small ONNX models whose dynamic dims a conversion must not guess (issue 13 item 2), built with onnx.helper:
a detector with dynamic H/W, a recognizer that works at H=48 only, and a [batch, sequence] model."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(model, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def detector(path: Path, seed: int = 0) -> Path:
    """x float32[1, 3, ?, ?] (anonymous dynamic H, W) -> stride-2 conv, relu, 2x nearest upsample, conv:
    heat float32[1, 2, ?, ?] at the input's size (a text/object detector's shape)."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((8, 3, 3, 3)) / 4).astype(np.float32)
    w2 = (rng.standard_normal((2, 8, 3, 3)) / 4).astype(np.float32)
    x = h.make_tensor_value_info("x", T.FLOAT, [1, 3, None, None])
    y = h.make_tensor_value_info("heat", T.FLOAT, [1, 2, None, None])
    graph = h.make_graph(
        [
            h.make_node("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
            h.make_node("Relu", ["c1"], ["r1"]),
            h.make_node("Resize", ["r1", "", "scales"], ["up"], mode="nearest"),
            h.make_node("Conv", ["up", "W2"], ["heat"], pads=[1, 1, 1, 1]),
        ],
        "detector",
        [x],
        [y],
        [nh.from_array(w1, "W1"), nh.from_array(w2, "W2"), nh.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    return _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), path)


def recognizer(path: Path, seed: int = 0) -> Path:
    """x float32[-1, 3, "?", "?"] (as paddle2onnx writes it) that works at H=48 only: conv to 8 channels, then a
    MatMul over the height with a [48, 16] weight (a CRNN's collapse of the height): float32[N, 8, W, 16]. Any
    other H fails in every engine, a 224 guess included."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 3, 3, 3)) / 4).astype(np.float32)
    m = (rng.standard_normal((48, 16)) / 7).astype(np.float32)
    x = h.make_tensor_value_info("x", T.FLOAT, [-1, 3, "?", "?"])
    y = h.make_tensor_value_info("logits", T.FLOAT, [-1, 8, "?", 16])
    graph = h.make_graph(
        [
            h.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
            h.make_node("Transpose", ["c"], ["t"], perm=[0, 1, 3, 2]),
            h.make_node("MatMul", ["t", "M"], ["logits"]),
        ],
        "recognizer",
        [x],
        [y],
        [nh.from_array(w, "W"), nh.from_array(m, "M")],
    )
    return _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), path)


def sequence_model(path: Path, seed: int = 0) -> Path:
    """x float32[batch, sequence] -> a 1-D conv of width 5 with no padding (a VAD front end: sequence 1 is too
    short), relu, mean over time: float32[batch, 4]."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 1, 5)) / 2).astype(np.float32)
    graph = h.make_graph(
        [
            h.make_node("Unsqueeze", ["x", "axis"], ["x3"]),
            h.make_node("Conv", ["x3", "W"], ["c"]),
            h.make_node("Relu", ["c"], ["r"]),
            h.make_node("ReduceMean", ["r"], ["score"], axes=[2], keepdims=0),
        ],
        "vad",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", "sequence"])],
        [h.make_tensor_value_info("score", T.FLOAT, ["batch", 4])],
        [nh.from_array(w, "W"), nh.from_array(np.array([1], np.int64), "axis")],
    )
    return _save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8), path)
