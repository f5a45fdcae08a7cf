"""`--tolerance` and `--accept` for every command that may convert a model on load (ncnn/MNN conversions) or read
it through a frontend (OpenVINO on ONNX/TFLite, TensorRT from ONNX): both are verified against the source."""

from __future__ import annotations

import argparse
from typing import Any


def add(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest accepted error of a conversion or frontend against the source model's reference "
        "engine (default per precision: fp32 1e-3, fp16 1e-2; the metric: unirt.conversion.verify)",
    )
    p.add_argument(
        "--accept",
        action="store_true",
        help="use a conversion (or a frontend's reading) even where it exceeds the tolerance",
    )


def backend_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """`{"conversion": {...}}` for Session(backend_options=...), None when neither flag was given."""
    settings: dict[str, Any] = {}
    if getattr(args, "tolerance", None) is not None:
        settings["tolerance"] = args.tolerance
    if getattr(args, "accept", False):
        settings["accept"] = True
    return {"conversion": settings} if settings else None
