"""`unirt explain MODEL`: which backend auto-selection picks, and why each other one was skipped; with
`--fastest`, the timings behind backend="fastest"."""

from __future__ import annotations

import argparse

from .. import explain, hardware, open_model
from ..backend import PRECISIONS
from . import conversion_flags
from .run_cmd import parse_shapes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show how backend='auto' (or 'fastest') ranks the backends for a model")
    p.add_argument("model", help="model file")
    p.add_argument("--device", default="auto", help="device to ask for (auto, cpu, cuda[:N], gpu, npu)")
    p.add_argument("--fastest", action="store_true",
                   help="time every eligible backend on the model, as backend='fastest' does (uses its cache)")
    p.add_argument("--refresh", action="store_true", help="with --fastest: time again instead of using the cache")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (with --fastest: for each backend timed; without: which measurement applies)")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="precision to ask for (shown; with --fastest, each backend is timed in it)")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=1x3x224x224",
                   help="with --fastest: shape of an input with dynamic dims (default 1 for each)")
    conversion_flags.add(p)  # with --fastest: for the backends that convert (or read through a frontend) on load
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(f"hardware: {hardware().describe()}")
    if args.fastest:
        from ..fastest import choose

        result, runner = choose(open_model(args.model), args.device, threads=args.threads, precision=args.precision,
                                input_shapes=parse_shapes(args.shape) or None, refresh=args.refresh,
                                backend_options=conversion_flags.backend_options(args))
        if runner is not None:
            runner.close()
    else:
        result = explain(args.model, device=args.device, precision=args.precision, threads=args.threads,
                         backend_options=conversion_flags.backend_options(args) or None)
    print(result)
    return 0 if result.chosen is not None else 1
