"""Whether a model is already quantized, read from the file at load: every plugin reports such a model's precision
as int8 whatever was asked, since no engine can un-quantize it (`precision="fp32"` runs the model as it is).

- ONNX: the graph's op types (QuantizeLinear/DequantizeLinear, QLinear*, *Integer, DynamicQuantizeLinear, ONNX
  Runtime's contrib ops), in subgraphs and functions too. A byte search first (C speed, no false negatives: op types
  are stored as plain strings), then a walk of the protobuf to confirm the hits are op types, not tensor names.
- Other formats say it in their own terms, read by their plugins (TFLite int8 tensors with scales, OpenVINO
  FakeQuantize, ncnn int8_scale_term); `quantized_info` words the report the same way for all of them.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from .formats import ModelFile, ModelFormat, _fields

__all__ = ["QUANTIZATION_OPS", "onnx_quantization_ops", "quantized_info", "quantized_precision", "computed_precision"]

#: ONNX op types (default domain and com.microsoft) that carry int8 quantization.
QUANTIZATION_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
    "QGemm",
    "QLinearAdd",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearConcat",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearSoftmax",
    "QAttention",
    "DynamicQuantizeLSTM",
    "QEmbedLayerNormalization",
)
# substrings that every op type above contains one of: a float model is ruled out in a few passes over its bytes
_NEEDLES = (b"uantize", b"QLinear", b"Integer", b"QGemm", b"QAttention", b"QEmbed")
assert all(any(n.decode() in op for n in _NEEDLES) for op in QUANTIZATION_OPS)
_OPS = frozenset(QUANTIZATION_OPS)
# ModelProto.graph = 7, .functions = 25; GraphProto.node = 1; FunctionProto.node = 7; NodeProto.op_type = 4,
# .attribute = 5; AttributeProto.g = 6, .graphs = 11
_MODEL_GRAPH, _MODEL_FUNCTIONS, _GRAPH_NODE, _FUNCTION_NODE, _OP_TYPE, _ATTRIBUTE = 7, 25, 1, 7, 4, 5
_ATTR_GRAPHS = (6, 11)


def _ops_in(buf: memoryview, start: int, end: int, node_field: int, found: set[str]) -> None:
    for number, value in _fields(buf, start, end):
        if number != node_field:
            continue
        for field, part in _fields(buf, *value):
            if field == _OP_TYPE:
                op = bytes(buf[slice(*part)]).decode("utf-8", "replace")
                if op in _OPS:
                    found.add(op)
            elif field == _ATTRIBUTE:
                for attr_field, sub in _fields(buf, *part):
                    if attr_field in _ATTR_GRAPHS:
                        _ops_in(buf, sub[0], sub[1], _GRAPH_NODE, found)


def onnx_quantization_ops(source: bytes | memoryview | Path | str | None) -> tuple[str, ...]:
    """The quantization op types an ONNX model (its bytes or its path) uses, sorted; () for a float model or for
    bytes too damaged to walk (the engine reports those); () for no source (a model without bytes or path)."""
    if source is None:
        return ()
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            try:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    return _scan(mm)
            except ValueError:  # an empty file cannot be mapped
                return ()
    return _scan(source)


def _scan(data: bytes | memoryview | mmap.mmap) -> tuple[str, ...]:
    raw = bytes(data) if isinstance(data, memoryview) else data
    if not any(raw.find(n) >= 0 for n in _NEEDLES):  # the common case: a float model, decided at C speed
        return ()
    buf = memoryview(raw)
    found: set[str] = set()
    try:
        for number, value in _fields(buf, 0, len(buf)):
            if number == _MODEL_GRAPH:
                _ops_in(buf, value[0], value[1], _GRAPH_NODE, found)
            elif number == _MODEL_FUNCTIONS:
                _ops_in(buf, value[0], value[1], _FUNCTION_NODE, found)
    except ValueError:
        return tuple(sorted(found))
    finally:
        buf.release()
    return tuple(sorted(found))


def quantized_info(what: str, engine: str = "") -> str:
    """The precision_info of a quantized model: "int8 (the model is quantized: <what>[; <engine>])"."""
    return f"int8 (the model is quantized: {what}{'; ' + engine if engine else ''})"


def quantized_precision(requested: str, quantized: bool) -> str:
    """The precision a model computes at: int8 when it is quantized (whatever was asked: an engine runs the model's
    quantized parts as they are), else the one requested."""
    return "int8" if quantized else requested


def computed_precision(model: ModelFile, requested: str) -> str:
    """The precision `model` computes at when `requested` is asked: "int8" for a quantized ONNX model, else
    `requested`. What a verification's tolerance follows (a quantized model's answers carry int8 error on every
    engine, and two engines' int8 kernels round differently)."""
    if model.format is not ModelFormat.ONNX:
        return requested
    return quantized_precision(
        requested, bool(onnx_quantization_ops(model.path if model.path is not None else model.data))
    )
