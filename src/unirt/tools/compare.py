"""`unirt.tools.compare`: run the same inputs on several backends (or models) and measure how far outputs drift.

Per output: max absolute error, max relative error, relative L2 error, cosine similarity, and pass/fail against
`atol`/`rtol` with numpy's rule |x - ref| <= atol + rtol * |ref| on every element (exact equality for
non-float outputs). The reference always runs in fp32; `precision` applies to the backends compared with it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..errors import ConversionError, InputError, UnirtError, UnsupportedOptionError
from ..formats import ModelFile, PathLike, open_model
from ..session import Session
from ..tensor import TensorInfo
from .inputs import default_shapes, load_feeds, random_feeds, save_arrays
from .precision import BASELINE, int8_model, parse_precisions, top1_agreement
from .shapes import parse_shapes

__all__ = ["OutputComparison", "CompareReport", "compare", "compare_models", "compare_arrays", "pick_backends"]
log = logging.getLogger(__name__)

DEFAULT_REFERENCE = "onnxruntime"


@dataclass
class OutputComparison:
    """One output of one target against the reference's."""

    target: str
    output: str
    passed: bool
    shape: list[int] | None = None
    dtype: str | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    rel_l2: float | None = None
    cosine: float | None = None
    mismatched: int = 0  # elements outside the tolerance
    elements: int = 0
    reason: str = ""  # why it failed when no metric says it (shape, dtype, a missing output)
    top1_agreement: float | None = None  # classifier outputs ([N, C], C >= 2): share of rows with the same arg-max


@dataclass
class CompareReport:
    """What `compare()` found. `passed` is False when any output is out of tolerance or any target failed."""

    model: str
    reference: str
    targets: list[str]
    atol: float
    rtol: float
    precision: str
    shapes: dict[str, list[int]]
    inputs_source: str
    results: list[OutputComparison] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # target -> error that stopped it
    refused: dict[str, str] = field(default_factory=dict)  # target -> why its backend refused its precision
    precisions: list[str] = field(default_factory=list)  # the precision axis; targets are "backend@precision"
    notes: list[str] = field(default_factory=list)
    inputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    outputs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return not self.failures and all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "reference": self.reference,
            "targets": self.targets,
            "atol": self.atol,
            "rtol": self.rtol,
            "precision": self.precision,
            "shapes": self.shapes,
            "inputs_source": self.inputs_source,
            "passed": self.passed,
            "results": [vars(r) for r in self.results],
            "failures": self.failures,
            "refused": self.refused,
            "precisions": self.precisions,
            "notes": self.notes,
        }

    def worst(self, target: str) -> dict[str, float | None]:
        """The largest errors and smallest cosine over `target`'s outputs (a one-line summary)."""
        rows = [r for r in self.results if r.target == target]

        def pick(key: str, fn: Any) -> float | None:
            values = [getattr(r, key) for r in rows if getattr(r, key) is not None]
            return fn(values) if values else None

        return {
            "max_abs": pick("max_abs", max),
            "max_rel": pick("max_rel", max),
            "rel_l2": pick("rel_l2", max),
            "cosine": pick("cosine", min),
            "top1_agreement": pick("top1_agreement", min),
        }


def compare_arrays(
    actual: Any, expected: Any, atol: float, rtol: float, *, target: str = "", output: str = ""
) -> OutputComparison:
    """Metrics of `actual` against `expected` and whether every element is within atol + rtol * |expected|."""
    a, e = np.asarray(actual), np.asarray(expected)
    row = OutputComparison(target, output, passed=False, shape=list(a.shape), dtype=str(a.dtype), elements=int(e.size))
    if a.shape != e.shape:
        row.reason = f"shape {list(a.shape)} differs from the reference's {list(e.shape)}"
        return row
    numeric = a.dtype.kind in "biufc" and e.dtype.kind in "biufc"
    if not numeric:
        row.mismatched = int(np.count_nonzero(a != e))
        row.passed = row.mismatched == 0
        return row
    a64, e64 = (
        a.astype(np.complex128 if "c" in a.dtype.kind + e.dtype.kind else np.float64),
        e.astype(np.complex128 if "c" in a.dtype.kind + e.dtype.kind else np.float64),
    )
    exact = a.dtype.kind not in "fc" and e.dtype.kind not in "fc"
    if exact:
        ok = a64 == e64
    else:
        ok = np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True)
    row.mismatched = int(ok.size - np.count_nonzero(ok))
    row.passed = row.mismatched == 0
    finite = np.isfinite(a64) & np.isfinite(e64)
    if not finite.all():
        bad = int(np.count_nonzero(np.isfinite(a64) != np.isfinite(e64)))
        if bad:
            row.reason = f"{bad} elements are finite in one and not the other"
    if a.size == 0:
        row.max_abs = row.max_rel = row.rel_l2 = 0.0
        row.cosine = 1.0
        return row
    diff = np.abs(a64[finite] - e64[finite])
    ref = np.abs(e64[finite])
    row.max_abs = float(diff.max()) if diff.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(ref > 0, diff / np.where(ref > 0, ref, 1.0), np.where(diff > 0, np.inf, 0.0))
    row.max_rel = float(rel.max()) if rel.size else 0.0
    norm_e, norm_d = float(np.linalg.norm(e64[finite])), float(np.linalg.norm(diff))
    row.rel_l2 = norm_d / norm_e if norm_e > 0 else (0.0 if norm_d == 0 else float("inf"))
    av, ev = a64[finite].ravel(), e64[finite].ravel()
    na, ne = float(np.linalg.norm(av)), float(np.linalg.norm(ev))
    row.cosine = float(np.real(np.vdot(ev, av))) / (na * ne) if na > 0 and ne > 0 else (1.0 if na == ne else 0.0)
    row.top1_agreement = top1_agreement(a, e)
    return row


def pick_backends(model: ModelFile, names: Sequence[str] | str | None) -> list[str]:
    """Backends to use: the names given (each must be installed), or every available one that reads `model`,
    directly or by converting it on load."""
    if names is None or names == "all" or list(names) == ["all"]:
        chosen = [name for name in registry.installed_names() if _usable(name, model)]
        if not chosen:
            raise UnsupportedOptionError(
                f"no installed backend can run this {model.format} model here; see `unirt backends --all`"
            )
        return chosen
    chosen = [n.strip() for n in ([names] if isinstance(names, str) else names) if n.strip()]
    for name in chosen:
        registry.get_backend(name)  # BackendUnavailableError naming it and what to install
    if len(set(chosen)) != len(chosen):
        raise UnsupportedOptionError(f"a backend is listed twice: {', '.join(chosen)}")
    return chosen


def _default_reference(model: ModelFile, names: Sequence[str]) -> str:
    """ONNX Runtime where it reads the model as it is; else a backend that owns the model's format (torch for a .pt2,
    which ONNX Runtime only converts); else ONNX Runtime converting it, else the first backend."""
    if _usable(DEFAULT_REFERENCE, model) and registry.get_backend(DEFAULT_REFERENCE).accepts(model):
        return DEFAULT_REFERENCE
    for name in names:
        try:
            plugin = registry.get_backend(name)
        except UnirtError:
            continue
        if plugin.accepts(model) and plugin.owns(model.format) and registry.availability(name).available:
            return name
    return DEFAULT_REFERENCE if _usable(DEFAULT_REFERENCE, model) else names[0]


def _usable(name: str, model: ModelFile) -> bool:
    """Installed, available here, and reads `model` as it is or converts its format on load (ncnn, MNN)."""
    if name not in registry.installed_names():
        return False
    try:
        plugin = registry.get_backend(name)
        reads = plugin.accepts(model) or model.format in plugin.converts_from
        return reads and registry.availability(name).available
    except UnirtError:
        return False


@dataclass
class _Target:
    label: str
    model: ModelFile
    backend: str
    precision: str
    # int8 targets of an fp32 model: the quantized model is made once the inputs are known (it calibrates on them)
    prepare: Callable[[Sequence[TensorInfo], dict[str, np.ndarray]], ModelFile] | None = None


def _feeds(
    session: Session,
    inputs: Mapping[str, Any] | PathLike | None,
    shapes: Any,
    seed: int,
    model: ModelFile | None = None,
) -> tuple[dict[str, np.ndarray], str]:
    if inputs is not None:
        feeds = load_feeds(inputs) if isinstance(inputs, (str, Path)) else {k: np.asarray(v) for k, v in inputs.items()}
        names = {i.name for i in session.inputs}
        missing, extra = names - set(feeds), set(feeds) - names
        if missing or extra:
            raise InputError(
                f"inputs given do not match the model: missing {sorted(missing) or 'none'}, unknown "
                f"{sorted(extra) or 'none'}; the model's inputs are {sorted(names)}"
            )
        return feeds, "file" if isinstance(inputs, (str, Path)) else "given"
    if isinstance(shapes, str):
        shapes = parse_shapes(shapes)
    resolved = default_shapes(session.inputs, shapes, model=model)
    return random_feeds(session.inputs, resolved, seed), "random"


def _compare(
    reference: _Target,
    targets: Sequence[_Target],
    *,
    inputs: Any,
    shapes: Any,
    seed: int,
    atol: float,
    rtol: float,
    threads: int | None,
    device: str,
    save_inputs: PathLike | None,
    save_outputs: PathLike | None,
    model_name: str,
    backend_options: Mapping[str, Any] | None = None,
) -> CompareReport:
    if atol < 0 or rtol < 0:
        raise UnsupportedOptionError(f"tolerances must be >= 0, got atol={atol} rtol={rtol}")
    given = (parse_shapes(shapes) if isinstance(shapes, str) else dict(shapes or {})) if inputs is None else {}
    with Session(
        reference.model,
        backend=reference.backend,
        device=device,
        threads=threads,
        precision=reference.precision,
        input_shapes=given or None,
    ) as ref:
        feeds, source = _feeds(ref, inputs, shapes, seed, reference.model)
        expected = ref.run(feeds)
        ref_inputs = ref.inputs
    report = CompareReport(
        model=model_name,
        reference=reference.label,
        targets=[t.label for t in targets],
        atol=atol,
        rtol=rtol,
        precision=targets[0].precision if targets else reference.precision,
        shapes={k: list(np.shape(v)) for k, v in feeds.items()},
        inputs_source=source,
        inputs=feeds,
        outputs={reference.label: expected},
    )
    # compare measures how far each target is from the reference, so a target's own check on load (a conversion's,
    # a frontend's) is not repeated unless asked for: its disagreement becomes this report's numbers, not an error.
    options = dict(backend_options or {})
    options["conversion"] = {"verify": False, **dict(options.get("conversion") or {})}
    for target in targets:
        try:
            # a backend that converts the model converts at the shapes compared
            if target.prepare is not None:
                target.model = target.prepare(ref_inputs, feeds)
            with Session(
                target.model,
                backend=target.backend,
                device=device,
                threads=threads,
                precision=target.precision,
                input_shapes={k: np.shape(v) for k, v in feeds.items()},
                backend_options=options,
            ) as sess:
                actual = sess.run(feeds)
        except UnirtError as exc:
            log.info("compare: %s failed: %s", target.label, exc)
            if target.precision != BASELINE and isinstance(exc, (UnsupportedOptionError, ConversionError)):
                report.refused[target.label] = f"{type(exc).__name__}: {exc}"
            else:
                report.failures[target.label] = f"{type(exc).__name__}: {exc}"
            continue
        report.outputs[target.label] = actual
        for name, value in expected.items():
            if name not in actual:
                report.results.append(
                    OutputComparison(target.label, name, False, reason="output missing from this target")
                )
                continue
            report.results.append(compare_arrays(actual[name], value, atol, rtol, target=target.label, output=name))
    if save_inputs:
        save_arrays(save_inputs, feeds)
    if save_outputs:
        save_arrays(
            save_outputs, {f"{label}/{name}": v for label, outs in report.outputs.items() for name, v in outs.items()}
        )
    return report


def compare(
    model: PathLike | bytes | ModelFile,
    backends: Sequence[str] | str | None = None,
    *,
    reference: str | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    precision: str | Sequence[str] = "fp32",
    inputs: Mapping[str, Any] | PathLike | None = None,
    shapes: Any = None,
    seed: int = 0,
    threads: int | None = None,
    device: str = "auto",
    save_inputs: PathLike | None = None,
    save_outputs: PathLike | None = None,
    calibration: PathLike | None = None,
    backend_options: Mapping[str, Any] | None = None,
) -> CompareReport:
    """Run `model` on `reference` and on each of `backends` with the same inputs; compare every output.
    `backend_options`: for each target's Session (e.g. {"conversion": {"accept": True}}).

    `backends`: names, or None/"all" for every available backend that reads the model (or converts it on
    load). `reference` defaults to onnxruntime when it can run the model, else the first backend. `inputs`:
    {name: array} or an .npz path; otherwise random inputs at `shapes` (dynamic dims not given take the size the
    model carries, 1 for a batch dim: `unirt.tools.inputs.default_shapes`).

    `precision`: one precision, or several ("fp32,bf16,int8"): then every backend (the reference's too) runs at
    each one and is compared with the reference at fp32; targets are labelled "backend@precision", and a
    precision a backend refuses is listed in `refused` with the reason (not a failure). int8 targets of an fp32
    model run the static Q/DQ model from `unirt quantize`, calibrated on `calibration` or the inputs compared.
    """
    several = not isinstance(precision, str) or "," in precision
    if several:
        return _compare_precisions(
            model,
            backends,
            reference=reference,
            atol=atol,
            rtol=rtol,
            precisions=parse_precisions(precision),
            inputs=inputs,
            shapes=shapes,
            seed=seed,
            threads=threads,
            device=device,
            save_inputs=save_inputs,
            save_outputs=save_outputs,
            calibration=calibration,
            backend_options=backend_options,
        )
    mf = open_model(model)
    names = pick_backends(mf, backends)
    if reference is None:
        reference = _default_reference(mf, names)
    else:
        registry.get_backend(reference)
    others = [n for n in names if n != reference]
    if not others:
        raise UnsupportedOptionError(
            f"compare needs a backend besides the reference {reference!r}; got {', '.join(names)}"
        )
    return _compare(
        _Target(reference, mf, reference, "fp32"),
        [_Target(n, mf, n, precision) for n in others],
        inputs=inputs,
        shapes=shapes,
        seed=seed,
        atol=atol,
        rtol=rtol,
        threads=threads,
        device=device,
        save_inputs=save_inputs,
        save_outputs=save_outputs,
        model_name=mf.name,
        backend_options=backend_options,
    )


def compare_models(
    reference_model: PathLike | ModelFile,
    model: PathLike | ModelFile,
    *,
    backend: str = DEFAULT_REFERENCE,
    labels: tuple[str, str] = ("original", "candidate"),
    atol: float = 1e-4,
    rtol: float = 1e-3,
    inputs: Mapping[str, Any] | PathLike | None = None,
    shapes: Any = None,
    seed: int = 0,
    threads: int | None = None,
    device: str = "auto",
) -> CompareReport:
    """Run two models (e.g. before and after optimizing) on one backend with the same inputs; compare outputs."""
    ref, other = open_model(reference_model), open_model(model)
    registry.get_backend(backend)
    return _compare(
        _Target(labels[0], ref, backend, "fp32"),
        [_Target(labels[1], other, backend, "fp32")],
        inputs=inputs,
        shapes=shapes,
        seed=seed,
        atol=atol,
        rtol=rtol,
        threads=threads,
        device=device,
        save_inputs=None,
        save_outputs=None,
        model_name=ref.name,
    )


def _compare_precisions(
    model: PathLike | bytes | ModelFile,
    backends: Sequence[str] | str | None,
    *,
    reference: str | None,
    precisions: Sequence[str],
    calibration: PathLike | None,
    **kwargs: Any,
) -> CompareReport:
    """compare() over a precision axis: each backend at each precision against the reference at fp32."""
    mf = open_model(model)
    names = pick_backends(mf, backends)
    if reference is None:
        reference = _default_reference(mf, names)
    else:
        registry.get_backend(reference)
    tmp = tempfile.TemporaryDirectory(prefix="unirt-compare-")
    made: dict[str, Any] = {}

    def prepare(infos: Sequence[TensorInfo], feeds: dict[str, np.ndarray]) -> ModelFile:
        if "model" not in made:  # once for every backend; a failure is every int8 target's
            try:
                made["model"] = int8_model(
                    mf,
                    tmp.name,
                    calibration=calibration,
                    feeds=None if calibration else [feeds],
                    feeds_are="compared input(s)",
                )
            except UnirtError as exc:
                made["model"] = exc
        if isinstance(made["model"], UnirtError):
            raise made["model"]
        return made["model"].model

    targets = [
        _Target(f"{n}@{p}", mf, n, p, prepare if p == "int8" else None)
        for p in precisions
        for n in (
            [n for n in names if n != reference]
            if p == BASELINE
            else [reference] + [n for n in names if n != reference]
        )
    ]
    if not targets:
        raise UnsupportedOptionError(
            f"compare needs a backend besides the reference {reference!r} at fp32; got {', '.join(names)}"
        )
    with tmp:
        report = _compare(_Target(reference, mf, reference, BASELINE), targets, model_name=mf.name, **kwargs)
        report.precision = ",".join(precisions)
        report.precisions = list(precisions)
        note = made.get("model")
        if note is not None and not isinstance(note, UnirtError):
            report.notes.append(f"int8: {note.note}")
    return report
