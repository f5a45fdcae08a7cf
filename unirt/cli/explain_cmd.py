"""`unirt explain MODEL`: which backend auto-selection picks, and why each other one was skipped."""

from __future__ import annotations

import argparse

from .. import explain, hardware


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="show how backend='auto' ranks the backends for a model")
    p.add_argument("model", help="model file")
    p.add_argument("--device", default="auto", help="device to ask for (auto, cpu, cuda[:N], gpu, npu)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(f"hardware: {hardware().describe()}")
    result = explain(args.model, device=args.device)
    print(result)
    return 0 if result.chosen is not None else 1
