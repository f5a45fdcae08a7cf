"""`unirt info MODEL`: inputs/outputs, opsets, parameters, FLOPs and memory of a model (unirt.tools.info)."""

from __future__ import annotations

import argparse
import os

from ..tools import info
from ..tools.info import ModelInfo
from .table import render
from .tool_output import add_shapes, human, human_bytes, print_json, shapes_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters, FLOPs, weight and activation memory of a model")
    p.add_argument("model", help="model file")
    add_shapes(p)
    p.add_argument("--backend", default="auto", help="backend that reads a non-ONNX model's inputs and outputs")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    result = info(args.model, shapes_of(args), backend=args.backend)
    if args.json:
        print_json(result.to_dict())
    else:
        print_info(result)
    return 0


def _dims(shape: list | None) -> str:
    if shape is None:
        return "[unknown rank]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def print_info(r: ModelInfo) -> None:
    size = f", {human_bytes(r.file_bytes)}" if r.file_bytes else ""
    print(f"model:       {os.path.basename(r.model)} ({r.format}{size})")
    if r.producer or r.opsets:
        opsets = ", ".join(f"{d} {v}" for d, v in r.opsets.items())
        print(f"producer:    {r.producer or '-'}; IR {r.ir_version}; opsets {opsets}")
    for label, rows in (("input:", r.inputs), ("output:", r.outputs)):
        for t in rows:
            at = f" -> {'x'.join(map(str, t.resolved)) or 'scalar'}" if t.resolved is not None else ""
            print(f"{label:<12} {t.name}  {t.dtype}{_dims(t.shape)}{at}")
    if r.params is not None:
        print(f"parameters:  {human(r.params)} ({r.params:,})")
    if r.flops is not None:
        lower = " (lower bound: see notes)" if r.flops_not_counted else ""
        print(f"FLOPs:       {human(r.flops)} ({r.flops:,}){lower}")
        print(f"             convention: {r.flops_convention}")
    if r.weight_bytes is not None:
        dtypes = ", ".join(
            f"{d} {human(v['count'])} ({human_bytes(v['bytes'])})" for d, v in r.weights_by_dtype.items()
        )
        print(f"weights:     {human_bytes(r.weight_bytes)}" + (f": {dtypes}" if dtypes else ""))
    if r.activation_bytes_peak is not None:
        print(
            f"activations: peak {human_bytes(r.activation_bytes_peak)} (tensors alive at once, in graph order, "
            f"inputs included); all intermediate tensors {human_bytes(r.activation_bytes_total)}"
        )
    if r.nodes_by_op:
        ops = sorted(r.nodes_by_op, key=lambda op: (-r.flops_by_op.get(op, 0), -r.params_by_op.get(op, 0), op))
        total = r.flops or 0
        rows = [
            (
                op,
                r.nodes_by_op[op],
                human(r.params_by_op.get(op)) if op in r.params_by_op else "-",
                human(r.flops_by_op.get(op))
                if op in r.flops_by_op
                else ("not counted" if op in r.flops_not_counted else "0"),
                f"{100 * r.flops_by_op.get(op, 0) / total:.1f}%" if total else "-",
            )
            for op in ops
        ]
        if "(unused)" in r.params_by_op:
            rows.append(("(unused initializers)", 0, human(r.params_by_op["(unused)"]), "-", "-"))
        print()
        print(render(["op type", "nodes", "params", "FLOPs", "% FLOPs"], rows))
    for note in r.notes:
        print(f"note: {note}")
