"""Rewrites of an ONNX model, before a converter sees it, around the converters' known bugs.

Each fixup keeps the model's meaning (ONNX semantics) and spells out what converters get wrong:
- Softmax/LogSoftmax/Hardmax without an explicit `axis` in opset < 13: ONNX flattens the input to 2-D at axis 1,
  converters (MNN, pnnx) apply it on the last axis instead. Made explicit, or rewritten Flatten -> op -> Reshape
  where the axis is not the last one.
- BatchNormalization without `epsilon`: MNN ignores ONNX's default (1e-5); written out explicitly.
- Initializers listed as graph inputs (IR < 4 style): pnnx takes them for real inputs and fails; they are dropped
  from the inputs (they stay constants).
Each function edits the ModelProto in place and returns a one-line description per change.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["FIXUPS", "FIXUPS_VERSION", "apply_fixups"]

#: Part of the conversion cache key: bump when a fixup changes what it writes.
FIXUPS_VERSION = "1"

_COERCING_OPS = ("Softmax", "LogSoftmax", "Hardmax")


def _default_opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def initializers_as_inputs(model: Any) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    listed = [vi for vi in model.graph.input if vi.name in inits]
    if not listed:
        return []
    keep = [vi for vi in model.graph.input if vi.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    old_ir = model.ir_version
    model.ir_version = max(old_ir, 4)  # IR 4 is the first that allows initializers outside the inputs
    return [f"dropped {len(listed)} initializers listed as graph inputs (IR {old_ir} style; pnnx takes them for "
            "real inputs)"]


def batchnorm_epsilon(model: Any) -> list[str]:
    from onnx import helper

    fixed = 0
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx") \
                and not any(a.name == "epsilon" for a in node.attribute):
            node.attribute.append(helper.make_attribute("epsilon", 1e-5))
            fixed += 1
    return [f"wrote BatchNormalization's default epsilon=1e-5 into {fixed} nodes (MNN ignores the default)"] \
        if fixed else []


def _ranks_and_shapes(model: Any) -> dict[str, tuple]:
    """name -> shape tuple (ints, or None for unknown dims) for every tensor shape inference can tell."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a model shape inference cannot handle: fall back to the general rewrite
        return {}
    known: dict[str, tuple] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            known[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return known


def coerced_softmax_axis(model: Any) -> list[str]:
    """opset < 13 Softmax-like ops: make the axis explicit, or rewrite to Flatten -> op(axis=1) -> Reshape."""
    from onnx import helper, numpy_helper

    if _default_opset(model) >= 13:
        return []
    nodes = [n for n in model.graph.node if n.op_type in _COERCING_OPS and n.domain in ("", "ai.onnx")]
    if not nodes:
        return []
    shapes = _ranks_and_shapes(model)
    new_nodes, notes, counter = [], [], 0
    for node in model.graph.node:
        if node not in nodes:
            new_nodes.append(node)
            continue
        attr = next((a for a in node.attribute if a.name == "axis"), None)
        axis = attr.i if attr is not None else 1
        shape = shapes.get(node.input[0])
        rank = len(shape) if shape is not None else None
        if rank is not None and rank > 0 and axis % rank == rank - 1:
            # Coercing at the last axis is the plain last-axis op: only make the axis explicit.
            if attr is None:
                node.attribute.append(helper.make_attribute("axis", rank - 1))
                notes.append(f"{node.op_type} {node.name or node.output[0]!r}: wrote the implicit axis")
            new_nodes.append(node)
            continue
        if rank == 2 and axis == 1:
            new_nodes.append(node)
            continue
        counter += 1
        tag = f"unirt_fix{counter}_{node.output[0]}"
        flat, inner = f"{tag}_flat", f"{tag}_2d"
        new_nodes.append(helper.make_node("Flatten", [node.input[0]], [flat], axis=axis, name=f"{tag}_flatten"))
        new_nodes.append(helper.make_node(node.op_type, [flat], [inner], axis=1, name=node.name or f"{tag}_op"))
        if shape is not None and all(d is not None for d in shape):
            target = f"{tag}_shape"
            model.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), target))
        else:
            target = f"{tag}_shape"
            new_nodes.append(helper.make_node("Shape", [node.input[0]], [target], name=f"{tag}_shapeof"))
        new_nodes.append(helper.make_node("Reshape", [inner, target], [node.output[0]], name=f"{tag}_reshape"))
        notes.append(f"{node.op_type} {node.name or node.output[0]!r}: opset {_default_opset(model)} coerces to 2-D "
                     f"at axis {axis}; rewrote as Flatten -> {node.op_type}(axis=1) -> Reshape")
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return notes


FIXUPS: tuple[Callable[[Any], list[str]], ...] = (initializers_as_inputs, coerced_softmax_axis, batchnorm_epsilon)


def apply_fixups(model: Any) -> list[str]:
    """Apply every fixup to an onnx.ModelProto in place; return what was changed."""
    notes: list[str] = []
    for fix in FIXUPS:
        notes += fix(model)
    return notes
