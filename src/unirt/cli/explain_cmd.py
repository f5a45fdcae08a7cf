"""`unirt explain MODEL`: which backend auto-selection picks, and why each other one was skipped; with
`--fastest`, the timings behind backend="fastest"."""

from __future__ import annotations

import argparse

from .. import explain, hardware
from ..backend import PRECISIONS
from . import conversion_flags
from .tool_output import add_shapes, shapes_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show how backend='auto' (or 'fastest') ranks the backends for a model")
    p.add_argument("model", help="model file")
    p.add_argument("--device", default="auto", help="device to ask for (auto, cpu, cuda[:N], gpu, npu)")
    p.add_argument(
        "--fastest",
        action="store_true",
        help="time every eligible backend on the model, as backend='fastest' does (uses its cache)",
    )
    p.add_argument("--refresh", action="store_true", help="with --fastest: time again instead of using the cache")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (with --fastest: for each backend timed; without: which measurement applies)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=list(PRECISIONS),
        help="precision to ask for (shown; with --fastest, each backend is timed in it)",
    )
    add_shapes(
        p,
        "; with --fastest, the shapes timed at (without them a model with open dims is timed at 1 "
        "per dim, and the choice is not cached)",
    )
    conversion_flags.add(p)  # with --fastest: for the backends that convert (or read through a frontend) on load
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(f"hardware: {hardware().describe()}")
    if args.fastest:
        result = explain(
            args.model,
            device=args.device,
            precision=args.precision,
            fastest=True,
            input_shapes=shapes_of(args) or None,
            threads=args.threads,
            refresh=args.refresh,
            backend_options=conversion_flags.backend_options(args),
        )
    else:
        result = explain(
            args.model,
            device=args.device,
            precision=args.precision,
            threads=args.threads,
            backend_options=conversion_flags.backend_options(args) or None,
        )
    print(result)
    return 0 if result.chosen is not None else 1
