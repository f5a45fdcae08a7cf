"""ONNX in, native format out, verified: `unirt.convert` and conversion on load.

    conv = unirt.convert("model.onnx", to="mnn", out="model.mnn")      # -> Conversion (os.PathLike)
    print(conv)                                                        # what was fixed up, measured error, cache
    unirt.Session(conv, backend="mnn")

Steps, the same for every backend (each plugin only runs its own converter in `Backend.convert`):
1. the source model's content hash, the backend, its plugin and engine versions and the options make the cache key;
   a finished entry under `unirt.cache_dir("conversions")` is reused;
2. ONNX sources get the fixups for known converter bugs (`fixups.py`);
3. the plugin's converter runs in a child process (`child.py`), which then loads the converted model and runs it on
   random inputs: a crash in either is a ConversionError, not a dead program;
4. ONNX Runtime (or another backend that reads the source) runs the source model on the same inputs; an output
   whose error (`verify.py`: relative L2, or absolute rms error over a floor for a near-zero output) exceeds the
   precision's tolerance makes the conversion a ConversionError stating the measured error, unless `accept=True`
   (or a larger `tolerance`). `Conversion.verified_on` says which data that was.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import registry
from ..backend import PRECISIONS, LoadOptions
from ..devices import Device
from ..errors import BackendUnavailableError, ConversionError, UnsupportedOptionError
from ..formats import ModelFile, PathLike, open_model
from ..loading import CONVERSION_OPTION
from . import store
from .build import build, conversion_parts
from .signature import format_shapes, needs_run_shapes, read_sidecar
from .verify import TOLERANCES, OutputError

__all__ = [
    "Conversion",
    "convert",
    "convert_for_load",
    "conversion_settings",
    "TOLERANCES",
    "CONVERSION_OPTION",
    "read_sidecar",
    "needs_run_shapes",
]

log = logging.getLogger(__name__)

_CONVERSION_KEYS = {"input_shapes", "verify", "tolerance", "accept", "cache", "timeout", "converter_options"}


@dataclass(frozen=True)
class Conversion:
    """A converted model (usable wherever a path is: `unirt.Session(conv)`), and how it was made."""

    source: str
    backend: str
    path: Path
    files: tuple[Path, ...]
    cached: bool
    seconds: float
    converter: str
    fixups: tuple[str, ...] = ()
    errors: tuple[OutputError, ...] = ()
    tolerance: float | None = None
    verified: bool = False
    reference: str | None = None
    #: The input shapes it was converted at, and the dims (per input) the converted model keeps dynamic: it was
    #: verified at a second size of those; any other dim is fixed at its size in `shapes`.
    shapes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    dynamic_axes: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    #: What data verified it (a run's real inputs, random inputs, at which shapes), in words.
    verified_on: str | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def max_error(self) -> float | None:
        """The largest judged error over the outputs (`OutputError.error`), None when not verified."""
        return max((e.error for e in self.errors), default=None) if self.verified else None  # type: ignore

    @property
    def within_tolerance(self) -> bool:
        """Verified, every float output's error within `tolerance` and every integer/bool output exact."""
        if not self.verified or self.tolerance is None:
            return False
        return all(e.within(self.tolerance) for e in self.errors)

    def describe_shapes(self) -> str:
        """ "x:1x3x320x320 (dynamic: x dims 2, 3)" or "... (static)": the shapes it runs at."""
        dyn = "; ".join(f"{k} dims {', '.join(map(str, v))}" for k, v in self.dynamic_axes.items() if v)
        return format_shapes(self.shapes) + (f" (dynamic: {dyn})" if dyn else " (static sizes)")

    def describe_errors(self) -> str:
        return ", ".join(e.describe() for e in self.errors)

    def __str__(self) -> str:
        how = "cache hit" if self.cached else f"converted in {self.seconds:.2f} s"
        lines = [f"{self.source} -> {self.backend}: {self.path} ({how}; {self.converter})"]
        if self.shapes:
            lines.append(f"  converted at {self.describe_shapes()}")
        lines += [f"  fixed up: {f}" for f in self.fixups]
        if self.verified:
            verdict = "within" if self.within_tolerance else "EXCEEDS"
            lines.append(
                f"  verified against {self.reference} on {self.verified_on or 'random inputs'}: "
                f"{self.describe_errors()} ({verdict} tolerance {self.tolerance:g})"
            )
        else:
            lines.append("  not verified")
        return "\n".join(lines)


def _check_target(model: ModelFile, to: str) -> Any:
    plugin = registry.get_backend(to)
    if model.format not in plugin.converts_from:
        if plugin.accepts(model):
            raise ConversionError(
                f"{model.name}: backend {to!r} reads {model.format} models as they are; there is nothing to convert"
            )
        froms = ", ".join(sorted(f.value for f in plugin.converts_from)) or "nothing"
        hint = f". {plugin.convert_hint}" if plugin.convert_hint else ""
        raise ConversionError(
            f"{model.name}: backend {to!r} cannot convert {model.format} models (it converts from: {froms}){hint}"
        )
    avail = registry.availability(to)
    if not avail.available:
        raise BackendUnavailableError(f"backend {to!r} cannot run here: {avail.reason}")
    return plugin


def _copy_out(conv: Conversion, out: Path) -> Conversion:
    """Copy the converted files to `out` (a file name for the main file, or a folder)."""
    main_suffix = "".join(conv.path.suffixes[-1:])
    if out.suffix:
        folder, stem = out.parent, out.name[: -len(out.suffix)]
        if out.suffix != main_suffix:
            raise ConversionError(f"out={out}: a {conv.backend} model's main file ends in {main_suffix}")
    else:
        folder, stem = out, conv.path.name[: -len(main_suffix)] if main_suffix else conv.path.name
    folder.mkdir(parents=True, exist_ok=True)
    old_stem = conv.path.name[: -len(main_suffix)] if main_suffix else conv.path.name
    copied = []
    for f in conv.files:
        name = stem + f.name[len(old_stem) :] if f.name.startswith(old_stem) else f.name
        shutil.copyfile(f, folder / name)
        copied.append(folder / name)
    main = copied[conv.files.index(conv.path)]
    return Conversion(**{**conv.__dict__, "path": main, "files": tuple(copied)})


def convert(
    model: PathLike | bytes | ModelFile,
    to: str,
    out: PathLike | None = None,
    *,
    precision: str = "fp32",
    device: str = "auto",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    verify: bool = True,
    tolerance: float | None = None,
    accept: bool = False,
    cache: bool = True,
    timeout: float = 900.0,
    converter_options: Mapping[str, Any] | None = None,
) -> Conversion:
    """Convert `model` into backend `to`'s native format with that backend's own converter, verified.

    `out`: where to put the result (a file name such as "model.param", or a folder); by default it stays in the
    cache. `input_shapes`: {input: shape} for dynamic dims (default 1 each, 224 for an image's H and W:
    `signature.concrete_shape`; converters that need static shapes, like pnnx, use them). `precision`: the weights
    and arithmetic asked of the converter (fp32 keeps fp32 weights).
    `device`: where the result is for and is verified ("auto": the backend's first device here; TensorRT engines
    are per GPU). `verify`: compare outputs with the source model's on random inputs; beyond `tolerance` (default
    per precision, `TOLERANCES`) raise ConversionError stating the error unless `accept=True`. `cache=False`
    converts afresh. `converter_options` go to the plugin's converter (e.g. MNN's `mnnconvert_args`).
    """
    if precision not in PRECISIONS:
        raise UnsupportedOptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    src = open_model(model)
    plugin = _check_target(src, to)
    dev = Device.parse(device)
    picked = dev.pick(registry.availability(to).devices)
    if picked is None:
        raise UnsupportedOptionError(f"backend {to!r} cannot run on {dev} here")
    options = LoadOptions(device=Device.parse(picked), precision=precision)
    conv = _convert(
        src,
        plugin.name,
        options,
        input_shapes=input_shapes,
        verify=verify,
        tolerance=tolerance,
        accept=accept,
        cache=cache,
        timeout=timeout,
        converter_options=converter_options or {},
    )
    return _copy_out(conv, Path(out)) if out is not None else conv


def _convert(
    src: ModelFile,
    name: str,
    options: LoadOptions,
    *,
    input_shapes: Mapping | None,
    verify: bool,
    tolerance: float | None,
    accept: bool,
    cache: bool,
    timeout: float,
    converter_options: Mapping,
    inputs: Mapping[str, Any] | None = None,
) -> Conversion:
    if inputs is not None:  # converted at a run's shapes, verified on its inputs; cached per shape signature
        input_shapes = {k: tuple(int(d) for d in getattr(v, "shape", ())) for k, v in inputs.items()}
    key = store.cache_key(src.content_hash, conversion_parts(name, options, input_shapes, converter_options))
    record = store.read_record(key) if cache else None
    cached = record is not None and (record["verified"] or not verify)
    tol = TOLERANCES[options.precision] if tolerance is None else float(tolerance)
    if not cached:
        log.info("converting %s (%s) for backend %s with its converter", src.name, src.format, name)
        record = build(
            src,
            name,
            options,
            key,
            input_shapes=input_shapes,
            converter_options=converter_options,
            verify=verify,
            timeout=timeout,
            inputs=inputs,
            tolerance=tol,
        )
    assert record is not None
    entry = store.entry_dir(key)
    conv = Conversion(
        source=src.name,
        backend=name,
        path=entry / record["main"],
        files=tuple(entry / f for f in record["files"]),
        cached=cached,
        seconds=record["seconds"],
        converter=record["converter"],
        fixups=tuple(record["fixups"]),
        errors=tuple(OutputError.from_dict(e) for e in record["errors"]),
        tolerance=tol,
        verified=bool(record["verified"]) and verify,
        reference=record.get("reference"),
        shapes={k: tuple(v) for k, v in (record.get("shapes") or {}).items()},
        dynamic_axes={k: tuple(v) for k, v in (record.get("dynamic_axes") or {}).items()},
        verified_on=record.get("verified_on"),
    )
    if conv.verified and not conv.within_tolerance:
        message = (
            f"{src.name}: the {name} conversion disagrees with {conv.reference} beyond the {options.precision} "
            f"tolerance {tol:g}: {conv.describe_errors()}; verified on {conv.verified_on or 'random inputs'}"
        )
        if not accept:
            raise ConversionError(
                message + ". Pass accept=True (or a larger tolerance; CLI: --accept, --tolerance) to use it anyway."
            )
        log.warning("%s; accepted", message)
    elif not conv.verified:
        log.warning("%s: the %s conversion is not verified (verify=False)", src.name, name)
    log.info("%s", conv)
    return conv


def conversion_settings(options: LoadOptions) -> tuple[dict[str, Any], LoadOptions]:
    """The conversion settings in `backend_options["conversion"]` (checked), and the options without them."""
    backend_options = dict(options.backend_options)
    settings = backend_options.pop(CONVERSION_OPTION, None) or {}
    if not isinstance(settings, Mapping) or set(settings) - _CONVERSION_KEYS:
        raise UnsupportedOptionError(
            f"backend_options[{CONVERSION_OPTION!r}] must be a dict with keys from "
            f"{', '.join(sorted(_CONVERSION_KEYS))}, got {settings!r}"
        )
    return dict(settings), dataclasses.replace(options, backend_options=backend_options)


def convert_for_load(
    model: ModelFile,
    backend: str,
    options: LoadOptions,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> tuple[ModelFile, Conversion, LoadOptions]:
    """Conversion on load (`Session(..., backend=X)` with a model X converts from): the converted model, what was
    done, and the options for loading it (the conversion settings taken out of `backend_options`).

    `input_shapes` (a Session's own; else the conversion settings' "input_shapes"): the shapes to convert at.
    `inputs`: a run's real inputs (a Session converting lazily at its first run): converted at their shapes and
    verified on them first, cached per shape signature."""
    settings, load_options = conversion_settings(options)
    shapes = input_shapes if input_shapes is not None else settings.get("input_shapes")
    conv = _convert(
        model,
        backend,
        LoadOptions(device=options.device, precision=options.precision),
        input_shapes=shapes,
        verify=settings.get("verify", True),
        tolerance=settings.get("tolerance"),
        accept=settings.get("accept", False),
        cache=settings.get("cache", True),
        timeout=settings.get("timeout", 900.0),
        converter_options=settings.get("converter_options", {}),
        inputs=inputs,
    )
    return open_model(conv.path), conv, load_options
