"""The plugin contract: what a backend distribution implements.

A plugin is a distribution that registers a `Backend` subclass under the `unirt.backends` entry-point group:

    [project.entry-points."unirt.backends"]
    myengine = "unirt_myengine.backend:MyEngineBackend"

The Backend is a *loader*: cheap to construct, imports its engine only in `probe()` and `load()`.
`load()` returns a `BackendSession`, the *runner*: `inputs`, `outputs`, `run`, `close`.
unirt checks every feed (names, dtypes, ranks, static dims, contiguity) before calling `run`, so a plugin
only translates. Optional abilities are small extra methods (`run_into`), looked up once at load.

A plugin also declares its *facts* as class attributes (install hint, formats it reads and converts, GPU need,
serving platform names, image extras, its formats' file names): unirt derives every per-backend table from the
installed plugins (`unirt.registry`), none is kept in the core. docs/plugins.md is the guide.
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
from .formats import Format, ModelFile, PluginFormat
from .tensor import TensorInfo

__all__ = [
    "Availability",
    "LoadOptions",
    "Backend",
    "BackendSession",
    "SupportsRunInto",
    "FormatFacts",
    "PRECISIONS",
    "NUMERIC_DTYPES",
]

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: Every numeric and boolean tensor type (`Backend.tensor_dtypes` of an engine without string tensors)
NUMERIC_DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "bfloat16",
        "float32",
        "float64",
    }
)


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
class FormatFacts:
    """What serving needs to know of a format a plugin owns (`Backend.format_facts`).

    `model_files`: the file names `unirt serve` looks for in a Triton version directory, the first the one
    `unirt deploy` writes ("model.onnx"); `kserve_name` / `kserve_version`: KServe's modelFormat for it.
    """

    model_files: tuple[str, ...]
    kserve_name: str
    kserve_version: str | None = None

    @classmethod
    def default(cls, fmt: Format) -> FormatFacts:
        """For a format whose plugin declares nothing: model.<format> and the format's own name."""
        return cls((f"model.{fmt.value}",), fmt.value)


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
    #: `Session(device_outputs=True)`: return outputs as device tensors where the backend runs on a GPU (a runner
    #: that does sets `BackendSession.device_outputs`); the others refuse it at load.
    device_outputs: bool = False


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
    #: Device kinds ("cuda") whose tensors `run` takes as they are, as `unirt.device_tensors.DeviceTensor` feeds
    #: (DLPack / `__cuda_array_interface__`, checked by unirt, never copied). Empty: host memory only.
    device_inputs: frozenset[str] = frozenset()
    #: Whether `run` returns device tensors (asked for with LoadOptions.device_outputs): fresh tensors the caller
    #: owns, ready on every stream when `run` returns.
    device_outputs: bool = False

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
    #: Formats it loads: `ModelFormat` members, or `PluginFormat`s of its own (with `detect_format`).
    formats: ClassVar[frozenset[Format]]
    #: What to install for this backend's engine, shown in errors (`unirt.registry.install_hint`); "" when the
    #: plugin's own distribution is all there is to install.
    install_hint: ClassVar[str] = ""
    #: Formats this backend can convert into one it reads, with its engine's own converter (e.g. ONNX for MNN).
    converts_from: ClassVar[frozenset[Format]] = frozenset()
    #: Formats in `converts_from` whose converter is another plugin's (format -> that backend's name), e.g. ONNX
    #: Runtime converting torch.export programs with the torch plugin's exporter: a container image serves them
    #: only where that plugin is installed too.
    converts_through: ClassVar[Mapping[Format, str]] = {}
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
    native_formats: ClassVar[frozenset[Format] | None] = None
    #: The tensor element types this backend can take as model inputs and outputs (names as
    #: `unirt.model_dtypes.io_dtypes` gives them: "float32", "int64", "bool", "string", ...). None (the default):
    #: any its engine reads. Backend selection skips a backend for a model whose inputs or outputs are of another.
    tensor_dtypes: ClassVar[frozenset[str] | None] = None
    #: It runs only on an NVIDIA GPU (TensorRT): deployments reserve one for it (Ray, KServe).
    needs_gpu: ClassVar[bool] = False
    #: Whose GPU its "gpu" device is: "nvidia" (a Ray "GPU" resource) or e.g. "intel" (OpenVINO), which is not.
    gpu_vendor: ClassVar[str] = "nvidia"
    #: The Triton `platform` name clients know it by (config.pbtxt, model metadata); None: its `name`.
    serve_platform: ClassVar[str | None] = None
    #: Other names a config.pbtxt `backend:` may call it by (e.g. "litert" for tflite).
    serve_aliases: ClassVar[tuple[str, ...]] = ()
    #: The plugin's own pip extra a serving image installs with it (e.g. TensorRT's "engine"); "" for none.
    image_extra: ClassVar[str] = ""
    #: unirt's own extras its image needs too (e.g. ("convert",) for a backend that converts ONNX on load).
    unirt_extras: ClassVar[tuple[str, ...]] = ()
    #: Serving facts of the formats it owns (file names in a model repository, KServe's format name); a format it
    #: owns and does not list here gets `FormatFacts.default`.
    format_facts: ClassVar[Mapping[Format, FormatFacts]] = {}

    def detect_format(self, data: memoryview, path: Path | None) -> PluginFormat | None:
        """For a plugin that adds a format of its own: whether `data` (a model's bytes; `path` its file, None for
        bytes in memory) is one of its `PluginFormat`s. Asked only when no built-in format matched; read what it
        needs and keep no reference to `data`. Return the format, or None. Raise ModelLoadError for content that
        is its format but damaged. Must not import the engine."""
        return None

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

    def owns(self, fmt: Format) -> bool:
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

    def run_into(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str], out: dict[str, np.ndarray]
    ) -> Sequence[Any]:
        """Like `run`, but each output named in `out` is written into that array and returned as it."""
