"""`unirt backends`: which backends are installed, their versions, and whether they can run here."""

from __future__ import annotations

import argparse
import dataclasses
import json

from .. import backends, hardware
from ..registry import BackendInfo
from .table import render


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backends", help="list backends: version, availability (or why not), devices, formats read and converted"
    )
    p.add_argument("--all", action="store_true", help="also list this project's backends that are not installed")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=run)


def formats_cell(info: BackendInfo) -> str:
    """What a Session on this backend takes: the formats it reads, then those it converts on load ("ncnn, onnx
    (converted)"). A format it both reads and converts (OpenVINO's ONNX) is read as it is on load."""
    return (
        ", ".join(list(info.formats) + [f"{f} (converted)" for f in info.converts_from if f not in info.formats]) or "-"
    )


def run(args: argparse.Namespace) -> int:
    rows = backends(include_missing=args.all)
    if args.json:
        print(
            json.dumps({"hardware": hardware().describe(), "backends": [dataclasses.asdict(r) for r in rows]}, indent=2)
        )
        return 0
    print(f"hardware: {hardware().describe()}")
    if not rows:
        print("no backends installed; e.g. pip install ./plugins/onnxruntime (from unirt's source checkout)")
        return 0
    table = [
        (
            r.name,
            r.engine_version or "-",
            r.plugin_version or "-",
            "available" if r.available else (r.reason if not r.installed else f"unavailable: {r.reason}"),
            ", ".join(r.devices) or "-",
            formats_cell(r),
            ", ".join(r.converts_from) or "-",
        )
        for r in rows
    ]
    print(render(["backend", "version", "plugin", "status", "devices", "formats", "unirt convert from"], table))
    return 0
