"""The plugin contract: what a backend distribution implements.

A plugin is a distribution that registers a `Backend` subclass under the `unirt.backends` entry-point group:

    [project.entry-points."unirt.backends"]
    myengine = "unirt_myengine.backend:MyEngineBackend"

The Backend is a *loader*: cheap to construct, imports its engine only in `probe()` and `load()`.
`load()` returns a `BackendSession`, the *runner*: `inputs`, `outputs`, `run`, `close`.
unirt checks every feed (names, dtypes, ranks, static dims, contiguity) before calling `run`, so a plugin
only translates. Optional abilities are small extra methods (`run_into`), looked up once at load.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from .devices import Device
from .errors import UnsupportedOptionError
from .formats import ModelFile, ModelFormat
from .tensor import TensorInfo

__all__ = ["Availability", "LoadOptions", "Backend", "BackendSession", "SupportsRunInto", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run on this machine, and if not, why.

    `devices` lists where it can run here, most capable first, as unirt device strings ("cuda:0", "npu", "cpu").
    `device_note` says why hardware this machine has is not among them and what would change that (e.g. "this
    onnxruntime build has no CUDA provider: install onnxruntime-gpu"); it is shown when such a device is asked for.
    """

    available: bool
    reason: str = ""
    version: str | None = None
    devices: tuple[str, ...] = ()
    device_note: str = ""

    @classmethod
    def missing(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass(frozen=True)
class LoadOptions:
    """Options with one meaning on every backend. `backend_options` goes to the engine verbatim.

    `max_batch`: the largest batch the caller will run on a dynamic-batch model (`Session(max_batch=N)`, which
    splits larger requests), None when not given. Engines that build for bounded shapes size for it (TensorRT's
    optimization profile); the others ignore it.
    """

    device: Device = field(default_factory=lambda: Device("cpu"))
    threads: int | None = None
    precision: str = "fp32"
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    max_batch: int | None = None


class BackendSession(abc.ABC):
    """A loaded model on one backend (the runner). Inputs it receives are already checked by unirt."""

    inputs: Sequence[TensorInfo]
    outputs: Sequence[TensorInfo]
    device: str = "cpu"
    #: The precision actually in force (shown by Session.repr); None means "as requested".
    precision: str | None = None
    #: How the precision in force was determined (engine setting, CPU features, probe), for Session.precision_info
    #: and explain; None: nothing to add to the precision's name.
    precision_info: str | None = None
    #: The largest batch the loaded engine runs on a dynamic batch dim (a TensorRT profile's max), None when
    #: unbounded: a Session given no max_batch splits larger requests at this size.
    max_batch: int | None = None

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> Sequence[Any]:
        """Run once; return the outputs named in `output_names`, in that order, as arrays the caller owns.

        `feeds` holds one C-contiguous array of the declared dtype and rank for every input. The returned arrays
        must not be overwritten by later calls.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's resources. Called once; the session is not used afterwards."""


class Backend(abc.ABC):
    """A backend plugin (the loader). Subclasses set `name` and `formats` and implement `probe` and `load`."""

    name: ClassVar[str]
    formats: ClassVar[frozenset[ModelFormat]]
    #: What to install for this backend, shown in errors.
    install_hint: ClassVar[str] = ""
    #: Formats this backend can convert into one it reads, with its engine's own converter (e.g. ONNX for MNN).
    converts_from: ClassVar[frozenset[ModelFormat]] = frozenset()
    #: For formats it does not convert: what to do instead (an outside converter), added to unirt's error.
    convert_hint: ClassVar[str] = ""
    #: backend_options for loading a converted model to verify it: opt-ins to refusals that guard the caller's
    #: precision (e.g. MNN's float64 refusal), moot there because verification compares the numbers itself.
    verification_options: ClassVar[Mapping[str, Any]] = {}
    #: The formats this backend's engine owns: its own format, which it runs as the reference does. None (the
    #: default): every format in `formats`. A format in `formats` but not here is read through a *frontend* that
    #: translates it into the engine's own graph (OpenVINO reading ONNX or TFLite; TensorRT building an engine from
    #: ONNX): that is a conversion, and unirt verifies it against the format's reference engine (a backend that owns
    #: the format) on the first run (`unirt.conversion.frontend`).
    native_formats: ClassVar[frozenset[ModelFormat] | None] = None

    @abc.abstractmethod
    def probe(self) -> Availability:
        """Import the engine and say whether it can run here. Must not raise."""

    @abc.abstractmethod
    def load(self, model: ModelFile, options: LoadOptions) -> BackendSession:
        """Load `model` with `options`. Raise unirt errors: ModelLoadError for a model the engine refuses,
        UnsupportedOptionError for an option it cannot honour."""

    def convert(self, model: ModelFile, out_dir: Path, options: LoadOptions) -> ModelFile:
        """Convert `model` (a format in `converts_from`) into this backend's native format inside `out_dir`.

        Called by unirt's conversion layer, which owns caching, running it in a child process and verifying the
        result; a plugin only calls its converter. Raise ConversionError with the converter's own message. Facts
        only the converter knows can go into the sidecar (`unirt.conversion.signature.write_sidecar` extras): the
        conversion layer adds the source's signature and keeps them.
        """
        raise UnsupportedOptionError(f"backend {self.name!r} converts no model formats")

    def converter_version(self) -> str | None:
        """What identifies the converter `convert` runs (version, and which binary where it can be swapped), when
        the engine's version does not (e.g. ncnn's pnnx). It is part of the conversion cache key: another
        converter converts afresh. None: nothing beyond the engine's version."""
        return None

    def accepts(self, model: ModelFile) -> bool:
        """Whether this backend can load this model; by default, by format."""
        return model.format in self.formats

    def owns(self, fmt: ModelFormat) -> bool:
        """Whether `fmt` is this engine's own format (`native_formats`), so that it can be a reference for it."""
        return fmt in (self.formats if self.native_formats is None else self.native_formats)

    def reads_through_frontend(self, model: ModelFile) -> bool:
        """Whether loading `model` as it is translates it through a frontend (a format read but not owned)."""
        return self.accepts(model) and not self.owns(model.format)

    def converts_on_load(self, model: ModelFile) -> bool:
        """Whether loading `model` needs it converted first (`unirt.conversion.convert_for_load`, cached)."""
        return not self.accepts(model) and model.format in self.converts_from


@runtime_checkable
class SupportsRunInto(Protocol):
    """Optional: a runner that writes outputs straight into caller memory (`Session.run(..., out=...)`)."""

    def run_into(self, feeds: dict[str, np.ndarray], output_names: Sequence[str],
                 out: dict[str, np.ndarray]) -> Sequence[Any]:
        """Like `run`, but each output named in `out` is written into that array and returned as it."""
