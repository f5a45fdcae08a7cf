"""Test models in the TFLite format, built with the FlatBuffers schema bindings LiteRT ships
(`ai_edge_litert.schema_py_generated`), the way `onnx.helper` builds ONNX models; no TensorFlow needed.

Each ONNX test model in `unirt.testing.models` that TFLite can express has a twin here with the same inputs,
outputs and weights (same seeds), so ONNX Runtime on the ONNX model is the reference for a TFLite backend.
`quantized_add` has int8/uint8 inputs and outputs with scales and zero points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TFLITE_BUILDERS", "build_tflite", "TFLiteGraph", "quantized_add_reference", "QUANTIZED_ADD"]


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("building TFLite test models needs ai-edge-litert (pip install ai-edge-litert)") from exc
    return schema


_NP_TO_TFL = {
    np.dtype(np.float32): "FLOAT32",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int8): "INT8",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.float16): "FLOAT16",
    np.dtype(np.int16): "INT16",
}


@dataclass
class TFLiteGraph:
    """A one-subgraph TFLite model under construction: tensors, constant buffers, operators."""

    schema: Any = field(default_factory=_schema)
    tensors: list = field(default_factory=list)
    buffers: list = field(default_factory=list)
    opcodes: list = field(default_factory=list)
    operators: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.buffers.append(self.schema.BufferT())  # buffer 0: the empty buffer every non-constant tensor uses

    def tensor(
        self,
        name: str,
        shape: list[int | None],
        dtype: Any,
        data: np.ndarray | None = None,
        quant: tuple[float, int] | None = None,
    ) -> int:
        """Add a tensor; None dims are dynamic (shape 1, shape_signature -1). Returns its index."""
        s = self.schema
        t = s.TensorT()
        t.name = name
        t.type = getattr(s.TensorType, _NP_TO_TFL[np.dtype(dtype)])
        t.shape = [1 if d is None else d for d in shape]
        if any(d is None for d in shape):
            t.shapeSignature = [-1 if d is None else d for d in shape]
        t.buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self, builtin: str, inputs: list[int], outputs: list[int], options: Any = None, options_type: str | None = None
    ) -> None:
        s = self.schema
        code = getattr(s.BuiltinOperator, builtin)
        index = next((i for i, c in enumerate(self.opcodes) if c.builtinCode == code), None)
        if index is None:
            oc = s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.opcodes.append(oc)
            index = len(self.opcodes) - 1
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = index, inputs, outputs
        if options is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, options_type or type(options).__name__[:-1])
            o.builtinOptions = options
        self.operators.append(o)

    def save(self, path: Path) -> Path:
        import flatbuffers

        s = self.schema
        sg = s.SubGraphT()
        sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = (
            self.tensors,
            self.inputs,
            self.outputs,
            self.operators,
            "main",
        )
        model = s.ModelT()
        model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [sg], self.buffers, self.opcodes
        model.description = "unirt test model"
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        Path(path).write_bytes(bytes(builder.Output()))
        return Path(path)


def _options(name: str, **fields: Any) -> Any:
    opts = getattr(_schema(), name)()
    for key, value in fields.items():
        setattr(opts, key, value)
    return opts


def matmul_relu(path: Path, n: int = 64, seed: int = 0) -> Path:
    """y = relu(x @ W), x float32[n, n]: FULLY_CONNECTED (weights stored transposed) with a fused RELU."""
    s = _schema()
    w = (np.random.default_rng(seed).standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    g = TFLiteGraph()
    x = g.tensor("x", [n, n], np.float32)
    wt = g.tensor("W", [n, n], np.float32, w.T)
    y = g.tensor("y", [n, n], np.float32)
    g.op(
        "FULLY_CONNECTED",
        [x, wt, -1],
        [y],
        _options("FullyConnectedOptionsT", fusedActivationFunction=s.ActivationFunctionType.RELU),
    )
    g.inputs, g.outputs = [x], [y]
    return g.save(path)


def dynamic_mlp(path: Path, features: int = 8, classes: int = 3, seed: int = 0) -> Path:
    """logits = x @ W + b, probs = softmax(logits), x float32[N, features] with a dynamic batch."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    g = TFLiteGraph()
    x = g.tensor("x", [None, features], np.float32)
    wt = g.tensor("W", [classes, features], np.float32, w.T)
    bt = g.tensor("b", [classes], np.float32, b)
    logits = g.tensor("logits", [None, classes], np.float32)
    probs = g.tensor("probs", [None, classes], np.float32)
    g.op("FULLY_CONNECTED", [x, wt, bt], [logits], _options("FullyConnectedOptionsT"))
    g.op("SOFTMAX", [logits], [probs], _options("SoftmaxOptionsT", beta=1.0))
    g.inputs, g.outputs = [x], [logits, probs]
    return g.save(path)


def multi_io(path: Path) -> Path:
    """a, b float32[N, 4], idx int64[K], scale float32 scalar -> sum = (a + b) * scale, picked = a[idx],
    count = size(idx) int64 scalar, mask = a > b."""
    g = TFLiteGraph()
    a = g.tensor("a", [None, 4], np.float32)
    b = g.tensor("b", [None, 4], np.float32)
    idx = g.tensor("idx", [None], np.int64)
    scale = g.tensor("scale", [], np.float32)
    ab = g.tensor("ab", [None, 4], np.float32)
    total = g.tensor("sum", [None, 4], np.float32)
    picked = g.tensor("picked", [None, 4], np.float32)
    shape = g.tensor("idx_shape", [1], np.int64)
    scalar_shape = g.tensor("scalar_shape", [0], np.int32, np.zeros(0, np.int32))
    count = g.tensor("count", [], np.int64)
    mask = g.tensor("mask", [None, 4], np.bool_)
    g.op("ADD", [a, b], [ab], _options("AddOptionsT"))
    g.op("MUL", [ab, scale], [total], _options("MulOptionsT"))
    g.op("GATHER", [a, idx], [picked], _options("GatherOptionsT", axis=0))
    g.op("SHAPE", [idx], [shape], _options("ShapeOptionsT", outType=_schema().TensorType.INT64))
    g.op("RESHAPE", [shape, scalar_shape], [count], _options("ReshapeOptionsT", newShape=[]))
    g.op("GREATER", [a, b], [mask], _options("GreaterOptionsT"))
    g.inputs, g.outputs = [a, b, idx, scale], [total, picked, count, mask]
    return g.save(path)


def int_ops(path: Path) -> Path:
    """Integer inputs: y = a * b int32[2, 3]; z = float(a) float32[2, 3]."""
    g = TFLiteGraph()
    a = g.tensor("a", [2, 3], np.int32)
    b = g.tensor("b", [2, 3], np.int32)
    y = g.tensor("y", [2, 3], np.int32)
    z = g.tensor("z", [2, 3], np.float32)
    g.op("MUL", [a, b], [y], _options("MulOptionsT"))
    s = _schema()
    g.op("CAST", [a], [z], _options("CastOptionsT", inDataType=s.TensorType.INT32, outDataType=s.TensorType.FLOAT32))
    g.inputs, g.outputs = [a, b], [y, z]
    return g.save(path)


def unknown_dims(path: Path) -> Path:
    """y = x * 2, x float32[?, 3, ?, ?]."""
    g = TFLiteGraph()
    x = g.tensor("x", [None, 3, None, None], np.float32)
    two = g.tensor("two", [], np.float32, np.array(2.0, np.float32))
    y = g.tensor("y", [None, 3, None, None], np.float32)
    g.op("MUL", [x, two], [y], _options("MulOptionsT"))
    g.inputs, g.outputs = [x], [y]
    return g.save(path)


def conv_net(path: Path, size: int = 224, seed: int = 0) -> Path:
    """A small image classifier (NHWC 1 x size x size x 3): four strided 3x3 CONV_2D + RELU6, a 3x3
    DEPTHWISE_CONV_2D, global AVERAGE_POOL_2D, FULLY_CONNECTED to 1000 classes, SOFTMAX. Random weights: a real
    workload for benchmarks, not a test of accuracy."""
    s = _schema()
    rng = np.random.default_rng(seed)
    g = TFLiteGraph()
    x = g.tensor("image", [1, size, size, 3], np.float32)
    g.inputs = [x]
    current, channels, hw = x, 3, size
    for i, out_ch in enumerate((16, 32, 64, 128)):
        w = (rng.standard_normal((out_ch, 3, 3, channels)) / np.sqrt(9 * channels)).astype(np.float32)
        wt = g.tensor(f"conv{i}/w", [out_ch, 3, 3, channels], np.float32, w)
        bt = g.tensor(f"conv{i}/b", [out_ch], np.float32, np.zeros(out_ch, np.float32))
        hw = (hw + 1) // 2
        y = g.tensor(f"conv{i}", [1, hw, hw, out_ch], np.float32)
        g.op(
            "CONV_2D",
            [current, wt, bt],
            [y],
            _options(
                "Conv2DOptionsT",
                padding=s.Padding.SAME,
                strideW=2,
                strideH=2,
                fusedActivationFunction=s.ActivationFunctionType.RELU6,
            ),
        )
        current, channels = y, out_ch
    dw = g.tensor(
        "dw/w", [1, 3, 3, channels], np.float32, (rng.standard_normal((1, 3, 3, channels)) / 3).astype(np.float32)
    )
    db = g.tensor("dw/b", [channels], np.float32, np.zeros(channels, np.float32))
    y = g.tensor("dw", [1, hw, hw, channels], np.float32)
    g.op(
        "DEPTHWISE_CONV_2D",
        [current, dw, db],
        [y],
        _options(
            "DepthwiseConv2DOptionsT",
            padding=s.Padding.SAME,
            strideW=1,
            strideH=1,
            depthMultiplier=1,
            fusedActivationFunction=s.ActivationFunctionType.RELU6,
        ),
    )
    pooled = g.tensor("pool", [1, 1, 1, channels], np.float32)
    g.op(
        "AVERAGE_POOL_2D",
        [y],
        [pooled],
        _options("Pool2DOptionsT", padding=s.Padding.VALID, strideW=1, strideH=1, filterWidth=hw, filterHeight=hw),
    )
    fw = g.tensor(
        "fc/w",
        [1000, channels],
        np.float32,
        (rng.standard_normal((1000, channels)) / np.sqrt(channels)).astype(np.float32),
    )
    fb = g.tensor("fc/b", [1000], np.float32, np.zeros(1000, np.float32))
    logits = g.tensor("logits", [1, 1000], np.float32)
    probs = g.tensor("probs", [1, 1000], np.float32)
    g.op("FULLY_CONNECTED", [pooled, fw, fb], [logits], _options("FullyConnectedOptionsT", keepNumDims=False))
    g.op("SOFTMAX", [logits], [probs], _options("SoftmaxOptionsT", beta=1.0))
    g.outputs = [probs]
    return g.save(path)


#: quantized_add's (scale, zero point) for a, b (int8), sum (int8) and sum_u8 (uint8).
QUANTIZED_ADD = {"a": (0.1, 2), "b": (0.05, -3), "sum": (0.2, 0), "sum_u8": (0.2, 128)}


def quantized_add(path: Path) -> Path:
    """Quantized I/O: a, b int8[N, 4] -> sum int8[N, 4] (requantized ADD) and sum_u8 uint8[N, 4] (QUANTIZE)."""
    q = QUANTIZED_ADD
    g = TFLiteGraph()
    a = g.tensor("a", [None, 4], np.int8, quant=q["a"])
    b = g.tensor("b", [None, 4], np.int8, quant=q["b"])
    total = g.tensor("sum", [None, 4], np.int8, quant=q["sum"])
    total_u8 = g.tensor("sum_u8", [None, 4], np.uint8, quant=q["sum_u8"])
    g.op("ADD", [a, b], [total], _options("AddOptionsT"))
    g.op("QUANTIZE", [total], [total_u8], _options("QuantizeOptionsT"))
    g.inputs, g.outputs = [a, b], [total, total_u8]
    return g.save(path)


def quantized_add_reference(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """What quantized_add computes, in float arithmetic then requantized (TFLite may differ by 1 LSB)."""
    q = QUANTIZED_ADD
    real = q["a"][0] * (a.astype(np.float64) - q["a"][1]) + q["b"][0] * (b.astype(np.float64) - q["b"][1])
    out = np.clip(np.round(real / q["sum"][0]) + q["sum"][1], -128, 127)
    total_real = q["sum"][0] * (out - q["sum"][1])
    u8 = np.clip(np.round(total_real / q["sum_u8"][0]) + q["sum_u8"][1], 0, 255)
    return {"sum": out.astype(np.int8), "sum_u8": u8.astype(np.uint8)}


TFLITE_BUILDERS: dict[str, Callable[[Path], Path]] = {
    "matmul_relu": matmul_relu,
    "dynamic_mlp": dynamic_mlp,
    "multi_io": multi_io,
    "int_ops": int_ops,
    "unknown_dims": unknown_dims,
    "quantized_add": quantized_add,
    "conv_net": conv_net,
}


def build_tflite(name: str, directory: Path | str) -> Path:
    """Build TFLite test model `name` as `<directory>/<name>.tflite` (once) and return its path."""
    path = Path(directory) / f"{name}.tflite"
    if not path.exists():
        TFLITE_BUILDERS[name](path)
    return path
