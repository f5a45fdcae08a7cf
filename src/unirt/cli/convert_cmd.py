"""`unirt convert MODEL --to BACKEND [-o OUT]`: convert with the backend's own converter, verified."""

from __future__ import annotations

import argparse
import json

from ..backend import PRECISIONS
from .tool_output import add_shapes, shapes_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a model to a backend's native format (verified against the source)")
    p.add_argument("model", help="source model (ONNX)")
    p.add_argument("--to", required=True, metavar="BACKEND", help="target backend, e.g. ncnn, mnn, openvino, tensorrt")
    p.add_argument("-o", "--out", help="output file (e.g. model.param, model.mnn) or folder; default: the cache")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="weights/arithmetic (default fp32)")
    p.add_argument(
        "--device",
        default="auto",
        help="device the result is for and is verified on (default: the "
        "backend's first device here; TensorRT engines are per GPU)",
    )
    add_shapes(
        p,
        " (without it: a guess, 1 for each dynamic dim and 224 for an image's H and W, said in the "
        "result; a Session given no shapes converts at its first run's shapes instead)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest accepted relative L2 error (default per precision: fp32 1e-3, fp16 1e-2)",
    )
    p.add_argument("--accept", action="store_true", help="keep the result even when it exceeds the tolerance")
    p.add_argument("--no-verify", action="store_true", help="skip comparing with the source model")
    p.add_argument("--no-cache", action="store_true", help="convert afresh instead of reusing a cached result")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..conversion import convert

    conv = convert(
        args.model,
        to=args.to,
        out=args.out,
        precision=args.precision,
        device=args.device,
        input_shapes=shapes_of(args) or None,
        verify=not args.no_verify,
        tolerance=args.tolerance,
        accept=args.accept,
        cache=not args.no_cache,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "source": conv.source,
                    "backend": conv.backend,
                    "path": str(conv.path),
                    "files": [str(f) for f in conv.files],
                    "cached": conv.cached,
                    "seconds": conv.seconds,
                    "converter": conv.converter,
                    "fixups": list(conv.fixups),
                    "verified": conv.verified,
                    "reference": conv.reference,
                    "tolerance": conv.tolerance,
                    "shapes": {k: list(v) for k, v in conv.shapes.items()},
                    "dynamic_axes": {k: list(v) for k, v in conv.dynamic_axes.items()},
                    "verified_on": conv.verified_on,
                    "errors": [e.as_dict() for e in conv.errors],
                },
                indent=2,
            )
        )
    else:
        print(conv)
    return 0
