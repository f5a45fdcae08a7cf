"""`unirt quantize MODEL -o OUT --fp16|--int8`: ONNX Runtime's quantization, reporting the accuracy delta
(compare) and the latency delta (bench) (unirt.tools.quantize). Exit 1 when a model failed to run in the accuracy
check, --atol/--rtol were given and broken, or the accuracy drop was over the thresholds (the model is removed
unless --accept)."""

from __future__ import annotations

import argparse

from ..tools import quantize
from ..tools.quantize import QuantizeReport
from .compare_cmd import print_metrics
from .compare_cmd import print_report as print_compare
from .tool_output import add_shapes, human_bytes, ms, print_json, shapes_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="fp16 or int8 version of an ONNX model, with accuracy and latency deltas")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("-o", "--output", required=True, help="where to write the quantized model")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fp16", action="store_const", const="fp16", dest="mode", help="float16 weights and math")
    mode.add_argument(
        "--int8",
        action="store_const",
        const="int8",
        dest="mode",
        help="int8: static with --calibration, else dynamic (weights only)",
    )
    p.add_argument(
        "--calibration",
        metavar="NPZ|DIR",
        help="your own inputs to calibrate on: an .npz with an array per input name, samples on a leading "
        "axis (np.savez('cal.npz', x=np.stack(samples))), or a directory of .npz files; the last "
        "fifth of the samples is held out to measure the accuracy drop",
    )
    p.add_argument(
        "--scheme",
        choices=["static", "dynamic"],
        default=None,
        help="with --int8: static (Q/DQ, calibrated; needs --calibration) or dynamic (weights int8, "
        "activations at run time); default static with --calibration, else dynamic",
    )
    p.add_argument(
        "--inputs",
        metavar="NPZ",
        help="held-out inputs (an array per input name, samples on a leading "
        "axis allowed) to measure accuracy on; default: held-out calibration samples, else random inputs",
    )
    p.add_argument(
        "--max-rel-l2",
        type=float,
        default=None,
        help="largest accepted relative L2 error vs the fp32 model (default int8 0.1, fp16 0.01)",
    )
    p.add_argument(
        "--min-top1",
        type=float,
        default=None,
        help="smallest accepted top-1 agreement with the fp32 model for classifier outputs (default 0.9)",
    )
    p.add_argument(
        "--accept",
        action="store_true",
        help="keep the model when its accuracy drop is over the thresholds (default: removed, exit 1)",
    )
    p.add_argument("--fp16-io", action="store_true", help="with --fp16: make inputs/outputs float16 too")
    p.add_argument("--per-channel", action="store_true", help="with --int8: per-channel weight scales")
    p.add_argument("--backend", default="onnxruntime", help="backend that measures both models")
    add_shapes(p)
    p.add_argument("--atol", type=float, default=None, help="fail (exit 1) when an output drifts past this")
    p.add_argument("--rtol", type=float, default=None, help="fail (exit 1) when an output drifts past this")
    p.add_argument("--iterations", type=int, default=50, help="timed runs of each model for the latency delta")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the measurements")
    p.add_argument("--no-measure", action="store_true", help="only write the model")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = quantize(
        args.model,
        args.output,
        args.mode,
        calibration=args.calibration,
        keep_io_types=not args.fp16_io,
        per_channel=args.per_channel,
        backend=args.backend,
        shapes=shapes_of(args),
        atol=args.atol,
        rtol=args.rtol,
        measure=not args.no_measure,
        bench_iterations=args.iterations,
        threads=args.threads,
        inputs=args.inputs,
        scheme=args.scheme,
        max_rel_l2=args.max_rel_l2,
        min_top1=args.min_top1,
        accept=args.accept,
    )
    if args.json:
        print_json(report.to_dict())
    else:
        print_report(report)
    return 0 if report.passed else 1


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def print_report(r: QuantizeReport) -> None:
    print(f"quantized:  {r.model} -> {r.output} ({r.mode}, {r.tool})")
    print(f"file size:  {human_bytes(r.bytes_before)} -> {human_bytes(r.bytes_after)}")
    if r.scheme == "static":
        print(f"calibrated: on {r.calibration_samples} sample{'s' if r.calibration_samples != 1 else ''}")
    if r.drop is not None:
        d = r.drop
        top1 = "" if d.top1_agreement is None else f", top-1 agreement {d.top1_agreement:.3f} (min {d.min_top1:g})"
        print(
            f"drop:       vs fp32 on {d.inputs or f'{d.samples} samples'}: rel-L2 "
            f"{_g(d.rel_l2)} (max {d.max_rel_l2:g}), max abs {_g(d.max_abs)}{top1} -> "
            f"{'within the thresholds' if d.within else 'OVER the thresholds'}"
        )
    if r.refused:
        print(f"REFUSED:    {r.refused}")
    if r.latency_before_ms is not None:
        speed = f" ({r.speedup:.2f}x)" if r.speedup else ""
        print(f"latency:    p50 {ms(r.latency_before_ms)} ms -> {ms(r.latency_after_ms)} ms{speed}")
    if r.accuracy is not None:
        print(f"accuracy:   measured on {r.accuracy_inputs}")
        for target, error in r.accuracy.failures.items():
            print(f"accuracy:   {target} failed: {error}")
        if r.tolerance_checked:
            print()
            print_compare(r.accuracy)
        else:
            print("accuracy:   quantized vs fp32 on the same inputs (no tolerance given: reported, not judged)")
            print_metrics(r.accuracy, judged=False)
    for note in r.notes:
        print(f"note: {note}")
