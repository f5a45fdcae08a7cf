"""The precision axis of the tools (bench, compare, quantize): which precisions to measure, the int8 model that
an fp32 model's int8 rows run, and the error of a reduced-precision run against the fp32 reference.

int8 is not a switch on an fp32 model (every backend refuses that): an int8 row runs the static Q/DQ model that
`unirt quantize` writes from the fp32 one, calibrated on the user's inputs (`calibration`) or, when none are
given, on seeded random inputs (said in the row), and loads it with precision="int8". A backend that cannot read
a Q/DQ model gets a row with its refusal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import PRECISIONS
from ..errors import UnsupportedOptionError
from ..formats import ModelFile, ModelFormat, PathLike, open_model

__all__ = [
    "parse_precisions",
    "with_baseline",
    "top1_agreement",
    "is_classifier",
    "ErrorVsReference",
    "error_vs_reference",
    "Int8Model",
    "int8_model",
    "looks_quantized",
]

BASELINE = "fp32"


def parse_precisions(spec: str | Sequence[str] | None) -> list[str]:
    """'fp32,bf16' or ['fp32', 'bf16'] -> a list of known precisions, each once, in the order given."""
    if spec is None:
        return [BASELINE]
    items = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p and p.strip()]
    if not items:
        raise UnsupportedOptionError(
            f"precision: expected one or more of {', '.join(PRECISIONS)} separated by commas, got {spec!r}"
        )
    unknown = [p for p in items if p not in PRECISIONS]
    if unknown:
        raise UnsupportedOptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {unknown[0]!r}")
    if len(set(items)) != len(items):
        raise UnsupportedOptionError(f"a precision is listed twice: {', '.join(items)}")
    return items


def with_baseline(precisions: Sequence[str]) -> list[str]:
    """fp32 first when several precisions (or a reduced one) are measured: speed and error are relative to it."""
    ps = list(precisions)
    if ps != [BASELINE] and BASELINE not in ps:
        ps.insert(0, BASELINE)
    return ps


def is_classifier(array: np.ndarray) -> bool:
    """A [N, C] float output with C >= 2: rows of class scores, where top-1 agreement means something."""
    a = np.asarray(array)
    return a.ndim == 2 and a.shape[1] >= 2 and a.dtype.kind == "f"


def top1_agreement(actual: Any, expected: Any) -> float | None:
    """Share of rows whose arg-max class is the same in both; None unless both are [N, C] class scores."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape or not is_classifier(e) or not is_classifier(a) or a.shape[0] == 0:
        return None
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(e, axis=1)))


@dataclass
class ErrorVsReference:
    """The worst output's error against the fp32 reference (float outputs only)."""

    rel_l2: float | None = None
    max_abs: float | None = None
    top1_agreement: float | None = None  # the lowest over classifier outputs; None when the model has none


def error_vs_reference(
    actual: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
    expected: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray],
) -> ErrorVsReference:
    """Relative L2 and max abs error (worst output), and top-1 agreement of classifier outputs, over one run's
    outputs or several (samples: each output concatenated over them)."""
    acts = [actual] if isinstance(actual, Mapping) else list(actual)
    exps = [expected] if isinstance(expected, Mapping) else list(expected)
    out = ErrorVsReference()
    for name in exps[0] if exps else ():
        if any(name not in a for a in acts):
            continue
        e_parts = [np.asarray(e[name]) for e in exps]
        a_parts = [np.asarray(a[name]) for a in acts]
        if e_parts[0].dtype.kind != "f" or any(a.shape != e.shape for a, e in zip(a_parts, e_parts)):
            continue
        e64 = np.concatenate([p.astype(np.float64).ravel() for p in e_parts])
        a64 = np.concatenate([p.astype(np.float64).ravel() for p in a_parts])
        finite = np.isfinite(e64) & np.isfinite(a64)
        diff = np.abs(a64[finite] - e64[finite])
        norm = float(np.linalg.norm(e64[finite]))
        rel = float(np.linalg.norm(diff)) / norm if norm > 0 else (0.0 if not diff.any() else float("inf"))
        if not finite.all() and (np.isfinite(e64) != np.isfinite(a64)).any():
            rel = float("inf")
        out.rel_l2 = rel if out.rel_l2 is None else max(out.rel_l2, rel)
        m = float(diff.max()) if diff.size else 0.0
        out.max_abs = m if out.max_abs is None else max(out.max_abs, m)
        if is_classifier(e_parts[0]):
            agree = top1_agreement(np.concatenate(a_parts), np.concatenate(e_parts))
            if agree is not None:
                out.top1_agreement = agree if out.top1_agreement is None else min(out.top1_agreement, agree)
    return out


def looks_quantized(model: ModelFile) -> bool:
    """An ONNX model that already holds int8 quantization ops (op types are plain strings in the protobuf)."""
    if model.format is not ModelFormat.ONNX:
        return False
    from ..quantized import onnx_quantization_ops

    return bool(onnx_quantization_ops(model.path if model.path is not None else model.data))


@dataclass
class Int8Model:
    """The model that int8 rows run, and how it was made (shown beside the rows)."""

    model: ModelFile
    note: str


def int8_model(
    model: ModelFile,
    directory: PathLike,
    *,
    calibration: PathLike | None = None,
    feeds: Sequence[Mapping[str, np.ndarray]] | None = None,
    feeds_are: str = "random input samples",
) -> Int8Model:
    """The int8 version of `model` for int8 rows: the model itself when it is already quantized, else the static
    Q/DQ model `unirt quantize` writes into `directory`, calibrated on `calibration` (an .npz or a folder, as
    `unirt quantize --calibration` takes) or else on `feeds` (random inputs: fine for speed, flattering no one)."""
    if looks_quantized(model):
        return Int8Model(model, "the model is already quantized: int8 rows run it as it is")
    if model.format is not ModelFormat.ONNX:
        raise UnsupportedOptionError(
            f"int8 rows need an ONNX model to quantize; {model.name} is a {model.format} "
            "model (quantize it with its own toolchain and bench that model)"
        )
    from .quantize import quantize  # quantize imports bench/compare, which import this module

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if calibration is not None:
        src, what = calibration, f"calibrated on {calibration}"
    else:
        assert feeds, "random calibration feeds are needed when no calibration data is given"
        digest = hashlib.sha1(b"".join(np.ascontiguousarray(v).tobytes() for f in feeds for v in f.values()))
        src = directory / f"calibration-{digest.hexdigest()[:12]}.npz"
        names = list(feeds[0])
        np.savez(src, **{n: np.stack([np.asarray(f[n]) for f in feeds]) for n in names})
        what = f"calibrated on {len(feeds)} {feeds_are} (no calibration data given)"
    out = directory / f"{Path(model.name).stem}.int8.onnx"
    quantize(model.path or model.data, out, "int8", calibration=src, scheme="static", measure=False)
    return Int8Model(open_model(out), f"static Q/DQ int8 from unirt quantize, {what}")
