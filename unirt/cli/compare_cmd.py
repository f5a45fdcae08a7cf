"""`unirt compare MODEL --backends a,b`: the same inputs on several backends, output errors against a
reference, exit 1 when any output is out of tolerance (unirt.tools.compare)."""

from __future__ import annotations

import argparse
import os

from ..tools import compare
from ..tools.compare import CompareReport
from . import conversion_flags
from .table import render
from .tool_output import add_backends, add_shapes, backend_names, print_json, shapes_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare a model's outputs across backends (exit 1 on any mismatch)")
    p.add_argument("model", help="model file")
    add_backends(p, "default: every available backend that reads the model or converts it on load")
    p.add_argument("--reference", default=None, help="backend whose outputs are the truth (default onnxruntime)")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-3, help="relative tolerance (default 1e-3)")
    p.add_argument("--inputs", metavar="FILE.npz", help="inputs by name; default: random at --shapes")
    add_shapes(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--save-inputs", metavar="FILE.npz", help="write the inputs used")
    p.add_argument("--save-outputs", metavar="FILE.npz", help="write every backend's outputs (keys backend/output)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    conversion_flags.add(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = compare(args.model, backend_names(args.backends), reference=args.reference, atol=args.atol,
                     rtol=args.rtol, precision=args.precision, inputs=args.inputs, shapes=shapes_of(args),
                     seed=args.seed, threads=args.threads, device=args.device, save_inputs=args.save_inputs,
                     save_outputs=args.save_outputs, backend_options=conversion_flags.backend_options(args))
    if args.json:
        print_json(report.to_dict())
    else:
        print_report(report)
    return 0 if report.passed else 1


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def print_report(r: CompareReport) -> None:
    shapes = ", ".join(f"{k}:{'x'.join(map(str, v)) or 'scalar'}" for k, v in r.shapes.items())
    print(f"model:      {os.path.basename(r.model)}")
    print(f"reference:  {r.reference}; compared: {', '.join(r.targets)} (run at {r.precision}; the reference at "
          "fp32)")
    print(f"inputs:     {r.inputs_source} {shapes}")
    print(f"tolerance:  |x - ref| <= {r.atol:g} + {r.rtol:g} * |ref| on every element")
    print_metrics(r, judged=True)
    for target, error in r.failures.items():
        print(f"FAIL {target}: {error}")
    print()
    print("PASSED" if r.passed else "FAILED")


def print_metrics(r: CompareReport, judged: bool) -> None:
    """The per-output table; `judged` adds the pass/fail column against the tolerances."""
    rows = [(x.target, x.output, "x".join(map(str, x.shape or [])) or "scalar", _g(x.max_abs), _g(x.max_rel),
             _g(x.rel_l2), "-" if x.cosine is None else f"{x.cosine:.6f}") + ((f"{x.mismatched}/{x.elements}",
                                              "pass" if x.passed else "FAIL" + (f": {x.reason}" if x.reason else ""))
                                             if judged else ()) for x in r.results]
    if rows:
        print()
        print(render(["backend", "output", "shape", "max abs", "max rel", "rel L2", "cosine"]
                     + (["mismatched", "result"] if judged else []), rows))
