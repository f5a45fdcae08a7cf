"""A frontend is a conversion: verifying a backend that runs a format it does not own.

OpenVINO reading ONNX or TFLite, and TensorRT building an engine from ONNX, translate the model into their own
graph first (a plugin declares which formats it owns: `Backend.native_formats`). That translation can be wrong
exactly as a converter can: OpenVINO answers a dynamically quantized ONNX model (DynamicQuantizeLinear +
ConvInteger/MatMulInteger) 1.8e-2 off ONNX Runtime at fp32. So such a session is verified like a conversion:

* against the format's *reference engine*: an installed backend that owns the format (ONNX -> onnxruntime,
  TFLite -> tflite/LiteRT); where none is installed the session runs unverified, and says so;
* on the first run's inputs (real data, not random): the first `Session.run` (or `run_many`) also runs the
  reference and the session's backend on them and compares every output with `verify.compare`, judged against
  the precision's tolerance (`verify.TOLERANCES`, the metric in `verify.py`);
* once per model and machine: the result is cached under `unirt.cache_dir("frontend-checks")`, keyed by the
  model's content hash, both engines' versions, the precision and the device. A later Session finds it at load
  and pays nothing on its first run;
* on failure the first run raises FrontendMismatchError (a ConversionError) stating the measured error, unless
  accepted: the first run never silently returns a wrong answer.

Settings are the conversion settings (`backend_options={"conversion": {...}}`): `verify=False` opts out,
`tolerance` and `accept` as for a conversion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import registry
from ..backend import LoadOptions
from ..cache import cache_dir
from ..errors import FrontendMismatchError, UnirtError, UnsupportedOptionError
from ..formats import Format, ModelFile
from ..loading import CONVERSION_OPTION, CheckedRunner, split_settings
from ..quantized import computed_precision
from .verify import TOLERANCES, OutputError, compare, describe_feeds

__all__ = ["FrontendVerification", "FrontendCheck", "reference_for", "split_settings", "CACHE_FOLDER"]

log = logging.getLogger(__name__)

CACHE_FOLDER = "frontend-checks"
_KEYS = {"verify", "tolerance", "accept"}
_CACHE_VERSION = 1


def reference_for(fmt: Format, exclude: str) -> str | None:
    """An installed, available backend that owns `fmt` (`Backend.owns`), other than `exclude`."""
    for name in registry.installed_names():
        if name == exclude:
            continue
        try:
            plugin = registry.get_backend(name)
            if plugin.owns(fmt) and fmt in plugin.formats and registry.availability(name).available:
                return name
        except UnirtError:
            continue
    return None


@dataclass(frozen=True)
class FrontendVerification:
    """Whether a session whose backend reads the model through a frontend is verified, and against what.

    `state`: "pending" (checked on the first run), "verified", "accepted" (beyond tolerance, accepted), "failed"
    (beyond tolerance: the first run raises), "off" (verify=False), "unverifiable" (no reference engine, or the
    reference could not run the inputs; `reason` says why)."""

    backend: str
    source_format: str
    state: str
    reference: str | None = None
    errors: tuple[OutputError, ...] = ()
    tolerance: float | None = None
    verified_on: str = ""
    cached: bool = False
    seconds: float | None = None
    reason: str = ""

    @property
    def verified(self) -> bool:
        """Compared with the reference and within tolerance."""
        return self.state == "verified"

    @property
    def max_error(self) -> float | None:
        return max((e.error for e in self.errors), default=None)  # type: ignore[type-var]

    def describe_errors(self) -> str:
        return ", ".join(e.describe() for e in self.errors)

    def short(self) -> str:
        """One phrase for a repr: "verified against onnxruntime (cached)", "pending (first run, onnxruntime)"."""
        cached = ", cached" if self.cached else ""
        if self.state == "verified":
            return f"verified against {self.reference} (error {self.max_error:.2g}{cached})"
        if self.state in ("failed", "accepted"):
            return (
                f"{'FAILED' if self.state == 'failed' else 'accepted'} against {self.reference} (error "
                f"{self.max_error:.2g} > {self.tolerance:g}{cached})"
            )
        if self.state == "pending":
            return f"pending: checked against {self.reference} on the first run"
        if self.state == "off":
            return "not verified (verify=False)"
        return f"not verified ({self.reason})"

    def __str__(self) -> str:
        head = f"{self.source_format} read by {self.backend}'s frontend: "
        if self.state in ("verified", "failed", "accepted"):
            verdict = "within" if self.state == "verified" else "EXCEEDS"
            how = "cached result" if self.cached else f"checked in {self.seconds or 0:.2f} s"
            return (
                f"{head}{'verified' if self.state == 'verified' else self.state.upper()} against "
                f"{self.reference} on {self.verified_on} ({how}): {self.describe_errors()} ({verdict} "
                f"tolerance {self.tolerance:g})"
            )
        return head + self.short()

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "source_format": self.source_format,
            "state": self.state,
            "reference": self.reference,
            "errors": [e.as_dict() for e in self.errors],
            "tolerance": self.tolerance,
            "verified_on": self.verified_on,
            "cached": self.cached,
            "seconds": self.seconds,
            "reason": self.reason,
        }


def _quantized_hint(model: ModelFile, precision: str) -> str:
    """For a quantized model judged at a float tolerance: two engines' int8 kernels round differently, so ask for
    precision='int8' (the int8 tolerance), which is what the model computes anyway."""
    if precision == "int8" or computed_precision(model, precision) != "int8":
        return ""
    return (
        f". The model is quantized (it computes int8 whatever is asked): load it with precision='int8' to judge "
        f"it at the int8 tolerance {TOLERANCES['int8']:g}"
    )


def _key(content: str, backend: str, reference: str, options: LoadOptions) -> str:
    from .build import engine_versions, plugin_code_hash

    parts = {
        "v": _CACHE_VERSION,
        "model": content,
        "backend": engine_versions(backend),
        "plugin_code": plugin_code_hash(backend),
        "reference": engine_versions(reference),
        "precision": options.precision,
        "device": str(options.device),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


def _read(key: str) -> dict | None:
    try:
        record = json.loads((cache_dir(CACHE_FOLDER) / f"{key}.json").read_text())
        return record if isinstance(record, dict) and isinstance(record.get("errors"), list) else None
    except (OSError, ValueError):
        return None


def _write(key: str, record: dict) -> None:
    folder = cache_dir(CACHE_FOLDER)
    tmp = folder / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, folder / f"{key}.json")
    except OSError as exc:  # a read-only cache costs a re-check next time, not the run
        log.warning("could not write the frontend check %s: %s", folder / f"{key}.json", exc)
        tmp.unlink(missing_ok=True)


class FrontendCheck:
    """The check a Session runs on its first run (`run`), planned at load (`plan`)."""

    def __init__(
        self,
        model: ModelFile,
        backend: str,
        reference: str,
        options: LoadOptions,
        key: str,
        tolerance: float,
        accept: bool,
        status: FrontendVerification,
    ) -> None:
        self.model, self.backend, self.reference, self.options, self.key = model, backend, reference, options, key
        self.tolerance, self.accept = tolerance, accept
        self.status = status
        self.lock = threading.Lock()

    @classmethod
    def plan(
        cls, model: ModelFile, backend: str, options: LoadOptions, settings: Mapping[str, Any]
    ) -> tuple[FrontendVerification | None, FrontendCheck | None]:
        """At load: (the session's verification status, the check still to run on the first run or None).
        (None, None) when the backend owns the model's format."""
        plugin = registry.get_backend(backend)
        if not plugin.reads_through_frontend(model):
            return None, None
        unknown = set(settings) - _KEYS - {"input_shapes", "cache", "timeout", "converter_options"}
        if unknown:
            raise UnsupportedOptionError(
                f"backend_options[{CONVERSION_OPTION!r}]: unknown key(s) "
                f"{sorted(unknown)}; a frontend check takes {', '.join(sorted(_KEYS))}"
            )
        fmt = model.format.value
        if not settings.get("verify", True):
            return FrontendVerification(backend, fmt, "off"), None
        tolerance = settings.get("tolerance")
        tolerance = TOLERANCES[options.precision] if tolerance is None else float(tolerance)
        accept = bool(settings.get("accept", False))
        reference = reference_for(model.format, backend)
        if reference is None:
            reason = f"no engine that owns {fmt} is installed as its reference"
            log.warning(
                "%s: %s reads this %s model through its frontend, unverified: %s", model.name, backend, fmt, reason
            )
            return FrontendVerification(backend, fmt, "unverifiable", reason=reason), None
        key = _key(model.content_hash, backend, reference, options)
        pending = FrontendVerification(backend, fmt, "pending", reference, tolerance=tolerance)
        check = cls(model, backend, reference, options, key, tolerance, accept, pending)
        record = _read(key) if settings.get("cache", True) else None
        if record is None:
            return pending, check
        status = check._judge(
            tuple(OutputError.from_dict(e) for e in record["errors"]),
            str(record.get("verified_on", "")),
            True,
            record.get("seconds"),
        )
        # a failure found earlier is raised on this session's first run too, as it would be when measured
        return status, (check if status.state == "failed" else None)

    def _judge(
        self, errors: tuple[OutputError, ...], verified_on: str, cached: bool, seconds: float | None
    ) -> FrontendVerification:
        ok = all(e.within(self.tolerance) for e in errors)
        state = "verified" if ok else ("accepted" if self.accept else "failed")
        return FrontendVerification(
            self.backend,
            self.model.format.value,
            state,
            self.reference,
            errors,
            self.tolerance,
            verified_on,
            cached,
            seconds,
        )

    def _raise(self, status: FrontendVerification) -> None:
        raise FrontendMismatchError(
            f"{self.model.name}: {self.backend} reads this {status.source_format} model through its frontend and "
            f"disagrees with {self.reference} beyond the {self.options.precision} tolerance {self.tolerance:g}: "
            f"{status.describe_errors()}; verified on {status.verified_on}. Use backend={self.reference!r}, or pass "
            "backend_options={'conversion': {'accept': True}} (CLI: --accept) or a larger tolerance to use it anyway"
            + _quantized_hint(self.model, self.options.precision),
            errors=status.errors,
            reference=self.reference,
        )

    def run(self, runner: Any, arrays: Mapping[str, np.ndarray], output_names: Sequence[str]) -> FrontendVerification:
        """Run the reference and `runner` on `arrays` (the first run's checked inputs) and judge. Raises
        FrontendMismatchError beyond tolerance unless accepted; caches the measured errors."""
        if self.status.state == "failed":  # known from the cache
            self._raise(self.status)
        t0 = time.perf_counter()
        feeds = {k: np.array(v, copy=True) for k, v in arrays.items()}  # the reference must not see later writes
        try:
            with CheckedRunner(self.reference, self.model) as ref:
                names = [i.name for i in ref.inputs]
                if set(names) != set(feeds) and len(names) == len(feeds):  # another frontend's names: by position
                    expected = ref.run(dict(zip(names, feeds.values())))
                else:
                    expected = ref.run(feeds)
        except UnirtError as exc:
            reason = f"{self.reference} could not run the first run's inputs: {type(exc).__name__}: {exc}"
            log.warning(
                "%s: %s reads this model through its frontend, unverified: %s", self.model.name, self.backend, reason
            )
            self.status = FrontendVerification(
                self.backend,
                self.model.format.value,
                "unverifiable",
                self.reference,
                reason=reason.splitlines()[0][:300],
            )
            return self.status
        got = dict(zip(output_names, runner.run(feeds, tuple(output_names))))
        if set(expected) != set(got) and len(expected) == len(got):  # another frontend may rename outputs
            got = dict(zip(expected, got.values()))
        seconds = time.perf_counter() - t0
        errors = tuple(compare([got], [expected]))
        verified_on = f"the first run's inputs ({describe_feeds(feeds)})"
        _write(
            self.key,
            {
                "v": _CACHE_VERSION,
                "model": self.model.name,
                "backend": self.backend,
                "reference": self.reference,
                "precision": self.options.precision,
                "device": str(self.options.device),
                "verified_on": verified_on,
                "seconds": seconds,
                "errors": [e.as_dict() for e in errors],
                "created": time.time(),
            },
        )
        status = self.status = self._judge(errors, verified_on, False, seconds)
        if status.state == "failed":
            self._raise(status)
        if status.state == "accepted":
            log.warning(
                "%s: %s's frontend disagrees with %s beyond tolerance %g (%s); accepted",
                self.model.name,
                self.backend,
                self.reference,
                self.tolerance,
                status.describe_errors(),
            )
        return status
