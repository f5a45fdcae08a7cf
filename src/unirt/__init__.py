"""unirt: one Python API over the inference engines people deploy models with.

    import unirt
    with unirt.Session("model.onnx") as sess:      # backend="auto" picks from format and hardware
        outputs = sess.run({"input": x})

Backends are plugins (`pip install ./plugins/onnxruntime` from the checkout, ...); `unirt.backends()` lists them.
This module imports no backend library.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    from . import _core  # noqa: F401 - probed: the compiled core; everything below needs it
except ImportError as _exc:  # pragma: no cover - depends on how unirt was installed
    raise ImportError(
        f"unirt's compiled core (unirt._core) cannot be imported from {__path__[0]}: {_exc}. "
        "If this is the source tree, install unirt (pip install .) and run from another directory or with the "
        "`pytest` command (not `python -m pytest`, which puts the source tree first on sys.path)."
    ) from None

from .arena import Arena, ArenaReport, ArenaStats
from .backend import Availability, Backend, BackendSession, FormatFacts, LoadOptions
from .batch_runner import BatchStats
from .batching import BatchSpec, gather, scatter
from .cache import cache_dir
from .devices import Device
from .errors import (
    ArenaBusyError,
    BackendCrashedError,
    BackendUnavailableError,
    BuffersRefusedError,
    ConversionError,
    FrontendMismatchError,
    InputError,
    ModelFormatError,
    ModelLoadError,
    RunError,
    SessionClosedError,
    UnirtError,
    UnsupportedOptionError,
)
from .formats import ModelFile, ModelFormat, PluginFormat, detect_format, open_model
from .hardware import Hardware, hardware
from .pool import BufferPool, PoolStats, pinned_memory_status
from .registry import BackendInfo, backends, refresh
from .selection import Candidate, Explanation
from .session import Session
from .shm import SharedRegion, SharedTensors, TensorSlot
from .tensor import Quantization, TensorInfo


def _own_version() -> str:
    """The installed distribution's version: `unirt-runtime` (the index's `unirt` is an unrelated project); an install
    made before the rename is read only if it is this project's (it carries the compiled core)."""
    try:
        return _version("unirt-runtime")
    except PackageNotFoundError:
        pass
    try:
        from importlib.metadata import distribution

        old = distribution("unirt")
        if any(str(f).startswith("unirt/_core") for f in old.files or ()):
            return old.version
    except PackageNotFoundError:
        pass
    return "0.0.0"  # running from a source tree without installing


__version__ = _own_version()


def convert(model, to: str, out=None, **options):
    """Convert `model` to backend `to`'s native format with its own converter, verified against the source model.
    See `unirt.conversion.convert` for the options; returns a `unirt.conversion.Conversion`."""
    from .conversion import convert as _convert

    return _convert(model, to, out, **options)


def explain(
    model,
    device: str = "auto",
    precision: str = "fp32",
    threads: int | None = None,
    backend_options: dict | None = None,
    *,
    fastest: bool = False,
    input_shapes=None,
    refresh: bool = False,
) -> Explanation:
    """Rank the backends for `model` on `device` as `Session(model, backend="auto", ...)` with these options would,
    and say why each was chosen or skipped, and whether the order came from a stored measurement of this model
    (`backend="fastest"`, `unirt explain --fastest`, `unirt bench`) or from the hardware table. A Session's
    `selection` adds the precision the chosen backend put in force.

    `fastest=True`: time them as `backend="fastest"` does, at `input_shapes` ({input: shape}, the shapes a
    converting backend converts at too; without them a model with open dims is timed at 1 per dim, not cached);
    `backend_options` as for a Session (e.g. the conversion settings {"conversion": {"tolerance": ...}})."""
    from .backend import PRECISIONS
    from .selection import auto_rank

    if precision not in PRECISIONS:
        raise UnsupportedOptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if fastest:
        from .fastest import choose
        from .session import _check_input_shapes

        result, runner = choose(
            open_model(model),
            device,
            threads=threads,
            precision=precision,
            input_shapes=_check_input_shapes(input_shapes),
            refresh=refresh,
            backend_options=backend_options,
        )
        if runner is not None:
            runner.close()
        return result
    if input_shapes is not None:
        raise UnsupportedOptionError("input_shapes is used with fastest=True (the shapes to time at)")
    return auto_rank(open_model(model), device, threads=threads, precision=precision, backend_options=backend_options)


__all__ = [
    "Session",
    "TensorInfo",
    "Quantization",
    "backends",
    "explain",
    "convert",
    "refresh",
    "hardware",
    "Hardware",
    "BackendInfo",
    "Candidate",
    "Explanation",
    "ModelFormat",
    "PluginFormat",
    "ModelFile",
    "detect_format",
    "open_model",
    "Device",
    "Backend",
    "BackendSession",
    "Availability",
    "LoadOptions",
    "FormatFacts",
    "UnirtError",
    "ModelLoadError",
    "ModelFormatError",
    "InputError",
    "BackendUnavailableError",
    "UnsupportedOptionError",
    "RunError",
    "SessionClosedError",
    "ConversionError",
    "FrontendMismatchError",
    "BackendCrashedError",
    "BuffersRefusedError",
    "cache_dir",
    "__version__",
    "BufferPool",
    "PoolStats",
    "pinned_memory_status",
    "Arena",
    "ArenaStats",
    "ArenaReport",
    "ArenaBusyError",
    "BatchSpec",
    "BatchStats",
    "gather",
    "scatter",
    "SharedRegion",
    "SharedTensors",
    "TensorSlot",
]
