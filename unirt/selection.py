"""Choosing a backend for a model: rank every backend, with the reason each was chosen or skipped.

The order comes from the hardware class (a CUDA GPU; an Intel, AMD or other x86 CPU; an ARM CPU), from the
table below, and the environment variable UNIRT_BACKEND_ORDER (comma-separated names) puts its backends first.
Backends not in the table (third-party plugins) come after those in it, alphabetically. The first backend
that reads the model's format, is available here and offers the requested device is chosen.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from . import registry
from .devices import Device
from .formats import ModelFile
from .hardware import Hardware, hardware

__all__ = ["DEFAULT_ORDER", "ENV_ORDER", "Candidate", "Explanation", "rank"]

ENV_ORDER = "UNIRT_BACKEND_ORDER"
log = logging.getLogger(__name__)
_warned_env: set[str] = set()  # UNIRT_BACKEND_ORDER values already warned about (once per process)

# Most preferred first. TensorRT leads on NVIDIA GPUs, OpenVINO on Intel CPUs; ONNX Runtime elsewhere. Each engine's
# own format goes to that engine first (LiteRT for .tflite, ahead of OpenVINO's TFLite frontend); the order only
# decides between backends that read the same format.
DEFAULT_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("tensorrt", "onnxruntime", "tflite", "openvino", "mnn", "ncnn"),
    "x86-intel": ("tflite", "openvino", "onnxruntime", "mnn", "ncnn", "tensorrt"),
    "x86-amd": ("tflite", "onnxruntime", "openvino", "mnn", "ncnn", "tensorrt"),
    "x86": ("tflite", "onnxruntime", "openvino", "mnn", "ncnn", "tensorrt"),
    "arm": ("tflite", "onnxruntime", "mnn", "ncnn", "openvino", "tensorrt"),
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

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.chosen), None)

    def __str__(self) -> str:
        lines = [f"model: {self.model.name} (format {self.model.format})",
                 f"device requested: {self.device}; hardware class: {self.hardware_class}; order: {self.order_source}",
                 self._precision_line()]
        for i, c in enumerate(self.candidates, 1):
            mark = "chosen" if c.chosen else ("eligible" if c.eligible else "skipped")
            lines.append(f"  {i}. {c.backend:<12} {mark:<8} {c.reason}")
        if self.chosen is None:
            lines.append("  -> no backend can run this model here")
        return "\n".join(lines)

    def _precision_line(self) -> str:
        line = f"precision requested: {self.precision}"
        if self.precision_in_force is not None and self.chosen is not None:
            line += f"; in force on {self.chosen.backend}: {self.precision_info or self.precision_in_force}"
        elif self.precision in ("bf16", "fp16"):  # not loaded: what the CPU offers; each backend decides at load
            from .precision import cpu_arithmetic

            line += (f" ({cpu_arithmetic(self.precision)[1]}; the backend confirms at load, or refuses: "
                     "Session.precision_info)")
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
        unknown = [n for n in first if n not in installed and n not in registry.KNOWN_BACKENDS]
        first = [n for n in first if n not in unknown]
        base = first + [n for n in base if n not in first]
        source = f"{ENV_ORDER}={env}, then default for {hw_class}"
        if unknown:
            source += f" (ignored unknown backend(s) in {ENV_ORDER}: {', '.join(unknown)})"
            if env not in _warned_env:
                _warned_env.add(env)
                log.warning("%s names unknown backend(s) %s, ignored; known: %s", ENV_ORDER, ", ".join(unknown),
                            ", ".join(sorted(set(installed) | set(registry.KNOWN_BACKENDS))))
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
    avail = registry.availability(name)
    if not avail.available:
        return Candidate(name, False, f"unavailable: {avail.reason}")
    picked = device.pick(avail.devices)
    if picked is None:
        note = f"; {avail.device_note}" if avail.device_note else ""
        return Candidate(name, False,
                         f"cannot run on {device} here (offers {', '.join(avail.devices) or 'nothing'}{note})")
    if converts:
        native = "/".join(sorted(f.value for f in backend.formats))
        return Candidate(name, True, f"converts {model.format} to {native} with its own converter on first load "
                                     f"(verified, cached{_when_converted(model)}), runs on {picked}", device=picked)
    if backend.reads_through_frontend(model):  # a frontend is a conversion (unirt.conversion.frontend)
        return Candidate(name, True, f"reads {model.format} through its frontend (not its own format: verified "
                                     f"against the format's reference engine on the first run, cached), runs on "
                                     f"{picked}", device=picked)
    return Candidate(name, True, f"reads {model.format}, runs on {picked}", device=picked)


def _when_converted(model: ModelFile) -> str:
    """'; at the first run's shapes ...' for a model whose open dims a conversion must not guess."""
    try:
        from .conversion.lazy import deferred_signature

        if deferred_signature(model, None) is None:
            return ""
    except Exception:  # no onnx to read it with: said nothing rather than guessed
        return ""
    return ("; its dims beyond the batch dim are dynamic: converted at the shapes given (input_shapes, --shape) "
            "or at the first run's, per shape signature")


def rank(model: ModelFile, device: Device | str = "auto", hw: Hardware | None = None) -> Explanation:
    """Every backend in preference order, judged for `model` on `device`; the first eligible one is chosen."""
    device = Device.parse(device)
    hw = hw or hardware()
    order, source = _order(hw, device)
    installed = set(registry.installed_names())
    judged = [_judge(n, model, device, installed) for n in order]
    # Only mention missing backends that could have read this format, to keep the explanation short.
    judged = [c for c in judged if c.backend in installed or c.backend in _readers(model)]
    candidates, chosen = [], False
    for c in judged:
        if c.eligible and not chosen:
            c = Candidate(c.backend, True, c.reason + f"; first eligible in order ({source})", c.device, chosen=True)
            chosen = True
        candidates.append(c)
    hw_class = "cuda" if (device.kind in ("auto", "cuda", "gpu") and hw.has_cuda) else hw.cpu_class
    return Explanation(model=model, device=str(device), hardware_class=hw_class, order_source=source,
                       candidates=tuple(candidates))


# Which of this project's backends read which format: used only to word explanations about missing plugins.
_FORMAT_READERS = {
    "onnx": {"onnxruntime", "openvino", "tensorrt"},
    "openvino": {"openvino"},
    "tflite": {"tflite", "openvino"},
    "ncnn": {"ncnn"},
    "mnn": {"mnn"},
    "tensorrt": {"tensorrt"},
}


def _readers(model: ModelFile) -> set[str]:
    return _FORMAT_READERS.get(model.format.value, set())
