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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..conversion.fixups import initializers_as_inputs
from ..errors import ConversionError, InputError, UnirtError, UnsupportedOptionError
from ..formats import ModelFormat, PathLike, open_model
from ..tensor import TensorInfo
from . import onnx_model as om
from ._deps import require
from .bench import BenchReport, bench, mean_latency
from .compare import DEFAULT_REFERENCE, CompareReport, compare_models
from .inputs import load_feeds
from .optimize import check_output_path, save_proto

__all__ = ["QuantizeReport", "quantize", "calibration_feeds", "MODES"]
log = logging.getLogger(__name__)
MODES = ("fp16", "int8")


@dataclass
class QuantizeReport:
    model: str
    output: str
    mode: str                       # "fp16", "int8-static" or "int8-dynamic"
    tool: str
    bytes_before: int | None
    bytes_after: int | None
    accuracy: CompareReport | None = None        # original (fp32) vs quantized, same inputs, same backend
    latency_before_ms: float | None = None       # p50 on `backend`
    latency_after_ms: float | None = None
    bench_before: BenchReport | None = field(default=None, repr=False)
    bench_after: BenchReport | None = field(default=None, repr=False)
    tolerance_checked: bool = False
    accuracy_inputs: str | None = None           # what `accuracy` was measured on
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
        return not self.accuracy.failures and (not self.tolerance_checked or self.accuracy.passed)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k not in ("accuracy", "bench_before", "bench_after")}
        d["accuracy"] = self.accuracy.to_dict() if self.accuracy else None
        d["speedup"] = self.speedup
        d["passed"] = self.passed
        return d


def calibration_feeds(source: PathLike, inputs: Sequence[TensorInfo | str]) -> list[dict[str, np.ndarray]]:
    """Calibration batches: one .npz (one batch: an array per input name) or a directory of such .npz files
    (a .npy per batch also works for a single-input model). `inputs`: the model's inputs; given as TensorInfo,
    each array must have the input's dtype, rank and fixed dims (ONNX Runtime's own error names neither file nor
    input)."""
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
                raise InputError(f"calibration file {f} is one array but the model has inputs "
                                 f"{', '.join(input_names)}; use .npz files with an array per input name")
            batches.append({input_names[0]: np.load(f, allow_pickle=False)})
        else:
            batches.append(load_feeds(f))
        names = set(batches[-1])
        if names != set(input_names):
            raise InputError(f"calibration file {f} has arrays {sorted(names)}; the model's inputs are "
                             f"{sorted(input_names)}")
        for name, array in batches[-1].items():
            if name in infos:
                _check_calibration_array(f, infos[name], array)
    return batches


def _check_calibration_array(f: Path, info: TensorInfo, array: np.ndarray) -> None:
    expected = f"{info.dtype}{info.shape_str()}"
    got = f"{array.dtype}[{','.join(map(str, array.shape))}]"
    if array.dtype != info.dtype:
        raise InputError(f"calibration file {f}: input {info.name!r} is {got}; the model's {info.name!r} is "
                         f"{expected} (dtype {info.dtype}, got {array.dtype}; e.g. array.astype(np.{info.dtype}))")
    if info.shape is None:
        return
    if array.ndim != info.rank or any(isinstance(d, int) and d != n for d, n in zip(info.shape, array.shape)):
        raise InputError(f"calibration file {f}: input {info.name!r} is {got}; the model's {info.name!r} is "
                         f"{expected} (rank {info.rank}, got {array.ndim}; fixed dims must match)")


def _check_interface(name: str, out: Path, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], *,
                     dtypes: bool) -> None:
    """The quantized model must be fed and read like the original: same input and output names in the same
    order, and the same dtypes (`dtypes`: fp16 with float16 I/O changes them on purpose)."""
    written = om.load_proto(open_model(out))
    for kind, before, after in (("inputs", inputs, om.graph_inputs(written)),
                                ("outputs", outputs, om.graph_outputs(written))):
        def sig(infos: Sequence[TensorInfo]) -> list[str]:
            return [f"{i.name}: {i.dtype}" if dtypes else i.name for i in infos]
        if sig(before) != sig(after):
            raise ConversionError(f"quantizing {name} changed the model's {kind}: {', '.join(sig(before))} became "
                                  f"{', '.join(sig(after))} in {out}; the quantized model cannot stand in for it")


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


def _int8(src: Path, out: Path, calibration: list[dict[str, np.ndarray]] | None, per_channel: bool,
          tmp: Path) -> str:
    q = require("onnxruntime.quantization", "unirt quantize --int8", package="onnxruntime")
    src = _preprocess(q, src, tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if calibration:
        q.quantize_static(str(src), str(out), _Reader(calibration), quant_format=q.QuantFormat.QDQ,
                          activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8, per_channel=per_channel)
        return "onnxruntime.quantization.quantize_static (QDQ)"
    q.quantize_dynamic(str(src), str(out), weight_type=q.QuantType.QInt8, per_channel=per_channel)
    return "onnxruntime.quantization.quantize_dynamic"


def quantize(model: PathLike | bytes, out: PathLike, mode: str, *, calibration: PathLike | None = None,
             keep_io_types: bool = True, per_channel: bool = False, backend: str = DEFAULT_REFERENCE,
             shapes: Mapping[str, Any] | str | None = None, atol: float | None = None, rtol: float | None = None,
             measure: bool = True, bench_iterations: int = 50, threads: int | None = None,
             inputs: Mapping[str, Any] | PathLike | None = None) -> QuantizeReport:
    """Write the `mode` ("fp16" or "int8") version of `model` to `out`, then (with `measure`) compare it with the
    original on `backend` and bench both. `passed` is False when either model failed to run in the comparison,
    and with `atol`/`rtol` when an output broke them. The comparison runs on `inputs` ({name: array} or an .npz;
    held-out data) when given, else on the first calibration batch (in-sample, said in the report), else on
    random inputs.
    """
    if mode not in MODES:
        raise UnsupportedOptionError(f"quantization mode must be one of {', '.join(MODES)}, got {mode!r}")
    mf = open_model(model)
    if mf.format is not ModelFormat.ONNX:
        raise UnsupportedOptionError(f"quantize works on ONNX models; {mf.name} is a {mf.format} model")
    out = check_output_path(mf.path, out)
    if calibration is not None and mode != "int8":
        raise UnsupportedOptionError("calibration data is for --int8; fp16 needs none")
    proto = om.load_proto(mf, with_weights=True)
    fixed = initializers_as_inputs(proto)
    inputs_before, outputs_before = om.graph_inputs(proto), om.graph_outputs(proto)
    batches = calibration_feeds(calibration, inputs_before) if calibration is not None else None
    try:
        if mode == "fp16":
            tool, label = _fp16(proto, out, keep_io_types), "fp16"
        else:
            with tempfile.TemporaryDirectory(prefix="unirt-quantize-") as tmp:
                src = mf.path
                if src is None or fixed:  # ONNX Runtime's quantizer reads a path
                    src = Path(tmp) / "model.onnx"
                    save_proto(proto, src)
                tool = _int8(src, out, batches, per_channel, Path(tmp))
            label = "int8-static" if batches else "int8-dynamic"
    except UnirtError:
        raise
    except Exception as exc:
        raise ConversionError(f"{mode} quantization of {mf.name} failed: {type(exc).__name__}: {exc}") from None
    _check_interface(mf.name, out, inputs_before, outputs_before, dtypes=mode != "fp16" or keep_io_types)
    report = QuantizeReport(model=mf.name, output=str(out), mode=label, tool=tool,
                            bytes_before=mf.size or None, bytes_after=om.model_size(out),
                            tolerance_checked=atol is not None or rtol is not None)
    report.notes += [f"before quantizing: {note}" for note in fixed]
    if mode == "int8" and not batches:
        report.notes.append("no calibration data: dynamic quantization (weights int8, activations at run time); "
                            "give --calibration for static int8")
    if measure:
        feeds: Any = inputs
        if inputs is not None:
            report.accuracy_inputs = f"held-out inputs {inputs}" if isinstance(inputs, (str, Path)) else "given inputs"
        elif batches:
            feeds = batches[0]
            report.accuracy_inputs = "the first calibration batch (in-sample: the quantizer calibrated on it)"
            report.notes.append("accuracy was measured on calibration data, which flatters static int8; give "
                                "held-out inputs (--inputs NPZ) for an out-of-sample figure")
        else:
            report.accuracy_inputs = "random inputs"
        report.accuracy = compare_models(mf, out, backend=backend, labels=("fp32", label),
                                         atol=1e-4 if atol is None else atol, rtol=1e-3 if rtol is None else rtol,
                                         shapes=shapes, inputs=feeds, threads=threads)
        report.bench_before = bench(mf, [backend], shapes=shapes, iterations=bench_iterations, warmup=3,
                                    threads=threads)
        report.bench_after = bench(out, [backend], shapes=shapes, iterations=bench_iterations, warmup=3,
                                   threads=threads)
        report.latency_before_ms = mean_latency(report.bench_before, backend)
        report.latency_after_ms = mean_latency(report.bench_after, backend)
        for b in (report.bench_before, report.bench_after):
            for r in b.failed:
                report.notes.append(f"bench of {b.model} on {backend} failed: {r.error}")
    return report
