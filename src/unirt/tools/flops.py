"""FLOP counts per ONNX operator, from the shapes that shape inference found.

Convention: FLOPs = multiplies + adds. A dot product of length K costs K multiplies and K-1
adds; adding a bias is one more add. So a convolution with bias costs 2*H*W*M*C*K*K and without bias
H*W*M*(2*C*K*K - 1) (per image); a fully connected layer with bias 2*M*N*K. Elementwise operators cost one per
output element (transcendental functions included), comparisons count as operations, data movement
(Reshape, Transpose, Gather, Concat, ...) costs nothing. Operators without a rule here are reported as not
counted instead of being guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONVENTION", "NodeShapes", "count_flops", "ZERO_FLOP_OPS"]

CONVENTION = (
    "FLOPs = multiplies + adds (a multiply-accumulate is 2 FLOPs; a length-K dot product is 2K-1, "
    "plus 1 per bias add: conv with bias = 2*H*W*M*C*K*K); elementwise and activation ops 1 per output "
    "element; data movement 0"
)

Shape = tuple[int, ...] | None


@dataclass
class NodeShapes:
    """One node with the static shapes of its inputs and outputs (None where unknown or an absent optional)."""

    op_type: str
    domain: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: list[Shape] = field(default_factory=list)
    outputs: list[Shape] = field(default_factory=list)
    present: list[bool] = field(default_factory=list)  # whether each optional input was given

    def has(self, i: int) -> bool:
        return i < len(self.present) and self.present[i]

    def inp(self, i: int) -> Shape:
        return self.inputs[i] if i < len(self.inputs) else None

    def out(self, i: int = 0) -> Shape:
        return self.outputs[i] if i < len(self.outputs) else None


class _Unknown(Exception):
    """A shape the count needs is not known."""


def _need(shape: Shape) -> tuple[int, ...]:
    if shape is None:
        raise _Unknown
    return shape


def _numel(shape: Shape) -> int:
    return math.prod(_need(shape))


# --- convolution and matrix products -------------------------------------------------------------------------


def _conv(w_index: int, bias_index: int | None) -> Callable[[NodeShapes], int]:
    def count(n: NodeShapes) -> int:
        w, y = _need(n.inp(w_index)), _need(n.out())
        per_output = math.prod(w[1:])  # (C / group) * prod(kernel)
        bias = bias_index is not None and n.has(bias_index)
        return _numel(y) * (2 * per_output - (0 if bias else 1))

    return count


def _conv_transpose(n: NodeShapes) -> int:
    x, w, y = _need(n.inp(0)), _need(n.inp(1)), _need(n.out())
    macs = _numel(x) * math.prod(w[1:])  # every input pixel meets (M / group) * prod(kernel) weights
    return 2 * macs - (0 if n.has(2) else _numel(y))


def _matmul(a_index: int) -> Callable[[NodeShapes], int]:
    def count(n: NodeShapes) -> int:
        a, y = _need(n.inp(a_index)), _need(n.out())
        k = a[-1]
        return _numel(y) * (2 * k - 1)

    return count


def _gemm(n: NodeShapes) -> int:
    a, y = _need(n.inp(0)), _need(n.out())
    k = a[0] if n.attrs.get("transA", 0) else a[1]
    mn = _numel(y)
    flops = mn * (2 * k - 1)
    if float(n.attrs.get("alpha", 1.0)) != 1.0:
        flops += mn
    if n.has(2):
        flops += mn * (2 if float(n.attrs.get("beta", 1.0)) != 1.0 else 1)
    return flops


def _einsum(n: NodeShapes) -> int:
    eq = str(n.attrs.get("equation", "")).replace(" ", "")
    lhs, _, _ = eq.partition("->")
    terms = lhs.split(",")
    if "." in eq or len(terms) != len(n.inputs):
        raise _Unknown
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, n.inputs):
        for letter, dim in zip(term, _need(shape)):
            sizes[letter] = max(sizes.get(letter, 1), dim)
    macs = math.prod(sizes.values())  # one product term per combination of all indices
    return len(terms) * macs - _numel(n.out())  # (n-1) multiplies per term, then sums into each output


# --- attention ----------------------------------------------------------------------------------------------


def _attention_core(b: int, hq: int, s: int, length: int, d: int, dv: int, masked: bool) -> int:
    scores = b * hq * s * length
    return (
        scores * (2 * d - 1)  # Q @ K^T
        + scores  # scaling
        + (scores if masked else 0)
        + 3 * scores  # softmax: exp, sum, divide
        + b * hq * s * dv * (2 * length - 1)
    )  # P @ V


def _attention(n: NodeShapes) -> int:
    """ONNX Attention (opset 23): Q [B,Hq,S,D] or [B,S,Hq*D], K/V [B,Hk,L,D] or [B,L,Hk*D]."""
    q, k, v = _need(n.inp(0)), _need(n.inp(1)), _need(n.inp(2))
    if len(q) == 4:
        b, hq, s, d = q
        length, dv = k[2], v[3]
    else:
        hq = int(n.attrs.get("q_num_heads", 0)) or 1
        hk = int(n.attrs.get("kv_num_heads", 0)) or hq
        b, s, d = q[0], q[1], q[2] // hq
        length, dv = k[1], v[2] // hk
    present = n.out(1)
    if present is not None and len(present) == 4:
        length = present[2]
    elif n.has(4):
        length += _need(n.inp(4))[2]
    return _attention_core(b, hq, s, length, d, dv, n.has(3))


def _ms_multihead_attention(n: NodeShapes) -> int:
    """com.microsoft MultiHeadAttention with separate query [B,S,H*D], key [B,L,H*D], value [B,L,H*Dv]."""
    q, k, v = _need(n.inp(0)), _need(n.inp(1)), _need(n.inp(2))
    if len(q) != 3 or len(k) != 3 or len(v) != 3:
        raise _Unknown
    heads = int(n.attrs.get("num_heads", 1))
    bias = _numel(q) + _numel(k) + _numel(v) if n.has(3) else 0
    return bias + _attention_core(q[0], heads, q[1], k[1], q[2] // heads, v[2] // heads, n.has(4) or n.has(5))


def _ms_attention(n: NodeShapes) -> int:
    """com.microsoft Attention: input [B,S,Hin] @ weights [Hin, 3*H] (+ bias) then multi-head attention."""
    x, w = _need(n.inp(0)), _need(n.inp(1))
    heads = int(n.attrs.get("num_heads", 1))
    b, s, hidden_in = x
    sizes = n.attrs.get("qkv_hidden_sizes") or [w[1] // 3] * 3
    projection = b * s * w[1] * (2 * hidden_in - (0 if n.has(2) else 1))
    return projection + _attention_core(b, heads, s, s, sizes[0] // heads, sizes[2] // heads, n.has(3))


# --- pooling, normalization, reductions, resize ---------------------------------------------------------------


def _pool(per_window: Callable[[int], int], global_: bool = False) -> Callable[[NodeShapes], int]:
    def count(n: NodeShapes) -> int:
        if global_:
            window = math.prod(_need(n.inp(0))[2:])
        else:
            window = math.prod(n.attrs.get("kernel_shape") or ()) or 1
        return _numel(n.out()) * per_window(window)

    return count


def _norm(per_element: int, scale: int | None = None, bias: int | None = None) -> Callable[[NodeShapes], int]:
    """Mean, centre, square, accumulate, normalize: 5 per element; +1 each for a scale and a bias."""

    def count(n: NodeShapes) -> int:
        extra = (1 if scale is not None and n.has(scale) else 0) + (1 if bias is not None and n.has(bias) else 0)
        return _numel(n.inp(0)) * (per_element + extra)

    return count


def _reduce(per_input: int, per_output: int = 0) -> Callable[[NodeShapes], int]:
    def count(n: NodeShapes) -> int:
        return _numel(n.inp(0)) * per_input + _numel(n.out()) * per_output

    return count


def _resize(n: NodeShapes) -> int:
    mode = n.attrs.get("mode", "nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "nearest":
        return 0
    x, y = _need(n.inp(0)), _need(n.out())
    axes = sum(1 for a, b in zip(x, y) if a != b)
    taps = (2 if mode == "linear" else 4) ** axes  # points weighted into each output
    return _numel(y) * (2 * taps - 1) if axes else 0


def _per_output(k: int) -> Callable[[NodeShapes], int]:
    return lambda n: _numel(n.out()) * k


def _variadic(extra: int = 0) -> Callable[[NodeShapes], int]:
    """Sum/Max/Min over n inputs: n-1 ops per output element (+1 for Mean's divide)."""
    return lambda n: _numel(n.out()) * (max(len(n.inputs) - 1, 1) + extra)


ZERO_FLOP_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Split",
        "SplitToSequence",
        "Slice",
        "Gather",
        "GatherElements",
        "GatherND",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Expand",
        "Tile",
        "Pad",
        "Identity",
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
        "Cast",
        "CastLike",
        "DepthToSpace",
        "SpaceToDepth",
        "Range",
        "NonZero",
        "Dropout",
        "OneHot",
        "EyeLike",
        "Compress",
        "Trilu",
        "ReverseSequence",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
        "SequenceConstruct",
        "SequenceAt",
        "SequenceEmpty",
        "SequenceInsert",
        "SequenceErase",
        "SequenceLength",
        "ConcatFromSequence",
        "Col2Im",
        "CenterCropPad",
    }
)

_UNARY = (
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Abs",
    "Erf",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Elu",
    "Selu",
    "Celu",
    "LeakyRelu",
    "ThresholdedRelu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Softsign",
    "Gelu",
    "Mish",
    "Swish",
    "Not",
    "IsNaN",
    "IsInf",
    "Hardmax",
    "BitwiseNot",
    "Shrink",
    "FastGelu",
    "QuickGelu",
    "BiasGelu",
)
_BINARY = (
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "PRelu",
    "Equal",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "And",
    "Or",
    "Xor",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Where",
)

# Keyed by op type; contrib ops by "domain:op_type" (ONNX Runtime's com.microsoft).
COUNTERS: dict[str, Callable[[NodeShapes], int]] = {
    "Conv": _conv(1, 2),
    "ConvInteger": _conv(1, None),
    "QLinearConv": _conv(3, 8),
    "com.microsoft:FusedConv": _conv(1, 2),
    "ConvTranspose": _conv_transpose,
    "MatMul": _matmul(0),
    "MatMulInteger": _matmul(0),
    "QLinearMatMul": _matmul(0),
    "Gemm": _gemm,
    "Einsum": _einsum,
    "Attention": _attention,
    "com.microsoft:Attention": _ms_attention,
    "com.microsoft:MultiHeadAttention": _ms_multihead_attention,
    "MaxPool": _pool(lambda k: k - 1),
    "AveragePool": _pool(lambda k: k),
    "LpPool": _pool(lambda k: 2 * k),
    "GlobalMaxPool": _pool(lambda k: k - 1, True),
    "GlobalAveragePool": _pool(lambda k: k, True),
    "GlobalLpPool": _pool(lambda k: 2 * k, True),
    "BatchNormalization": _norm(2),  # inference: y = x * a + b with per-channel constants a, b
    "LayerNormalization": _norm(5, 1, 2),
    "InstanceNormalization": _norm(5, 1, 2),
    "GroupNormalization": _norm(5, 1, 2),
    "MeanVarianceNormalization": _norm(5),
    "LpNormalization": _norm(3),
    "RMSNormalization": _norm(3, 1),
    "com.microsoft:SimplifiedLayerNormalization": _norm(3, 1),
    "com.microsoft:SkipLayerNormalization": _norm(6, 2, 3),
    "LRN": _per_output(5),
    "Softmax": _per_output(3),
    "LogSoftmax": _per_output(3),
    "ReduceSum": _reduce(1),
    "ReduceMean": _reduce(1, 1),
    "ReduceMax": _reduce(1),
    "ReduceMin": _reduce(1),
    "ReduceProd": _reduce(1),
    "ReduceL1": _reduce(2),
    "ReduceL2": _reduce(2, 1),
    "ReduceSumSquare": _reduce(2),
    "ReduceLogSum": _reduce(1, 1),
    "ReduceLogSumExp": _reduce(2, 1),
    "ArgMax": _reduce(1),
    "ArgMin": _reduce(1),
    "CumSum": _reduce(1),
    "Resize": _resize,
    "Upsample": _resize,
    "Sum": _variadic(),
    "Max": _variadic(),
    "Min": _variadic(),
    "Mean": _variadic(1),
    "Clip": _per_output(2),
    "QuantizeLinear": _per_output(2),
    "DequantizeLinear": _per_output(2),
    "DynamicQuantizeLinear": _reduce(4),  # min and max over the tensor, then scale and shift each element
    "com.microsoft:MatMulIntegerToFloat": _matmul(0),
    "com.microsoft:DynamicQuantizeMatMul": _matmul(0),
    "com.microsoft:QLinearAdd": _per_output(1),
    "com.microsoft:QLinearMul": _per_output(1),
    **{op: _per_output(1) for op in _UNARY + _BINARY},
}


def count_flops(node: NodeShapes) -> int | None:
    """FLOPs of one node; 0 for data movement; None when there is no rule for it or a shape it needs is unknown."""
    if not node.domain or node.domain == "ai.onnx":
        if node.op_type in ZERO_FLOP_OPS:
            return 0
        counter = COUNTERS.get(node.op_type)
    else:
        counter = COUNTERS.get(f"{node.domain}:{node.op_type}")
    if counter is None:
        return None
    try:
        return int(counter(node))
    except (_Unknown, IndexError, ValueError, TypeError, ZeroDivisionError):
        return None
