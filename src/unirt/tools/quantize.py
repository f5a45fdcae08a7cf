"""`unirt.tools.quantize`: fp16 or int8 versions of an ONNX model with ONNX Runtime's tools, and what they cost
in accuracy (compare against the original) and gain in latency (bench both on one backend).

- fp16: `onnxruntime.transformers.float16.convert_float_to_float16`; inputs and outputs stay float32 unless
  `keep_io_types=False`.
- int8 with calibration data: static QDQ quantization (`quantize_static`), activations and weights int8,
  calibrated on the given feeds. Without calibration data: dynamic quantization (`quantize_dynamic`), weights
  int8, activations quantized at run time.

Initializers listed as graph inputs (IR < 4 models) are taken off the inputs first (the conversion layer's
fixup): ONNX Runtime's tools would otherwise turn some of them into real inputs. The written model must keep the
original's input and output names (and dtypes, unless fp16 I/O was asked for), else ConversionError.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..conversion.fixups import initializers_as_inputs
from ..engine_logs import quiet_onnxruntime
from ..errors import ConversionError, InputError, UnirtError, UnsupportedOptionError
from ..formats import ModelFormat, PathLike, open_model
from ..tensor import TensorInfo
from . import onnx_model as om
from ._deps import require
from .bench import BenchReport, bench, mean_latency
from .compare import DEFAULT_REFERENCE, CompareReport, compare_models
from .inputs import load_feeds
from .optimize import check_output_path, save_proto
from .precision import error_vs_reference

__all__ = ["QuantizeReport", "AccuracyDrop", "quantize", "calibration_feeds", "MODES", "SCHEMES"]
log = logging.getLogger(__name__)
MODES = ("fp16", "int8")


# Largest accepted accuracy drop vs the fp32 model (over the held-out samples) before the written model is refused.
DEFAULT_MAX_REL_L2 = {"fp16": 0.01, "int8": 0.1}
DEFAULT_MIN_TOP1 = 0.9
SCHEMES = ("static", "dynamic")


@dataclass
class AccuracyDrop:
    """The quantized model against the fp32 one on the same backend and inputs, over every held-out sample."""

    samples: int
    inputs: str  # what they were: held-out calibration samples, given inputs, random
    rel_l2: float | None  # worst output's relative L2 error
    max_abs: float | None
    top1_agreement: float | None  # classifier outputs ([N, C], C >= 2): share of rows with the same class
    max_rel_l2: float  # the thresholds it was judged against
    min_top1: float
    within: bool


@dataclass
class QuantizeReport:
    model: str
    output: str
    mode: str  # "fp16", "int8-static" or "int8-dynamic"
    tool: str
    bytes_before: int | None
    bytes_after: int | None
    accuracy: CompareReport | None = None  # original (fp32) vs quantized, same inputs, same backend
    latency_before_ms: float | None = None  # p50 on `backend`
    latency_after_ms: float | None = None
    bench_before: BenchReport | None = field(default=None, repr=False)
    bench_after: BenchReport | None = field(default=None, repr=False)
    tolerance_checked: bool = False
    accuracy_inputs: str | None = None  # what `accuracy` was measured on
    scheme: str | None = None  # int8: "static" (Q/DQ, calibrated) or "dynamic"
    calibration_samples: int = 0  # samples the quantizer calibrated on
    drop: AccuracyDrop | None = None  # the quantized model's error vs the fp32 one, before deploying it
    refused: str | None = None  # why the written model was removed (drop over the thresholds)
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        if self.latency_before_ms and self.latency_after_ms:
            return self.latency_before_ms / self.latency_after_ms
        return None

    @property
    def passed(self) -> bool:
        """False when a model failed to run in the accuracy check, or tolerances were given and an output broke
        them."""
        if self.accuracy is None:
            return True
        return not self.refused and not self.accuracy.failures and (not self.tolerance_checked or self.accuracy.passed)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k not in ("accuracy", "bench_before", "bench_after")}
        d["accuracy"] = self.accuracy.to_dict() if self.accuracy else None
        d["drop"] = vars(self.drop) if self.drop else None
        d["speedup"] = self.speedup
        d["passed"] = self.passed
        return d


def calibration_feeds(source: PathLike, inputs: Sequence[TensorInfo | str]) -> list[dict[str, np.ndarray]]:
    """Calibration samples from the user's own inputs: an .npz with an array per input name, or a directory of
    such .npz files (a .npy per file also works for a single-input model).

    An array with one more dimension than its input holds samples on its leading axis
    (`np.savez("cal.npz", x=np.stack(samples))`, x float32[S, 1, 3, 224, 224] for an input [1, 3, 224, 224]):
    each of the S becomes one calibration feed. An array of the input's own rank is one feed. `inputs`: the
    model's inputs; given as TensorInfo, each feed must have the input's dtype, rank and fixed dims (ONNX Runtime's
    own error names neither file nor input)."""
    input_names = [i if isinstance(i, str) else i.name for i in inputs]
    infos = {i.name: i for i in inputs if not isinstance(i, str)}
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if not files:
            raise InputError(f"calibration directory {path} has no .npz or .npy files")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"calibration data {path} does not exist")
    batches = []
    for f in files:
        if f.suffix == ".npy":
            if len(input_names) != 1:
                raise InputError(
                    f"calibration file {f} is one array but the model has inputs "
                    f"{', '.join(input_names)}; use .npz files with an array per input name"
                )
            arrays = {input_names[0]: np.load(f, allow_pickle=False)}
        else:
            arrays = load_feeds(f)
        names = set(arrays)
        if names != set(input_names):
            raise InputError(
                f"calibration file {f} has arrays {sorted(names)}; the model's inputs are {sorted(input_names)}"
            )
        samples = _split_samples(f, arrays, infos)
        for sample in samples:
            for name, array in sample.items():
                if name in infos:
                    _check_calibration_array(f, infos[name], array)
        batches += samples
    return batches


def _split_samples(
    f: Path, arrays: dict[str, np.ndarray], infos: Mapping[str, TensorInfo]
) -> list[dict[str, np.ndarray]]:
    """One feed, or S feeds when every array has a leading sample axis (one more dim than its input)."""
    stacked = {n: _fits(infos[n], a.shape[1:]) for n, a in arrays.items() if n in infos}
    if not stacked or not any(stacked.values()):
        return [arrays]
    if not all(stacked.values()) or len(stacked) != len(arrays):
        raise InputError(
            f"calibration file {f}: some arrays have a leading sample axis and some do not "
            f"({', '.join(f'{n} {list(a.shape)}' for n, a in arrays.items())}); give every input "
            "the same number of samples on axis 0"
        )
    counts = {a.shape[0] for a in arrays.values()}
    if len(counts) != 1 or 0 in counts:
        raise InputError(
            f"calibration file {f}: the arrays hold different numbers of samples on axis 0 "
            f"({', '.join(f'{n} {a.shape[0]}' for n, a in arrays.items())}); expected the same, >= 1"
        )
    return [{n: a[i] for n, a in arrays.items()} for i in range(counts.pop())]


def _fits(info: TensorInfo, shape: tuple[int, ...]) -> bool:
    """`shape` is a feed of `info` (rank and fixed dims match)."""
    return (
        info.shape is not None
        and len(shape) == len(info.shape)
        and all(not isinstance(d, int) or d == n for d, n in zip(info.shape, shape))
    )


def _check_calibration_array(f: Path, info: TensorInfo, array: np.ndarray) -> None:
    expected = f"{info.dtype}{info.shape_str()}"
    got = f"{array.dtype}[{','.join(map(str, array.shape))}]"
    if array.dtype != info.dtype:
        raise InputError(
            f"calibration file {f}: input {info.name!r} is {got}; the model's {info.name!r} is "
            f"{expected} (dtype {info.dtype}, got {array.dtype}; e.g. array.astype(np.{info.dtype}))"
        )
    if info.shape is None:
        return
    if array.ndim != info.rank or any(isinstance(d, int) and d != n for d, n in zip(info.shape, array.shape)):
        raise InputError(
            f"calibration file {f}: input {info.name!r} is {got}; the model's {info.name!r} is "
            f"{expected} (rank {info.rank}, got {array.ndim}; fixed dims must match)"
        )


def _check_interface(
    name: str, out: Path, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], *, dtypes: bool
) -> None:
    """The quantized model must be fed and read like the original: same input and output names in the same
    order, and the same dtypes (`dtypes`: fp16 with float16 I/O changes them on purpose)."""
    written = om.load_proto(open_model(out))
    for kind, before, after in (
        ("inputs", inputs, om.graph_inputs(written)),
        ("outputs", outputs, om.graph_outputs(written)),
    ):

        def sig(infos: Sequence[TensorInfo]) -> list[str]:
            return [f"{i.name}: {i.dtype}" if dtypes else i.name for i in infos]

        if sig(before) != sig(after):
            raise ConversionError(
                f"quantizing {name} changed the model's {kind}: {', '.join(sig(before))} became "
                f"{', '.join(sig(after))} in {out}; the quantized model cannot stand in for it"
            )


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _fp16(proto: Any, out: Path, keep_io_types: bool) -> str:
    float16 = require("onnxruntime.transformers.float16", "unirt quantize --fp16", package="onnxruntime")
    converted = float16.convert_float_to_float16(proto, keep_io_types=keep_io_types)
    save_proto(converted, out)
    return "onnxruntime.transformers.float16"


def _preprocess(q: Any, src: Path, tmp: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimization); the model as it is when
    that fails, as it can on models its symbolic shape inference does not understand."""
    out = tmp / "preprocessed.onnx"
    try:
        q.quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
        return out
    except Exception as exc:
        log.info("quantization pre-processing skipped: %s: %s", type(exc).__name__, exc)
        return src


def _int8(src: Path, out: Path, calibration: list[dict[str, np.ndarray]] | None, per_channel: bool, tmp: Path) -> str:
    """Static Q/DQ int8 calibrated on `calibration` when given, else dynamic int8."""
    q = require("onnxruntime.quantization", "unirt quantize --int8", package="onnxruntime")
    quiet_onnxruntime(require("onnxruntime", "unirt quantize --int8"))  # its sessions' warnings: only when verbose
    src = _preprocess(q, src, tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if calibration:
        q.quantize_static(
            str(src),
            str(out),
            _Reader(calibration),
            quant_format=q.QuantFormat.QDQ,
            activation_type=q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8,
            per_channel=per_channel,
        )
        return "onnxruntime.quantization.quantize_static (QDQ)"
    q.quantize_dynamic(str(src), str(out), weight_type=q.QuantType.QInt8, per_channel=per_channel)
    return "onnxruntime.quantization.quantize_dynamic"


def _split_holdout(
    batches: list[dict[str, np.ndarray]],
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Calibration and held-out samples: the last fifth (at least one) is held out when there are two or more."""
    if len(batches) < 2:
        return batches, []
    held = max(1, len(batches) // 5)
    return batches[:-held], batches[-held:]


def _accuracy_drop(
    original: Any,
    quantized: Path,
    samples: Sequence[Mapping[str, np.ndarray]],
    inputs: str,
    backend: str,
    threads: int | None,
    mode: str,
    max_rel_l2: float | None,
    min_top1: float | None,
) -> AccuracyDrop:
    """Both models on `backend` at fp32 settings over every sample; the quantized one's error vs the original's."""
    from ..session import Session

    with Session(original, backend=backend, threads=threads) as ref:
        expected = [ref.run(dict(f)) for f in samples]
    with Session(quantized, backend=backend, threads=threads) as q:
        actual = [q.run(dict(f)) for f in samples]
    err = error_vs_reference(actual, expected)
    limit = DEFAULT_MAX_REL_L2[mode] if max_rel_l2 is None else max_rel_l2
    floor = DEFAULT_MIN_TOP1 if min_top1 is None else min_top1
    within = (err.rel_l2 is None or err.rel_l2 <= limit) and (err.top1_agreement is None or err.top1_agreement >= floor)
    return AccuracyDrop(len(samples), inputs, err.rel_l2, err.max_abs, err.top1_agreement, limit, floor, within)


def quantize(
    model: PathLike | bytes,
    out: PathLike,
    mode: str,
    *,
    calibration: PathLike | None = None,
    scheme: str | None = None,
    keep_io_types: bool = True,
    per_channel: bool = False,
    backend: str = DEFAULT_REFERENCE,
    shapes: Mapping[str, Any] | str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    measure: bool = True,
    bench_iterations: int = 50,
    threads: int | None = None,
    inputs: Mapping[str, Any] | PathLike | None = None,
    max_rel_l2: float | None = None,
    min_top1: float | None = None,
    accept: bool = False,
) -> QuantizeReport:
    """Write the `mode` ("fp16" or "int8") version of `model` to `out`, then (with `measure`) state what it costs
    before anyone deploys it: its error against the original on `backend` (`drop`: relative L2, max abs and, for
    classifier outputs, top-1 agreement, over held-out samples), a per-output comparison (`accuracy`) and the
    latency of both.

    int8 `scheme`: "static" (Q/DQ, calibrated on `calibration`, which it needs) or "dynamic" (weights int8,
    activations quantized at run time); default static with calibration data, else dynamic. `calibration`: the
    user's own inputs (see `calibration_feeds`: an .npz with a leading sample axis, or a folder of .npz). Held-out
    samples: `inputs` when given (an .npz, samples on a leading axis allowed, or {name: array}), else the last
    fifth of the calibration samples (kept out of calibration), else the one calibration sample (in-sample, said)
    or random inputs. When the drop is over `max_rel_l2` (default 0.1 for int8, 0.01 for fp16) or under
    `min_top1` (default 0.9), the written model is removed and `refused` says why, unless `accept`.
    `passed` is False when refused, when either model failed to run, and with `atol`/`rtol` when an output
    broke them.
    """
    if mode not in MODES:
        raise UnsupportedOptionError(f"quantization mode must be one of {', '.join(MODES)}, got {mode!r}")
    if scheme is not None and scheme not in SCHEMES:
        raise UnsupportedOptionError(f"int8 scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if scheme is not None and mode != "int8":
        raise UnsupportedOptionError(f"a scheme ({scheme}) is for int8; fp16 has none")
    if scheme == "static" and calibration is None:
        raise UnsupportedOptionError(
            "static int8 needs calibration data: give calibration (an .npz of your own "
            "inputs, an array per input name with samples on axis 0), or scheme='dynamic'"
        )
    for name, value, lo, hi in (("max_rel_l2", max_rel_l2, 0.0, None), ("min_top1", min_top1, 0.0, 1.0)):
        if value is not None and not (value >= lo and (hi is None or value <= hi)):
            raise UnsupportedOptionError(f"{name} must be in [{lo:g}, {hi if hi is not None else 'inf'}], got {value}")
    mf = open_model(model)
    if mf.format is not ModelFormat.ONNX:
        raise UnsupportedOptionError(f"quantize works on ONNX models; {mf.name} is a {mf.format} model")
    out = check_output_path(mf.path, out)
    if calibration is not None and mode != "int8":
        raise UnsupportedOptionError("calibration data is for --int8; fp16 needs none")
    proto = om.load_proto(mf, with_weights=True)
    fixed = initializers_as_inputs(proto)
    inputs_before, outputs_before = om.graph_inputs(proto), om.graph_outputs(proto)
    samples = calibration_feeds(calibration, inputs_before) if calibration is not None else None
    held: list[dict[str, np.ndarray]] = []
    if samples and inputs is None and measure and scheme != "dynamic":
        samples, held = _split_holdout(samples)
    use_static = bool(samples) and scheme != "dynamic"
    try:
        if mode == "fp16":
            tool, label = _fp16(proto, out, keep_io_types), "fp16"
        else:
            with tempfile.TemporaryDirectory(prefix="unirt-quantize-") as tmp:
                src = mf.path
                if src is None or fixed:  # ONNX Runtime's quantizer reads a path
                    src = Path(tmp) / "model.onnx"
                    save_proto(proto, src)
                tool = _int8(src, out, samples if use_static else None, per_channel, Path(tmp))
            label = "int8-static" if use_static else "int8-dynamic"
    except UnirtError:
        raise
    except Exception as exc:
        raise ConversionError(f"{mode} quantization of {mf.name} failed: {type(exc).__name__}: {exc}") from None
    _check_interface(mf.name, out, inputs_before, outputs_before, dtypes=mode != "fp16" or keep_io_types)
    report = QuantizeReport(
        model=mf.name,
        output=str(out),
        mode=label,
        tool=tool,
        bytes_before=mf.size or None,
        bytes_after=om.model_size(out),
        tolerance_checked=atol is not None or rtol is not None,
        scheme=("static" if use_static else "dynamic") if mode == "int8" else None,
        calibration_samples=len(samples) if use_static and samples else 0,
    )
    report.notes += [f"before quantizing: {note}" for note in fixed]
    if mode == "int8" and not use_static:
        report.notes.append(
            "dynamic quantization (weights int8, activations quantized at run time)"
            + ("" if samples else "; give --calibration for static int8")
        )
    if measure:
        feeds: Any = inputs
        drop_samples: list[dict[str, np.ndarray]]
        if inputs is not None:
            report.accuracy_inputs = f"held-out inputs {inputs}" if isinstance(inputs, (str, Path)) else "given inputs"
            drop_samples = (
                calibration_feeds(inputs, inputs_before)
                if isinstance(inputs, (str, Path))
                else [{k: np.asarray(v) for k, v in inputs.items()}]
            )
            feeds = drop_samples[0] if isinstance(inputs, (str, Path)) and len(drop_samples) > 1 else inputs
        elif held:
            feeds, drop_samples = held[0], held
            report.accuracy_inputs = (
                f"{len(held)} held-out calibration sample{'s' if len(held) > 1 else ''} "
                f"(the quantizer calibrated on the other {len(samples or [])})"
            )
        elif samples:
            feeds, drop_samples = samples[0], samples[:1]
            report.accuracy_inputs = "the first calibration batch (in-sample: the quantizer calibrated on it)"
            report.notes.append(
                "accuracy was measured on calibration data, which flatters static int8; give two "
                "or more calibration samples (one is held out) or held-out inputs (--inputs NPZ) for "
                "an out-of-sample figure"
            )
        else:
            drop_samples = []
            report.accuracy_inputs = "random inputs"
        report.accuracy = compare_models(
            mf,
            out,
            backend=backend,
            labels=("fp32", label),
            atol=1e-4 if atol is None else atol,
            rtol=1e-3 if rtol is None else rtol,
            shapes=shapes,
            inputs=feeds,
            threads=threads,
        )
        if not drop_samples and report.accuracy.inputs:
            drop_samples = [report.accuracy.inputs]
        if drop_samples and not report.accuracy.failures:
            try:
                report.drop = _accuracy_drop(
                    mf, out, drop_samples, report.accuracy_inputs or "", backend, threads, mode, max_rel_l2, min_top1
                )
            except UnirtError as exc:
                report.notes.append(f"accuracy drop not measured: {type(exc).__name__}: {exc}")
        if report.drop is not None and not report.drop.within:
            why = (
                f"accuracy drop over the threshold: rel-L2 {_g(report.drop.rel_l2)} (max {report.drop.max_rel_l2:g})"
                f", top-1 agreement {_g(report.drop.top1_agreement)} (min {report.drop.min_top1:g})"
            )
            if accept:
                report.notes.append(f"{why}; kept because it was accepted (--accept)")
            else:
                report.refused = f"{why}; {out} was removed (rerun with --accept to keep it)"
                out.unlink(missing_ok=True)
                return report
        report.bench_before = bench(
            mf, [backend], shapes=shapes, iterations=bench_iterations, warmup=3, threads=threads
        )
        report.bench_after = bench(
            out, [backend], shapes=shapes, iterations=bench_iterations, warmup=3, threads=threads
        )
        report.latency_before_ms = mean_latency(report.bench_before, backend)
        report.latency_after_ms = mean_latency(report.bench_after, backend)
        for b in (report.bench_before, report.bench_after):
            for r in b.failed:
                report.notes.append(f"bench of {b.model} on {backend} failed: {r.error}")
    return report


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"
