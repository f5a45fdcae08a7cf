"""Rewrites of an ONNX model, before a converter sees it, around the converters' known bugs.

Each fixup keeps the model's meaning (ONNX semantics) and spells out what converters get wrong:
- Softmax/LogSoftmax/Hardmax without an explicit `axis` in opset < 13: ONNX flattens the input to 2-D at axis 1,
  converters (MNN, pnnx) apply it on the last axis instead. Made explicit, or rewritten Flatten -> op -> Reshape
  where the axis is not the last one.
- BatchNormalization without `epsilon`: MNN ignores ONNX's default (1e-5); written out explicitly.
- Initializers listed as graph inputs (IR < 4 style): pnnx takes them for real inputs and fails; they are dropped
  from the inputs (they stay constants).
- 1-D Conv: MNN's converter turns it into a 2-D convolution and leaves the extra trailing dim of 1 on the output
  ([N, C, L, 1] where ONNX says [N, C, L]; values right). Written out as Unsqueeze -> 2-D Conv -> Squeeze.
- IR version newer than the converters' bundled ONNX Runtime reads (pnnx: IR 13; onnx 1.23 writes IR 14 by default):
  lowered to 13 when the model uses no element type that IR 13 lacks (the FLOAT6 types, 27 and 28, came with 14).
- Default-domain opset below 7: ONNX Runtime has no kernels for opset 1-6 versions of AveragePool, BatchNormalization,
  Add, Gemm, ... and pnnx loads the model with its bundled ONNX Runtime (it crashes after "ort CreateSession
  failed"). Upgraded to opset 7 with onnx's version converter (opset 7 is what ONNX Runtime supports); left as it is
  where the version converter cannot.
Each function edits the ModelProto in place and returns a one-line description per change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["FIXUPS", "FIXUPS_VERSION", "apply_fixups"]

#: Part of the conversion cache key: bump when a fixup changes what it writes.
FIXUPS_VERSION = "4"

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
    return [
        f"dropped {len(listed)} initializers listed as graph inputs (IR {old_ir} style; pnnx takes them for "
        "real inputs)"
    ]


def batchnorm_epsilon(model: Any) -> list[str]:
    from onnx import helper

    fixed = 0
    for node in model.graph.node:
        if (
            node.op_type == "BatchNormalization"
            and node.domain in ("", "ai.onnx")
            and not any(a.name == "epsilon" for a in node.attribute)
        ):
            node.attribute.append(helper.make_attribute("epsilon", 1e-5))
            fixed += 1
    return (
        [f"wrote BatchNormalization's default epsilon=1e-5 into {fixed} nodes (MNN ignores the default)"]
        if fixed
        else []
    )


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
        notes.append(
            f"{node.op_type} {node.name or node.output[0]!r}: opset {_default_opset(model)} coerces to 2-D "
            f"at axis {axis}; rewrote as Flatten -> {node.op_type}(axis=1) -> Reshape"
        )
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return notes


def _kernel_rank(node: Any, model: Any, shapes: dict[str, tuple] | None) -> int | None:
    attr = next((a for a in node.attribute if a.name == "kernel_shape"), None)
    if attr is not None:
        return len(attr.ints)
    weight = next((i for i in model.graph.initializer if i.name == node.input[1]), None)
    if weight is not None:
        return len(weight.dims) - 2
    shape = (shapes or {}).get(node.input[1])
    return len(shape) - 2 if shape else None


def conv1d_as_conv2d(model: Any) -> list[str]:
    """1-D Conv -> Unsqueeze(3) of input and weight, 2-D Conv with a trailing kernel dim of 1, Squeeze(3)."""
    from onnx import helper, numpy_helper

    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.domain in ("", "ai.onnx") and len(n.input) > 1]
    if not convs:
        return []
    shapes = (
        None if all(any(a.name == "kernel_shape" for a in n.attribute) for n in convs) else _ranks_and_shapes(model)
    )
    targets = [n for n in convs if _kernel_rank(n, model, shapes) == 1]
    if not targets:
        return []
    # Axis 3: a 1-D convolution's input and weight are rank 3 (and opsets before 11 take no negative axes).
    as_input = _default_opset(model) >= 13  # Unsqueeze/Squeeze take axes as an input from opset 13
    axes_name = "unirt_fix_conv1d_axes"
    if as_input:
        model.graph.initializer.append(numpy_helper.from_array(np.array([3], np.int64), axes_name))
    new_nodes = []
    for node in model.graph.node:
        if node not in targets:
            new_nodes.append(node)
            continue
        tag = f"unirt_fix_conv1d_{node.output[0]}"

        def unsqueeze(src: str, dst: str) -> Any:
            return (
                helper.make_node("Unsqueeze", [src, axes_name], [dst], name=f"{dst}_op")
                if as_input
                else helper.make_node("Unsqueeze", [src], [dst], axes=[3], name=f"{dst}_op")
            )

        new_nodes += [unsqueeze(node.input[0], f"{tag}_x"), unsqueeze(node.input[1], f"{tag}_w")]
        attrs = {}
        for a in node.attribute:
            value = helper.get_attribute_value(a)
            if a.name in ("kernel_shape", "strides", "dilations"):
                value = list(value) + [1]
            elif a.name == "pads":
                value = [value[0], 0, value[1], 0]
            attrs[a.name] = value
        inputs = [f"{tag}_x", f"{tag}_w"] + list(node.input[2:])
        new_nodes.append(helper.make_node("Conv", inputs, [f"{tag}_y"], name=node.name or f"{tag}_conv", **attrs))
        new_nodes.append(
            helper.make_node("Squeeze", [f"{tag}_y", axes_name], [node.output[0]], name=f"{tag}_sq")
            if as_input
            else helper.make_node("Squeeze", [f"{tag}_y"], [node.output[0]], axes=[3], name=f"{tag}_sq")
        )
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return [
        f"rewrote {len(targets)} 1-D Conv nodes as 2-D convolutions between Unsqueeze and Squeeze (MNN leaves "
        "a trailing dim of 1 on a 1-D convolution's output)"
    ]


_CONVERTER_IR = 13
_FIRST_TYPE_AFTER_IR13 = 27  # TensorProto.FLOAT6E2M3


def _element_types(model: Any) -> set[int]:
    graph = model.graph
    types = {t.data_type for t in graph.initializer}
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.HasField("tensor_type"):
            types.add(vi.type.tensor_type.elem_type)
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                types.add(a.t.data_type)
            if a.name == "to" and node.op_type in ("Cast", "CastLike", "RandomNormal", "RandomUniform"):
                types.add(a.i)
    return types


def ir_version_for_converters(model: Any) -> list[str]:
    if model.ir_version <= _CONVERTER_IR or any(t >= _FIRST_TYPE_AFTER_IR13 for t in _element_types(model)):
        return []
    old = model.ir_version
    model.ir_version = _CONVERTER_IR
    return [
        f"lowered IR version {old} to {_CONVERTER_IR} (the converters' bundled ONNX Runtime reads up to "
        f"{_CONVERTER_IR}; the model uses nothing newer)"
    ]


_OLDEST_OPSET = 7  # ONNX Runtime's oldest supported default-domain opset


def _channel_slopes(model: Any) -> list[str]:
    """Opset < 7 PRelu takes a 1-D slope of C values per channel (dim 1); opset 7 broadcasts it numpy-style (on the
    last dim), which the version converter leaves as it is: reshape such slopes to [C, 1, ...]."""
    shapes = None
    fixed = 0
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        slope = inits.get(node.input[1]) if node.op_type == "PRelu" and len(node.input) > 1 else None
        if slope is None or len(slope.dims) != 1 or slope.dims[0] <= 1:
            continue
        shapes = _ranks_and_shapes(model) if shapes is None else shapes
        rank = len(shapes.get(node.input[0]) or ())
        if rank > 2:
            slope.dims.extend([1] * (rank - 2))
            for vi in model.graph.input:  # an IR < 4 model lists it as an input too
                if vi.name == slope.name and vi.type.tensor_type.HasField("shape"):
                    for _ in range(rank - 2):
                        vi.type.tensor_type.shape.dim.add().dim_value = 1
            fixed += 1
    return (
        [f"reshaped {fixed} per-channel PRelu slopes to [C, 1, ...] (opset 7 broadcasts a 1-D slope on the last dim)"]
        if fixed
        else []
    )


def opset_for_converters(model: Any) -> list[str]:
    old = _default_opset(model)
    if old >= _OLDEST_OPSET or not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        return []
    from onnx import version_converter

    work = type(model)()
    work.CopyFrom(model)
    notes = _channel_slopes(work)
    try:
        upgraded = version_converter.convert_version(work, _OLDEST_OPSET)
    except Exception:  # an op the version converter has no adapter for: the converter sees the model as it is
        return []
    model.CopyFrom(upgraded)
    return notes + [
        f"upgraded opset {old} to {_OLDEST_OPSET} with onnx's version converter (ONNX Runtime, which "
        f"pnnx loads models with, has no kernels for opset < {_OLDEST_OPSET} versions of several ops)"
    ]


FIXUPS: tuple[Callable[[Any], list[str]], ...] = (
    initializers_as_inputs,
    opset_for_converters,
    coerced_softmax_axis,
    batchnorm_epsilon,
    conv1d_as_conv2d,
    ir_version_for_converters,
)


def apply_fixups(model: Any) -> list[str]:
    """Apply every fixup to an onnx.ModelProto in place; return what was changed."""
    notes: list[str] = []
    for fix in FIXUPS:
        notes += fix(model)
    return notes
