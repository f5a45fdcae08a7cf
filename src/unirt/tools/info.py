"""`unirt.tools.info`: what a model is and costs: I/O, opsets, parameters, FLOPs, weight and activation memory.

The parameter count is the number of elements in the model's initializers and Constant nodes' values (its
weights; exporters store them either way), attributed to the op type of the first node that reads each one.
FLOPs follow `unirt.tools.flops.CONVENTION` (multiplies + adds) at the given input shapes. Memory is elements times
bytes per element.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..formats import ModelFile, ModelFormat, PathLike, open_model
from ..tensor import TensorInfo
from . import onnx_model as om
from .flops import CONVENTION, NodeShapes, count_flops
from .inputs import fill_carried
from .model_shapes import carried_shapes
from .shapes import parse_shapes, resolve_shapes

__all__ = ["ModelInfo", "TensorSummary", "info"]


@dataclass
class TensorSummary:
    name: str
    dtype: str
    shape: list[Any] | None  # the model's dims: ints, symbolic names, None for unknown; None: rank unknown
    resolved: list[int] | None = None  # at the shapes analysed (inputs: as given; outputs: as inferred)


@dataclass
class ModelInfo:
    """What `info()` found. Counts are None where they cannot be computed for the model's format."""

    model: str
    format: str
    file_bytes: int | None
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]
    producer: str = ""
    ir_version: int | None = None
    opsets: dict[str, int] = field(default_factory=dict)
    graph_name: str = ""
    nodes: int | None = None
    nodes_by_op: dict[str, int] = field(default_factory=dict)
    params: int | None = None
    params_by_op: dict[str, int] = field(default_factory=dict)
    flops: int | None = None
    flops_by_op: dict[str, int] = field(default_factory=dict)
    flops_convention: str = CONVENTION
    flops_not_counted: dict[str, int] = field(default_factory=dict)  # op type -> nodes without a count
    weight_bytes: int | None = None
    weights_by_dtype: dict[str, dict[str, int]] = field(default_factory=dict)  # dtype -> {"count", "bytes"}
    activation_bytes_total: int | None = None  # every intermediate tensor at once (no reuse)
    activation_bytes_peak: int | None = None  # largest live set in graph order (inputs included)
    activation_tensors_unknown: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def info(
    model: PathLike | bytes | ModelFile,
    shapes: Mapping[str, Sequence[int]] | str | None = None,
    *,
    backend: str = "auto",
) -> ModelInfo:
    """Inspect `model` at input `shapes` ({name: dims} or "x:1x3x224x224,...").

    Every dynamic input dim must be resolved by `shapes` (InputError names the one missing). ONNX models get the
    full analysis; other formats get their inputs and outputs as `backend` exposes them.
    """
    mf = open_model(model)
    if isinstance(shapes, str):
        shapes = parse_shapes(shapes)
    if mf.format is ModelFormat.ONNX:
        return _onnx_info(mf, dict(shapes or {}))
    return _backend_info(mf, dict(shapes or {}), backend)


def _summary(t: TensorInfo, resolved: Sequence[int] | None) -> TensorSummary:
    return TensorSummary(
        t.name,
        str(t.dtype),
        list(t.shape) if t.shape is not None else None,
        list(resolved) if resolved is not None else None,
    )


def _backend_info(mf: ModelFile, shapes: Mapping[str, Sequence[int]], backend: str) -> ModelInfo:
    from ..errors import BackendUnavailableError
    from ..session import Session

    try:
        sess = Session(mf, backend=backend)
    except BackendUnavailableError as exc:
        if backend != "auto":
            raise
        raise BackendUnavailableError(
            f"{mf.name}: parameters and FLOPs are computed for ONNX models; for this {mf.format} model unirt shows "
            f"its inputs and outputs through a backend that reads {mf.format}, and none can run here (see "
            f"`unirt explain {mf.name}`)"
        ) from exc
    with sess:
        resolved = resolve_shapes(sess.inputs, shapes, dynamic_default=None) if shapes else {}
        return ModelInfo(
            model=mf.name,
            format=mf.format.value,
            file_bytes=sum(f.stat().st_size for f in mf.files) or None,
            inputs=[_summary(i, resolved.get(i.name)) for i in sess.inputs],
            outputs=[_summary(o, None) for o in sess.outputs],
            notes=[
                f"parameters, FLOPs and memory are computed for ONNX models; for this {mf.format} model unirt "
                f"shows the inputs and outputs that backend {sess.backend!r} reports"
            ],
        )


def _onnx_info(mf: ModelFile, shapes: Mapping[str, Sequence[int]]) -> ModelInfo:
    proto = om.load_proto(mf)
    inputs = om.graph_inputs(proto)
    # dynamic dims the model itself sizes (its metadata, a constant in the graph) need no --shapes
    carried = carried_shapes(mf, inputs) if any(i.is_dynamic and i.name not in shapes for i in inputs) else {}
    resolved = resolve_shapes(fill_carried(inputs, shapes, carried), shapes)
    inferred, notes = om.infer_shapes(proto, resolved, mf.name)
    graph = inferred.graph

    known: dict[str, tuple[tuple[int, ...] | None, int]] = {}  # name -> (static shape or None, elem type)
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        shape = om.tensor_shape(vi)
        static = tuple(shape) if shape is not None and all(isinstance(d, int) and d >= 0 for d in shape) else None
        if vi.name not in known or known[vi.name][0] is None:
            known[vi.name] = (static, vi.type.tensor_type.elem_type)
    inits = {}
    for g in om.walk_graphs(graph):
        for t in g.initializer:
            inits.setdefault(t.name, t)
    for t in graph.initializer:
        known[t.name] = (tuple(t.dims), t.data_type)

    out = ModelInfo(
        model=mf.name,
        format=mf.format.value,
        file_bytes=om.model_size(mf.path),
        inputs=[_summary(i, resolved[i.name]) for i in inputs],
        outputs=[_summary(o, known.get(o.name, (None, 0))[0]) for o in om.graph_outputs(proto)],
        producer=" ".join(p for p in (proto.producer_name, proto.producer_version) if p),
        ir_version=int(proto.ir_version),
        opsets={(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import},
        graph_name=proto.graph.name,
        notes=notes,
    )
    _count_params(out, inferred)
    _count_flops(out, graph, known)
    constants = {o for node in graph.node if _is_constant(node) for o in node.output}
    _activation_memory(out, graph, known, {t.name for t in graph.initializer} | constants)
    return out


def _is_constant(node: Any) -> bool:
    return node.op_type == "Constant" and node.domain in ("", "ai.onnx")


def _constant_value(node: Any) -> tuple[int, int, int | None]:
    """A Constant node's value: (elements, ONNX element type, bytes when not fixed-size per element)."""
    onnx = om.onnx_module()
    T = onnx.TensorProto
    for a in node.attribute:
        if a.name == "value":
            strings = sum(len(s) for s in a.t.string_data) if a.t.data_type == T.STRING else None
            return om.numel(a.t.dims), a.t.data_type, strings
        if a.name == "sparse_value":
            return om.numel(a.sparse_tensor.values.dims), a.sparse_tensor.values.data_type, None
        if a.name in ("value_float", "value_int"):
            return 1, T.FLOAT if a.name == "value_float" else T.INT64, None
        if a.name in ("value_floats", "value_ints"):
            return (len(a.floats), T.FLOAT, None) if a.name == "value_floats" else (len(a.ints), T.INT64, None)
        if a.name == "value_string":
            return 1, T.STRING, len(a.s)
        if a.name == "value_strings":
            return len(a.strings), T.STRING, sum(len(s) for s in a.strings)
    return 0, T.UNDEFINED, None


def _count_params(out: ModelInfo, proto: Any) -> None:
    owner: dict[str, str] = {}
    by_dtype: dict[str, dict[str, int]] = defaultdict(lambda: {"count": 0, "bytes": 0})
    params_by_op: Counter[str] = Counter()
    total = 0
    for g in om.walk_graphs(proto.graph):
        for node in g.node:
            for name in node.input:
                owner.setdefault(name, node.op_type)
    for g in om.walk_graphs(proto.graph):
        for node in g.node:
            if _is_constant(node) and node.output:
                n, elem_type, size = _constant_value(node)
                total += n
                params_by_op[owner.get(node.output[0], "Constant")] += n
                _add_weight(by_dtype, elem_type, n, size)
        for t in g.initializer:
            n = om.numel(t.dims)
            total += n
            params_by_op[owner.get(t.name, "(unused)")] += n
            _add_weight(by_dtype, t.data_type, n, _string_bytes(t))
        for sparse in g.sparse_initializer:
            n = om.numel(sparse.values.dims)  # stored (non-zero) values
            total += n
            params_by_op[owner.get(sparse.values.name, "(unused)")] += n
            _add_weight(by_dtype, sparse.values.data_type, n, _string_bytes(sparse.values))
            out.notes.append(f"sparse initializer {sparse.values.name!r}: counted by its stored values")
    out.params = total
    out.params_by_op = dict(params_by_op.most_common())
    out.weights_by_dtype = dict(by_dtype)
    out.weight_bytes = sum(v["bytes"] for v in by_dtype.values())


def _string_bytes(tensor: Any) -> int:
    return sum(len(s) for s in tensor.string_data)


def _add_weight(by_dtype: dict[str, dict[str, int]], elem_type: int, n: int, variable_bytes: int | None) -> None:
    """Add `n` elements of `elem_type`; `variable_bytes` is the size of types without a fixed width (strings)."""
    bits = om.dtype_bits(elem_type)
    size = math.ceil(n * bits / 8) if bits is not None else (variable_bytes or 0)
    row = by_dtype[om.elem_dtype_name(elem_type)]
    row["count"] += n
    row["bytes"] += size


def _count_flops(out: ModelInfo, graph: Any, known: Mapping[str, tuple[Any, int]]) -> None:
    onnx = om.onnx_module()
    by_op: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    for g in om.walk_graphs(graph):
        for node in g.node:
            nodes[node.op_type] += 1
            if g is not graph:
                missing[node.op_type] += 1  # subgraph bodies run a data-dependent number of times
                continue
            shapes = NodeShapes(
                op_type=node.op_type,
                domain=node.domain,
                attrs={
                    a.name: onnx.helper.get_attribute_value(a)
                    for a in node.attribute
                    if a.type != onnx.AttributeProto.GRAPH and a.type != onnx.AttributeProto.GRAPHS
                },
                inputs=[known.get(n, (None, 0))[0] if n else None for n in node.input],
                outputs=[known.get(n, (None, 0))[0] if n else None for n in node.output],
                present=[bool(n) for n in node.input],
            )
            flops = count_flops(shapes)
            key = node.op_type if not node.domain or node.domain == "ai.onnx" else f"{node.domain}:{node.op_type}"
            if flops is None:
                missing[key] += 1
            elif flops:
                by_op[key] += flops
    out.nodes = sum(nodes.values())
    out.nodes_by_op = dict(nodes.most_common())
    out.flops = sum(by_op.values())
    out.flops_by_op = dict(by_op.most_common())
    out.flops_not_counted = dict(missing.most_common())
    if missing:
        out.notes.append(
            "FLOPs not counted for "
            + ", ".join(f"{n}x {op}" for op, n in missing.items())
            + " (no rule for the op, a shape that shape inference could not find, or a subgraph body); "
            "the total is a lower bound"
        )


def _tensor_bytes(entry: tuple[Any, int] | None) -> int | None:
    if entry is None or entry[0] is None:
        return None
    bits = om.dtype_bits(entry[1]) if entry[1] else None
    return math.ceil(om.numel(entry[0]) * bits / 8) if bits is not None else None


def _activation_memory(out: ModelInfo, graph: Any, known: Mapping[str, tuple[Any, int]], weights: set[str]) -> None:
    """Sum of all intermediate tensors, and the peak of those alive at once running nodes in graph order; weights
    (initializers, Constant nodes' outputs) are not activations."""
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = i
    keep = {o.name for o in graph.output}
    live: dict[str, int] = {}
    unknown = 0
    for vi in graph.input:
        if vi.name not in weights:
            size = _tensor_bytes(known.get(vi.name))
            live[vi.name] = size or 0
            unknown += size is None
    total = 0
    peak = current = sum(live.values())
    for i, node in enumerate(graph.node):
        for name in node.output:
            if not name or name in weights:
                continue
            size = _tensor_bytes(known.get(name))
            unknown += size is None
            live[name] = size or 0
            total += size or 0
            current += size or 0
        peak = max(peak, current)
        for name in list(node.input) + list(node.output):
            if name in live and name not in keep and last_use.get(name, -1) <= i:
                current -= live.pop(name)
    out.activation_bytes_total = total
    out.activation_bytes_peak = peak
    out.activation_tensors_unknown = unknown
    if unknown:
        out.notes.append(f"{unknown} tensors have no inferred shape; activation memory leaves them out")
