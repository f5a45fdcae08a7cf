"""Choosing a backend for a model: rank every backend, with the reason each was chosen or skipped.

The order comes from the hardware class (a CUDA GPU; an Intel, AMD or other x86 CPU; an ARM CPU), from the
table below, and the environment variable UNIRT_BACKEND_ORDER (comma-separated names) puts its backends first.
Backends not in the table (third-party plugins) come after those in it, alphabetically. The first backend
that reads the model's format, is available here and offers the requested device is chosen.

`auto_rank` (what `backend="auto"` and `unirt.explain` use) goes further: where a measurement of this model on
this machine with these options exists (stored by `backend="fastest"`, `unirt explain --fastest` or `unirt bench`,
see `unirt.fastest.cached_choice`), the backends it timed honestly (they ran, in the precision asked for) come
first, fastest first; the table orders the rest. UNIRT_BACKEND_ORDER, an explicit choice, still wins over both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import registry
from .devices import Device
from .formats import ModelFile, ModelFormat
from .hardware import Hardware, hardware

__all__ = ["DEFAULT_ORDER", "ENV_ORDER", "Candidate", "Explanation", "rank", "auto_rank"]

ENV_ORDER = "UNIRT_BACKEND_ORDER"
log = logging.getLogger(__name__)
_warned_env: set[str] = set()  # UNIRT_BACKEND_ORDER values already warned about (once per process)

# Most preferred first. TensorRT leads on NVIDIA GPUs, OpenVINO on Intel CPUs; ONNX Runtime elsewhere. Each engine's
# own format goes to that engine first (LiteRT for .tflite, ahead of OpenVINO's TFLite frontend); the order only
# decides between backends that read the same format. PyTorch's formats (.pt2, TorchScript) go to the torch plugin,
# ahead of the backends that convert them to ONNX first. A stored measurement of the model overrides this table
# (`auto_rank`): that, not this table, is what makes `auto` fast on a given model.
#
# x86-amd evidence (issue 16; AMD EPYC, 2 cores shared with other jobs, fp32, threads=2; `python
# benchmarks/bench_auto.py --rounds 4 --runs 6`: blocks of runs interleaved across backends, a pause before each so
# that no engine's spin-waiting threads slow the next). Backend ÷ best per model, ONNX Runtime / OpenVINO, in two
# runs (machine load ~15, then ~3):
#   random-weight resnet50 1.25 / 1.02 and 1.30 / 1.37 (MNN best in both), squeezenet 1.00 / 1.02 and 1.34 / 1.00,
#   inception_v1 1.39 / 1.00 and 1.77 / 1.00, classifier 224x224 1.20 / 1.00 and 1.00 / 1.07,
#   detector 320x320 1.01 / 1.00 and 1.78 / 1.00, recognizer 48x320 1.72 / 1.03 and 2.25 / 1.03 (MNN, ncnn best),
#   byte transformer 1.89 / 1.00 and 2.81 / 1.00. ncnn failed on 2 of 7 and was 1.0-21x slower (its OpenMP threads
#   suffer most on a shared CPU). The five real models: ONNX Runtime 1.00-2.23, OpenVINO 1.00-1.65 (ONNX
#   Runtime won the byte classifier). OpenVINO first is within 1.07 of the best on 15 of 19, ONNX Runtime on 4.
# A third run (load ~2), ONNX Runtime / OpenVINO: resnet50 1.17 / 1.00, squeezenet 1.52 / 1.00, inception_v1
# 1.10 / 1.09 (MNN best), classifier 1.30 / 1.00, detector 2.29 / 1.00, recognizer 2.34 / 1.00, transformer 1.00 / 1.36.
# Yet ONNX Runtime stays first on AMD: OpenVINO reads ONNX through a frontend, so its first run is verified against
# ONNX Runtime (which loads it too: cold start and memory). Measured (same machine, shared; Session + first run,
# peak RSS): the 48x192 classifier 118 MiB on ONNX Runtime, 151 MiB on OpenVINO uncached (verification) and 142
# MiB cached; the 320x320 detector 129 / 163 / 146 MiB: +20-28% memory for every `auto` user, where the speed gain
# is model-dependent. String tensors no longer decide it: a backend that cannot take the model's input/output types
# (`Backend.tensor_dtypes`, e.g. OpenVINO and strings) is skipped here whatever the order.
# Where speed matters, a measurement (`unirt explain --fastest`, `unirt bench`) makes `auto` follow the fastest.
DEFAULT_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("tensorrt", "torch", "onnxruntime", "tflite", "openvino", "mnn", "ncnn"),
    "x86-intel": ("tflite", "torch", "openvino", "onnxruntime", "mnn", "ncnn", "tensorrt"),
    "x86-amd": ("tflite", "torch", "onnxruntime", "openvino", "mnn", "ncnn", "tensorrt"),
    "x86": ("tflite", "torch", "onnxruntime", "openvino", "mnn", "ncnn", "tensorrt"),
    "arm": ("tflite", "torch", "onnxruntime", "mnn", "ncnn", "openvino", "tensorrt"),
}


@dataclass(frozen=True)
class Candidate:
    backend: str
    eligible: bool
    reason: str
    device: str | None = None
    chosen: bool = False


@dataclass(frozen=True)
class Explanation:
    """The ranked candidates for one model, device request and machine.

    `precision`: the precision asked for; `precision_in_force`: what the chosen backend reported once loaded
    (set on a Session's `selection`; None when nothing was loaded)."""

    model: ModelFile
    device: str
    hardware_class: str
    order_source: str
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)
    precision: str = "fp32"
    precision_in_force: str | None = None
    precision_info: str | None = None  # how the backend determined the precision in force (Session.precision_info)
    #: The `unirt.fastest.Measurement` the order came from, or None when it came from the table (or the env).
    measurement: Any = field(default=None, compare=False)

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.chosen), None)

    def __str__(self) -> str:
        lines = [
            f"model: {self.model.name} (format {self.model.format})",
            f"device requested: {self.device}; hardware class: {self.hardware_class}; order: {self.order_source}",
            self._precision_line(),
        ]
        if self.measurement is not None:
            lines.append(f"order measured: {self.measurement.describe()}")
        for i, c in enumerate(self.candidates, 1):
            mark = "chosen" if c.chosen else ("eligible" if c.eligible else "skipped")
            lines.append(f"  {i}. {c.backend:<12} {mark:<8} {c.reason}")
        if self.chosen is None:
            lines.append("  -> no backend can run this model here")
        return "\n".join(lines)

    def _quantization_ops(self) -> tuple[str, ...]:
        from .quantized import onnx_quantization_ops

        return onnx_quantization_ops(self.model.path if self.model.path is not None else self.model.data)

    def _precision_line(self) -> str:
        line = f"precision requested: {self.precision}"
        if self.precision_in_force is not None and self.chosen is not None:
            line += f"; in force on {self.chosen.backend}: {self.precision_info or self.precision_in_force}"
        elif self.model.format is ModelFormat.ONNX and (ops := self._quantization_ops()):
            line += (
                f" (the model is quantized: {'/'.join(ops)}: it computes int8 whatever is asked, on every "
                "backend that runs it)"
            )
        elif self.precision in ("bf16", "fp16"):  # not loaded: what the CPU offers; each backend decides at load
            from .precision import cpu_arithmetic

            line += (
                f" ({cpu_arithmetic(self.precision)[1]}; the backend confirms at load, or refuses: "
                "Session.precision_info)"
            )
        return line


def _order(hw: Hardware, device: Device) -> tuple[list[str], str]:
    wants_gpu = device.kind in ("auto", "cuda", "gpu") and hw.has_cuda
    hw_class = "cuda" if wants_gpu else hw.cpu_class
    base = list(DEFAULT_ORDER.get(hw_class, DEFAULT_ORDER["x86"]))
    source = f"default for {hw_class}"
    env = os.environ.get(ENV_ORDER, "").strip()
    installed = registry.installed_names()
    if env:
        first = [n.strip() for n in env.split(",") if n.strip()]
        unknown = [n for n in first if n not in installed and n not in registry.known_names()]
        first = [n for n in first if n not in unknown]
        base = first + [n for n in base if n not in first]
        source = f"{ENV_ORDER}={env}, then default for {hw_class}"
        if unknown:
            source += f" (ignored unknown backend(s) in {ENV_ORDER}: {', '.join(unknown)})"
            if env not in _warned_env:
                _warned_env.add(env)
                log.warning(
                    "%s names unknown backend(s) %s, ignored; known: %s",
                    ENV_ORDER,
                    ", ".join(unknown),
                    ", ".join(sorted(set(installed) | set(registry.known_names()))),
                )
    extra = sorted(n for n in installed if n not in base)
    return base + extra, source


def _judge(name: str, model: ModelFile, device: Device, installed: set[str]) -> Candidate:
    try:
        return _judge_one(name, model, device, installed)
    except Exception as exc:  # a plugin's bug (e.g. accepts() raising) skips that plugin, not the choice
        return Candidate(name, False, f"plugin error: {type(exc).__name__}: {exc}")


def _judge_one(name: str, model: ModelFile, device: Device, installed: set[str]) -> Candidate:
    if name not in installed:
        return Candidate(name, False, f"not installed ({registry.install_hint(name)})")
    try:
        backend = registry.get_backend(name)
    except Exception as exc:
        return Candidate(name, False, str(exc))
    converts = not backend.accepts(model) and model.format in backend.converts_from
    if not backend.accepts(model) and not converts:
        reads = ", ".join(sorted(f.value for f in backend.formats))
        return Candidate(name, False, f"does not read {model.format} (reads {reads})")
    refused = _refused_dtypes(backend, model)
    if refused:
        return Candidate(
            name, False, f"cannot take {', '.join(sorted(refused))} tensors (the model's inputs or outputs)"
        )
    avail = registry.availability(name)
    if not avail.available:
        return Candidate(name, False, f"unavailable: {avail.reason}")
    picked = device.pick(avail.devices)
    if picked is None:
        note = f"; {avail.device_note}" if avail.device_note else ""
        return Candidate(
            name, False, f"cannot run on {device} here (offers {', '.join(avail.devices) or 'nothing'}{note})"
        )
    if converts:
        native = "/".join(sorted(f.value for f in backend.formats))
        return Candidate(
            name,
            True,
            f"converts {model.format} to {native} with its own converter on first load "
            f"(verified, cached{_when_converted(model)}), runs on {picked}",
            device=picked,
        )
    if backend.reads_through_frontend(model):  # a frontend is a conversion (unirt.conversion.frontend)
        return Candidate(
            name,
            True,
            f"reads {model.format} through its frontend (not its own format: verified "
            f"against the format's reference engine on the first run, cached), runs on "
            f"{picked}",
            device=picked,
        )
    return Candidate(name, True, f"reads {model.format}, runs on {picked}", device=picked)


def _refused_dtypes(backend: Any, model: ModelFile) -> frozenset[str]:
    """The model's input/output types that `backend` does not take (`Backend.tensor_dtypes`); empty if unknown."""
    allowed = getattr(backend, "tensor_dtypes", None)
    if allowed is None:
        return frozenset()
    from .model_dtypes import io_dtypes

    return (io_dtypes(model) or frozenset()) - allowed


def _when_converted(model: ModelFile) -> str:
    """'; at the first run's shapes ...' for a model whose open dims a conversion must not guess."""
    try:
        from .conversion.lazy import deferred_signature

        if deferred_signature(model, None) is None:
            return ""
    except Exception:  # no onnx to read it with: said nothing rather than guessed
        return ""
    return (
        "; its dims beyond the batch dim are dynamic: converted at the shapes given (input_shapes, --shape) "
        "or at the first run's, per shape signature"
    )


def rank(
    model: ModelFile,
    device: Device | str = "auto",
    hw: Hardware | None = None,
    *,
    measurement: Any = None,
    precision: str = "fp32",
) -> Explanation:
    """Every backend in preference order, judged for `model` on `device`; the first eligible one is chosen.

    `measurement` (a `unirt.fastest.Measurement`): its honest timings in `precision` order the eligible backends
    it timed, fastest first (its winner first: a near tie is decided by the table's order, `unirt.fastest.TIE`),
    ahead of the table's order (unless UNIRT_BACKEND_ORDER is set)."""
    device = Device.parse(device)
    hw = hw or hardware()
    order, source = _order(hw, device)
    installed = set(registry.installed_names())
    judged = [_judge(n, model, device, installed) for n in order]
    # Missing backends are mentioned only when nothing installed reads this format, to keep the explanation short.
    judged = [c for c in judged if c.backend in installed or c.backend in _missing(model, installed)]
    used = None
    if measurement is not None and not os.environ.get(ENV_ORDER, "").strip():
        ranked = measurement.ranked(precision)  # fastest first, the winner of a near tie before the others
        times = {t.backend: t for t in ranked}
        position = {t.backend: i for i, t in enumerate(ranked)}
        measured = sorted((c for c in judged if c.eligible and c.backend in times), key=lambda c: position[c.backend])
        if measured:
            used = measurement
            notes = {c.backend: _timed_note(times[c.backend]) for c in measured}
            if tie := measurement.tie_note(measured[0].backend, precision):
                notes[measured[0].backend] += f"; {tie}"
            measured = [replace(c, reason=c.reason + f"; {notes[c.backend]}") for c in measured]
            judged = measured + [c for c in judged if c.backend not in notes]
            source = f"measured ({measurement.source}), then default for {source.removeprefix('default for ')}"
    candidates, chosen = [], False
    for c in judged:
        if c.eligible and not chosen:
            c = Candidate(c.backend, True, c.reason + f"; first eligible in order ({source})", c.device, chosen=True)
            chosen = True
        candidates.append(c)
    hw_class = "cuda" if (device.kind in ("auto", "cuda", "gpu") and hw.has_cuda) else hw.cpu_class
    return Explanation(
        model=model,
        device=str(device),
        hardware_class=hw_class,
        order_source=source,
        candidates=tuple(candidates),
        precision=precision,
        measurement=used,
    )


_NOT_MEASURED = (
    " (no measurement of this model with these options on this machine: backend='fastest', "
    "`unirt explain --fastest` or `unirt bench` make one)"
)


def _timed_note(t: Any) -> str:
    return f"measured {t.median_ms:.3f} ms median of {t.runs} runs"


def auto_rank(
    model: ModelFile,
    device: Device | str = "auto",
    *,
    threads: int | None = None,
    precision: str = "fp32",
    backend_options: Mapping[str, Any] | None = None,
    max_batch: int | None = None,
    input_shapes: Mapping[str, Any] | None = None,
) -> Explanation:
    """The order `backend="auto"` follows: `rank`, with a stored measurement of this model (same contents,
    machine, engines, device, threads, precision, options; default input shapes) where one exists."""
    from .fastest import cached_choice  # fastest imports this module

    base = rank(model, device, precision=precision)
    if os.environ.get(ENV_ORDER, "").strip():
        return base
    eligible = [c for c in base.candidates if c.eligible]
    if not eligible:
        return base
    try:
        found = cached_choice(
            model,
            device,
            threads=threads,
            precision=precision,
            backend_options=backend_options,
            input_shapes=input_shapes,
            max_batch=max_batch,
            eligible=eligible,
        )
    except Exception as exc:  # an unreadable model file etc.: the load reports it; the table order stands
        log.debug("auto: no measurement read: %s", exc)
        return base
    if found is None:
        return replace(base, order_source=base.order_source + _NOT_MEASURED)
    return rank(model, device, precision=precision, measurement=found)


def _missing(model: ModelFile, installed: set[str]) -> set[str]:
    """The missing backends an explanation mentions for `model`: none when an installed backend reads its format;
    else every one of this project's backends that is not installed (which formats a missing plugin reads is its
    own to declare, so the core does not guess which of them would)."""
    if registry.readers(model.format):
        return set()
    return {n for n in registry.known_names() if n not in installed}
