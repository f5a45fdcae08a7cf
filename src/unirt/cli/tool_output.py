"""Shared pieces of the tool commands (info, bench, compare, optimize, quantize): common options and how
numbers are printed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..backend import PRECISIONS
from ..errors import UnsupportedOptionError

__all__ = [
    "add_shapes",
    "shapes_of",
    "add_backends",
    "backend_names",
    "int_list",
    "ms",
    "human",
    "human_bytes",
    "print_json",
    "Progress",
]


#: What --shape does in every command that takes it (one option, one syntax).
SHAPE_HELP = (
    "input shape, e.g. x:1x3x320x320 (repeatable, or several separated by commas; NAME=DIMS and the "
    "spelling --shapes are accepted too): sizes the model's dynamic dims, and is the shape a backend that "
    "converts the model (ncnn, MNN) converts at"
)


def add_shapes(p: argparse.ArgumentParser, extra: str = "") -> None:
    """--shape NAME:DIMS (repeatable; alias --shapes), the same in run, bench, compare, convert, explain, info."""
    p.add_argument(
        "--shape", "--shapes", dest="shapes", action="append", default=[], metavar="NAME:DIMS", help=SHAPE_HELP + extra
    )


def shapes_of(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    """The --shape options as {input: shape} (UnsupportedOptionError naming a malformed one)."""
    from ..tools.shapes import parse_shapes

    return parse_shapes(getattr(args, "shapes", None) or [])


def add_backends(p: argparse.ArgumentParser, default_help: str, several_precisions: bool = False) -> None:
    p.add_argument("--backends", default="all", metavar="A,B|all", help=f"backends to use ({default_help})")
    if several_precisions:  # checked by unirt.tools.precision.parse_precisions
        p.add_argument(
            "--precision",
            default="fp32",
            metavar="fp32,bf16,fp16,int8",
            help="precisions to measure, comma-separated (default fp32); with a reduced one, fp32 is "
            "measured too and each row is compared with it",
        )
    else:
        p.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="precision (default fp32)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per session (backend default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N], gpu, npu")


def backend_names(spec: str) -> list[str] | None:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UnsupportedOptionError(f"--backends {spec!r}: expected names separated by commas, or all")
    return None if names == ["all"] else names


def int_list(option: str, spec: str | None) -> list[int] | None:
    """'1,8' -> [1, 8] (each >= 1); None stays None."""
    if spec is None:
        return None
    try:
        values = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise UnsupportedOptionError(f"{option} {spec!r}: expected positive integers separated by commas, e.g. 1,8")
    return values


def human(n: float | int | None, unit: str = "") -> str:
    """1234567 -> '1.23 M' (decimal prefixes, as FLOPs and parameters are quoted)."""
    if n is None:
        return "-"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".rstrip()


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    for prefix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}"
    return f"{int(n)} B"


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


class Progress:
    """A tqdm bar on a terminal (stderr), plain lines otherwise; the bar is cosmetic, so no tqdm means lines."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label, self.enabled, self._bar = label, enabled, None
        self._tty = sys.stderr.isatty()

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._tty:
            try:
                from tqdm import tqdm
            except ImportError:
                self._tty = False
            else:
                if self._bar is None:
                    self._bar = tqdm(total=total, desc=self.label, unit="step", leave=False, file=sys.stderr)
                self._bar.n = done
                self._bar.set_postfix_str(what)
                if done >= total:
                    self._bar.close()
                return
        if what != "done":
            print(f"{self.label}: [{done}/{total}] {what}", file=sys.stderr, flush=True)
