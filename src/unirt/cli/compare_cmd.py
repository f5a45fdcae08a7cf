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
    add_backends(
        p, "default: every available backend that reads the model or converts it on load", several_precisions=True
    )
    p.add_argument(
        "--calibration",
        metavar="NPZ|DIR",
        help="with --precision ...int8: your inputs to calibrate the int8 model on (as unirt quantize "
        "--calibration takes them); default: the inputs compared",
    )
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
    report = compare(
        args.model,
        backend_names(args.backends),
        reference=args.reference,
        atol=args.atol,
        rtol=args.rtol,
        precision=args.precision,
        inputs=args.inputs,
        shapes=shapes_of(args),
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        save_inputs=args.save_inputs,
        save_outputs=args.save_outputs,
        calibration=args.calibration,
        backend_options=conversion_flags.backend_options(args),
    )
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
    if r.precisions:
        print(f"reference:  {r.reference} at fp32; compared: every backend at {', '.join(r.precisions)}")
    else:
        print(
            f"reference:  {r.reference}; compared: {', '.join(r.targets)} (run at {r.precision}; the reference at fp32)"
        )
    print(f"inputs:     {r.inputs_source} {shapes}")
    print(f"tolerance:  |x - ref| <= {r.atol:g} + {r.rtol:g} * |ref| on every element")
    print_metrics(r, judged=True)
    if r.precisions:
        print_precision_summary(r)
    for target, error in r.refused.items():
        print(f"REFUSED {target}: {error}")
    for target, error in r.failures.items():
        print(f"FAIL {target}: {error}")
    for note in r.notes:
        print(f"note: {note}")
    print()
    print("PASSED" if r.passed else "FAILED")


def print_metrics(r: CompareReport, judged: bool) -> None:
    """The per-output table; `judged` adds the pass/fail column against the tolerances."""
    top1 = any(x.top1_agreement is not None for x in r.results)
    rows = [
        (
            x.target,
            x.output,
            "x".join(map(str, x.shape or [])) or "scalar",
            _g(x.max_abs),
            _g(x.max_rel),
            _g(x.rel_l2),
            "-" if x.cosine is None else f"{x.cosine:.6f}",
        )
        + (("-" if x.top1_agreement is None else f"{x.top1_agreement:.3f}",) if top1 else ())
        + (
            (f"{x.mismatched}/{x.elements}", "pass" if x.passed else "FAIL" + (f": {x.reason}" if x.reason else ""))
            if judged
            else ()
        )
        for x in r.results
    ]
    if rows:
        print()
        print(
            render(
                ["backend", "output", "shape", "max abs", "max rel", "rel L2", "cosine"]
                + (["top-1"] if top1 else [])
                + (["mismatched", "result"] if judged else []),
                rows,
            )
        )


def print_precision_summary(r: CompareReport) -> None:
    """Per backend and precision: the worst output's error against the fp32 reference, or the refusal."""
    rows = []
    for label in r.targets:
        backend, _, precision = label.partition("@")
        if label in r.refused or label in r.failures:
            rows.append((backend, precision, "refused" if label in r.refused else "FAILED", "-", "-", "-"))
            continue
        w = r.worst(label)
        rows.append(
            (
                backend,
                precision,
                "ran",
                _g(w["rel_l2"]),
                _g(w["max_abs"]),
                "-" if w["top1_agreement"] is None else f"{w['top1_agreement']:.3f}",
            )
        )
    print()
    print(render(["backend", "precision", "", "rel L2", "max abs", "top-1"], rows))
    print("errors of the worst output against the reference at fp32 on the same inputs (bench measures the speed)")
