"""Real-size CNNs built with `onnx.helper` (random He-scaled weights), for precision measurements: a ResNet-18-like
classifier and a MobileNet-v2-like classifier at 224x224, and a 320x320 single-stage detector with three heads.
Their compute and memory traffic are those of the real networks (ResNet-18 ~1.8 GFLOPs, MobileNet-v2 ~0.3
GFLOPs), which is what decides whether a reduced precision is faster; their weights are not trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["REALSIZE_MODELS", "build_realsize", "resnet_like", "mobilenet_like", "detector_like"]


class _Graph:
    """A tiny graph builder: conv/relu/add/... append nodes and initializers, `save` writes the model."""

    def __init__(self, seed: int) -> None:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        self.onnx, self.T, self.h, self.nh = onnx, TensorProto, helper, numpy_helper
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1, relu: bool = True) -> str:
        fan_in = cin // group * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.05).astype(np.float32)
        name = self._name("conv")
        self.inits += [self.nh.from_array(w, name + "_w"), self.nh.from_array(b, name + "_b")]
        self.nodes.append(self.h.make_node("Conv", [x, name + "_w", name + "_b"], [name], kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4, group=group))
        return self.relu(name) if relu else name

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        name = self._name(kind.lower())
        self.nodes.append(self.h.make_node(kind, inputs, [name], **attrs))
        return name

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def gemm(self, x: str, cin: int, cout: int) -> str:
        w = (self.rng.standard_normal((cout, cin)) * np.sqrt(1.0 / cin)).astype(np.float32)
        b = np.zeros(cout, np.float32)
        name = self._name("fc")
        self.inits += [self.nh.from_array(w, name + "_w"), self.nh.from_array(b, name + "_b")]
        self.nodes.append(self.h.make_node("Gemm", [x, name + "_w", name + "_b"], [name], transB=1))
        return name

    def save(self, path: Path, name: str, size: int, outputs: list[tuple[str, list[int]]]) -> Path:
        h, T = self.h, self.T
        graph = h.make_graph(self.nodes, name, [h.make_tensor_value_info("input", T.FLOAT, [1, 3, size, size])],
                             [h.make_tensor_value_info(o, T.FLOAT, shape) for o, shape in outputs], self.inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
        model.ir_version = 8
        self.onnx.checker.check_model(model)
        self.onnx.save(model, str(path))
        return path


def resnet_like(path: Path, size: int = 224, classes: int = 1000, seed: int = 0) -> Path:
    """ResNet-18's layout (7x7 stem, 4 stages of 2 basic blocks, 64..512 channels), input [1, 3, 224, 224] ->
    logits [1, 1000]."""
    g = _Graph(seed)
    x = g.conv("input", 3, 64, k=7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = g.conv(x, cin, cout, stride=stride)
            y = g.conv(y, cout, cout, relu=False)
            short = g.conv(x, cin, cout, k=1, stride=stride, relu=False) if (stride != 1 or cin != cout) else x
            x = g.relu(g.op("Add", [y, short]))
            cin = cout
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    logits = g.gemm(x, 512, classes)
    g.nodes[-1].output[0] = "logits"
    return g.save(path, "resnet_like", size, [("logits", [1, classes])])


def mobilenet_like(path: Path, size: int = 224, classes: int = 1000, seed: int = 0) -> Path:
    """MobileNet-v2's inverted residual layout (expansion 6, depthwise 3x3), input [1, 3, 224, 224] -> logits
    [1, 1000]."""
    g = _Graph(seed)
    x = g.conv("input", 3, 32, stride=2)
    cin = 32
    # (expansion, channels, repeats, stride) as in MobileNet-v2
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)):
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = g.conv(x, cin, hidden, k=1) if t != 1 else x
            y = g.conv(y, hidden, hidden, stride=stride, group=hidden)
            y = g.conv(y, hidden, c, k=1, relu=False)
            x = g.op("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = g.conv(x, cin, 1280, k=1)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.gemm(x, 1280, classes)
    g.nodes[-1].output[0] = "logits"
    return g.save(path, "mobilenet_like", size, [("logits", [1, classes])])


def detector_like(path: Path, size: int = 320, anchors: int = 3, classes: int = 80, seed: int = 0) -> Path:
    """A YOLO-like single-stage detector: a strided CSP-ish backbone to stride 32 and a prediction head at
    strides 8, 16 and 32, input [1, 3, 320, 320] -> three maps [1, anchors*(5+classes), 40|20|10, ...]."""
    g = _Graph(seed)
    x = g.conv("input", 3, 32, stride=2)  # 160
    x = g.conv(x, 32, 64, stride=2)  # 80
    x = g.conv(g.conv(x, 64, 32, k=1), 32, 64)
    feats = []
    cin = 64
    for cout in (128, 256, 512):  # 40, 20, 10
        x = g.conv(x, cin, cout, stride=2)
        for _ in range(2):
            y = g.conv(g.conv(x, cout, cout // 2, k=1), cout // 2, cout, relu=False)
            x = g.relu(g.op("Add", [x, y]))
        feats.append((x, cout))
        cin = cout
    outputs = []
    per = anchors * (5 + classes)
    for i, (f, c) in enumerate(feats):
        y = g.conv(f, c, c)
        g.conv(y, c, per, k=1, relu=False)
        name = f"head{i}"
        g.nodes[-1].output[0] = name
        hw = size // (8 * 2 ** i)
        outputs.append((name, [1, per, hw, hw]))
    return g.save(path, "detector_like", size, outputs)


REALSIZE_MODELS: dict[str, Callable[[Path], Path]] = {
    "resnet_like_224": resnet_like,
    "mobilenet_like_224": mobilenet_like,
    "detector_like_320": detector_like,
}


def build_realsize(name: str, directory: Path | str) -> Path:
    """Build `name` (a key of REALSIZE_MODELS) as `<directory>/<name>.onnx` once and return its path."""
    path = Path(directory) / f"{name}.onnx"
    if not path.exists():
        REALSIZE_MODELS[name](path)
    return path
