"""`unirt optimize MODEL -o OUT`: onnxslim's simplification, with outputs checked unchanged (unirt.tools.optimize).
Exit 1 when the optimized model's outputs differ."""

from __future__ import annotations

import argparse

from ..tools import optimize
from ..tools.optimize import OptimizeReport
from .compare_cmd import print_report as print_compare
from .tool_output import add_shapes, human_bytes, print_json, shapes_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("optimize", help="simplify an ONNX model (onnxslim) and check its outputs are unchanged")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("-o", "--output", required=True, help="where to write the optimized model")
    p.add_argument("--no-check", action="store_true", help="do not compare outputs before and after")
    p.add_argument("--backend", default=None, help="backend for the check (default onnxruntime)")
    add_shapes(p)
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance of the check (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance of the check (default 1e-3)")
    p.add_argument("--skip-fusions", action="store_true", help="no operator fusions, only folding and cleanup")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = optimize(
        args.model,
        args.output,
        check=not args.no_check,
        backend=args.backend,
        shapes=shapes_of(args),
        atol=args.atol,
        rtol=args.rtol,
        skip_fusions=args.skip_fusions,
    )
    if args.json:
        print_json(report.to_dict())
    else:
        print_report(report)
    return 0 if report.passed else 1


def print_report(r: OptimizeReport) -> None:
    print(f"optimized:  {r.model} -> {r.output} ({r.tool})")
    print(f"nodes:      {r.nodes_before} -> {r.nodes_after}")
    print(f"file size:  {human_bytes(r.bytes_before)} -> {human_bytes(r.bytes_after)}")
    changed = sorted(set(r.ops_before) | set(r.ops_after))
    diffs = [
        f"{op} {r.ops_before.get(op, 0)}->{r.ops_after.get(op, 0)}"
        for op in changed
        if r.ops_before.get(op, 0) != r.ops_after.get(op, 0)
    ]
    if diffs:
        print(f"op changes: {', '.join(diffs)}")
    if r.check is not None:
        print("\ncheck (original vs optimized, same inputs):")
        print_compare(r.check)
    else:
        print("check:      skipped")
