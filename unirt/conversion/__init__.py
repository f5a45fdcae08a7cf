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
   whose relative L2 error exceeds the precision's tolerance makes the conversion a ConversionError stating the
   measured error, unless `accept=True` (or a larger `tolerance`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import registry
from ..backend import PRECISIONS, LoadOptions
from ..canary import CHILD_ENV, mark_safe
from ..devices import Device
from ..errors import BackendUnavailableError, ConversionError, UnirtError, UnsupportedOptionError
from ..formats import ModelFile, ModelFormat, PathLike, open_model
from ..tensor import TensorInfo
from . import store
from .fixups import FIXUPS_VERSION
from .signature import concrete_shape, infos_to_json, read_sidecar, sidecar_path
from .verify import TOLERANCES, OutputError, compare, feed_sets

__all__ = ["Conversion", "convert", "convert_for_load", "TOLERANCES", "CONVERSION_OPTION", "read_sidecar"]

log = logging.getLogger(__name__)

#: The key of `backend_options` that carries conversion settings when a Session converts on load.
CONVERSION_OPTION = "conversion"
_CONVERSION_KEYS = {"input_shapes", "verify", "tolerance", "accept", "cache", "timeout", "converter_options"}

# Which backend gives reference outputs for a source format (any other installed reader is tried after it).
_REFERENCE = {ModelFormat.ONNX: "onnxruntime"}


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
    notes: tuple[str, ...] = field(default=())

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def max_error(self) -> float | None:
        return max((e.rel_l2 for e in self.errors), default=None) if self.verified else None

    @property
    def within_tolerance(self) -> bool:
        return self.verified and self.tolerance is not None and (self.max_error or 0.0) <= self.tolerance

    def describe_errors(self) -> str:
        return ", ".join(f"{e.name}: rel-L2 {e.rel_l2:.3g}, max abs {e.max_abs:.3g}{f' ({e.note})' if e.note else ''}"
                         for e in self.errors)

    def __str__(self) -> str:
        how = "cache hit" if self.cached else f"converted in {self.seconds:.2f} s"
        lines = [f"{self.source} -> {self.backend}: {self.path} ({how}; {self.converter})"]
        lines += [f"  fixed up: {f}" for f in self.fixups]
        if self.verified:
            verdict = "within" if self.within_tolerance else "EXCEEDS"
            lines.append(f"  verified against {self.reference}: {self.describe_errors()} ({verdict} tolerance "
                         f"{self.tolerance:g})")
        else:
            lines.append("  not verified")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _engine_versions(name: str) -> str:
    entry = registry.backends(names=[name])[0]
    return f"{name} plugin {entry.plugin_version or '?'}, engine {entry.engine_version or '?'}"


def _reference_backend(fmt: ModelFormat, target: str) -> str | None:
    preferred = _REFERENCE.get(fmt)
    names = ([preferred] if preferred else []) + registry.installed_names()
    for name in names:
        if name == target or name not in registry.installed_names():
            continue
        try:
            plugin = registry.get_backend(name)
        except UnirtError:
            continue
        if fmt in plugin.formats and registry.availability(name).available:
            return name
    return None


def _source_signature(model: ModelFile, reference: str | None) -> tuple[list[TensorInfo], list[TensorInfo]]:
    if reference is not None:
        from ..session import Session

        with Session(model, backend=reference, device="cpu") as sess:
            return list(sess.inputs), list(sess.outputs)
    if model.format is ModelFormat.ONNX:
        from .signature import onnx_signature

        return onnx_signature(_load_onnx(model))
    raise ConversionError(f"{model.name}: no installed backend reads {model.format} models, so unirt cannot learn "
                          "the model's inputs")


def _load_onnx(model: ModelFile) -> Any:
    try:
        import onnx
    except ImportError:
        raise ConversionError("converting an ONNX model needs the onnx package: pip install 'unirt[convert]' "
                              "(or pip install onnx)") from None
    try:
        if model.path is not None:
            return onnx.load(str(model.path))
        return onnx.load_from_string(model.data)
    except Exception as exc:
        raise ConversionError(f"{model.name}: onnx cannot parse the model: {exc}") from None


def _prepare_source(model: ModelFile, work: Path) -> tuple[ModelFile, list[str]]:
    """The model the converter sees: ONNX with fixups applied (written to `work`), other formats as they are."""
    if model.format is not ModelFormat.ONNX:
        return model, []
    import onnx

    from .fixups import apply_fixups

    proto = _load_onnx(model)
    notes = apply_fixups(proto)
    path = work / "source" / (Path(model.path).stem + ".onnx" if model.path else "model.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return open_model(path), notes


def _run_child(spec: dict, timeout: float, cwd: Path) -> dict:
    # The child is itself a throwaway process: its first load of the result needs no canary of its own.
    env = dict(os.environ, PYTHONFAULTHANDLER="1", **{CHILD_ENV: "1"})
    try:  # cwd: `-m` puts it first on sys.path, and a source checkout there would shadow the installed unirt
        proc = subprocess.run([sys.executable, "-m", "unirt.conversion.child"], input=json.dumps(spec),
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{spec['backend']}: the conversion did not finish within {timeout:.0f} s") from None
    messages = []
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            messages.append(msg)
    stage = "running the converted model" if {"stage": "converted"} in messages else "converting"
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ConversionError(f"{spec['backend']}: the process crashed ({how}) while {stage}:\n{tail}")
    result = messages[-1] if messages else {}
    if result.get("type") in ("UnsupportedOptionError", "BackendUnavailableError"):
        # an option the converter cannot honour is the caller's mistake, not a failed conversion
        error = UnsupportedOptionError if result["type"] == "UnsupportedOptionError" else BackendUnavailableError
        raise error(result["message"])
    if "error" in result:
        raise ConversionError(f"{spec['backend']}: {stage} failed: {result['error']}")
    if "main" not in result:
        raise ConversionError(f"{spec['backend']}: the conversion process gave no result:\n{proc.stderr[-2000:]}")
    return result


def _reference_outputs(model: ModelFile, reference: str | None, feeds: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
    """The source model's outputs on `feeds` (whose integer inputs become zeros if random ones are invalid for
    it, e.g. out-of-range indices; `feeds` is updated so the converted model sees the same)."""
    from ..errors import RunError
    from ..session import Session

    with Session(model, backend=reference, device="cpu") as ref:
        try:
            return ref.run(feeds)
        except RunError as first:
            ints = [k for k, v in feeds.items() if v.dtype.kind in "iub"]
            if not ints:
                raise ConversionError(f"{model.name}: the source model fails on random inputs: {first}") from None
            for k in ints:
                feeds[k] = np.zeros_like(feeds[k])
            try:
                return ref.run(feeds)
            except RunError as exc:
                raise ConversionError(f"{model.name}: the source model fails on random inputs: {exc}") from None


def _conversion_parts(plugin_name: str, options: LoadOptions, input_shapes: Mapping | None,
                      converter_options: Mapping) -> dict:
    return {"backend": plugin_name, "versions": _engine_versions(plugin_name), "precision": options.precision,
            "device": str(options.device), "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
            "converter_options": dict(converter_options), "fixups": FIXUPS_VERSION}


def _build(model: ModelFile, plugin_name: str, options: LoadOptions, key: str, *, input_shapes: Mapping | None,
           converter_options: Mapping, verify: bool, timeout: float) -> dict:
    """Convert (and run the result) in a child, compare with the reference, publish the cache entry."""
    reference = _reference_backend(model.format, plugin_name)
    if verify and reference is None:
        raise ConversionError(f"{model.name}: verifying the conversion needs a backend that reads {model.format} "
                              f"models as the reference (pip install unirt-onnxruntime); pass verify=False to accept "
                              "an unverified conversion")
    inputs, outputs = _source_signature(model, reference)
    shapes = {i.name: concrete_shape(i, input_shapes) for i in inputs}
    unknown = set(input_shapes or {}) - set(shapes)
    if unknown:
        raise ConversionError(f"input_shapes names unknown inputs {sorted(unknown)}; inputs: {sorted(shapes)}")
    work = store.new_work_dir(key)
    try:
        t0 = time.perf_counter()
        source, fix_notes = _prepare_source(model, work)
        sets = feed_sets(inputs, input_shapes) if verify else []
        ref_sets = [_reference_outputs(model, reference, feeds) for feeds in sets]
        in_paths, out_paths = [], []
        for i, feeds in enumerate(sets):
            in_paths.append(str(work / f"verify_in_{i}.npz"))
            out_paths.append(str(work / f"verify_out_{i}.npz"))
            np.savez(in_paths[-1], **feeds)
        spec = {"backend": plugin_name, "model": str(source.path), "out_dir": str(work / "out"),
                "device": str(options.device), "precision": options.precision,
                "converter_options": {**dict(converter_options),
                                      "input_shapes": {k: list(v) for k, v in shapes.items()},
                                      "input_dtypes": {i.name: i.dtype.name for i in inputs}},
                "load_options": {}, "inputs": infos_to_json(inputs), "outputs": infos_to_json(outputs),
                "sidecar": {"source": model.name, "source_format": model.format.value, "backend": plugin_name,
                            "precision": options.precision, "fixups": fix_notes,
                            "shapes": {k: list(v) for k, v in shapes.items()}},
                "verify_inputs": in_paths, "verify_outputs": out_paths}
        result = _run_child(spec, timeout, work)
        seconds = time.perf_counter() - t0
        errors: list[OutputError] = []
        if verify:
            got_sets = []
            for p in out_paths:
                with np.load(p, allow_pickle=False) as z:
                    got_sets.append({k: z[k] for k in z.files})
            errors = compare(got_sets, ref_sets)
        if verify:  # the child loaded and ran it: no need to try it again in a throwaway process
            mark_safe(open_model(result["main"]), plugin_name, registry.availability(plugin_name).version or "",
                      LoadOptions(device=options.device, precision=options.precision))
        shutil.rmtree(work / "source", ignore_errors=True)
        for p in in_paths + out_paths:
            Path(p).unlink(missing_ok=True)
        files = [Path(f) for f in result["files"]]
        side = sidecar_path(Path(result["main"]))
        files += [side] if side.exists() and side not in files else []
        record = {"main": str(Path(result["main"]).relative_to(work)),
                  "files": [str(f.relative_to(work)) for f in files],
                  "seconds": seconds, "converter": _engine_versions(plugin_name), "fixups": fix_notes,
                  "verified": verify, "reference": reference if verify else None,
                  "errors": [e.as_dict() for e in errors], "source": model.name}
        store.publish(key, work, record)
        return record
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _check_target(model: ModelFile, to: str) -> Any:
    plugin = registry.get_backend(to)
    if model.format not in plugin.converts_from:
        if plugin.accepts(model):
            raise ConversionError(f"{model.name}: backend {to!r} reads {model.format} models as they are; "
                                  "there is nothing to convert")
        froms = ", ".join(sorted(f.value for f in plugin.converts_from)) or "nothing"
        raise ConversionError(f"{model.name}: backend {to!r} cannot convert {model.format} models "
                              f"(it converts from: {froms})")
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
        name = stem + f.name[len(old_stem):] if f.name.startswith(old_stem) else f.name
        shutil.copyfile(f, folder / name)
        copied.append(folder / name)
    main = copied[conv.files.index(conv.path)]
    return Conversion(**{**conv.__dict__, "path": main, "files": tuple(copied)})


def convert(model: PathLike | bytes | ModelFile, to: str, out: PathLike | None = None, *,
            precision: str = "fp32", device: str = "auto", input_shapes: Mapping[str, Sequence[int]] | None = None,
            verify: bool = True, tolerance: float | None = None, accept: bool = False, cache: bool = True,
            timeout: float = 900.0, converter_options: Mapping[str, Any] | None = None) -> Conversion:
    """Convert `model` into backend `to`'s native format with that backend's own converter, verified.

    `out`: where to put the result (a file name such as "model.param", or a folder); by default it stays in the
    cache. `input_shapes`: {input: shape} for dynamic dims (default 1 each; converters that need static shapes,
    like pnnx, use them). `precision`: the weights and arithmetic asked of the converter (fp32 keeps fp32 weights).
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
    conv = _convert(src, plugin.name, options, input_shapes=input_shapes, verify=verify, tolerance=tolerance,
                    accept=accept, cache=cache, timeout=timeout, converter_options=converter_options or {})
    return _copy_out(conv, Path(out)) if out is not None else conv


def _convert(src: ModelFile, name: str, options: LoadOptions, *, input_shapes: Mapping | None, verify: bool,
             tolerance: float | None, accept: bool, cache: bool, timeout: float,
             converter_options: Mapping) -> Conversion:
    key = store.cache_key(store.content_hash(src), _conversion_parts(name, options, input_shapes,
                                                                      converter_options))
    record = store.read_record(key) if cache else None
    cached = record is not None and (record["verified"] or not verify)
    if not cached:
        log.info("converting %s (%s) for backend %s with its converter", src.name, src.format, name)
        record = _build(src, name, options, key, input_shapes=input_shapes, converter_options=converter_options,
                        verify=verify, timeout=timeout)
    assert record is not None
    entry = store.entry_dir(key)
    tol = TOLERANCES[options.precision] if tolerance is None else float(tolerance)
    conv = Conversion(source=src.name, backend=name, path=entry / record["main"],
                      files=tuple(entry / f for f in record["files"]), cached=cached, seconds=record["seconds"],
                      converter=record["converter"], fixups=tuple(record["fixups"]),
                      errors=tuple(OutputError.from_dict(e) for e in record["errors"]), tolerance=tol,
                      verified=bool(record["verified"]) and verify, reference=record.get("reference"))
    if conv.verified and not conv.within_tolerance:
        message = (f"{src.name}: the {name} conversion disagrees with {conv.reference} beyond the {options.precision} "
                   f"tolerance (relative L2 {tol:g}): {conv.describe_errors()}")
        if not accept:
            raise ConversionError(message + ". Pass accept=True (or a larger tolerance) to use it anyway.")
        log.warning("%s; accepted", message)
    elif not conv.verified:
        log.warning("%s: the %s conversion is not verified (verify=False)", src.name, name)
    log.info("%s", conv)
    return conv


def convert_for_load(model: ModelFile, backend: str, options: LoadOptions) -> tuple[ModelFile, Conversion,
                                                                                    LoadOptions]:
    """Conversion on load (`Session(..., backend=X)` with a model X converts from): the converted model, what was
    done, and the options for loading it (the conversion settings taken out of `backend_options`)."""
    backend_options = dict(options.backend_options)
    settings = backend_options.pop(CONVERSION_OPTION, None) or {}
    if not isinstance(settings, Mapping) or set(settings) - _CONVERSION_KEYS:
        raise UnsupportedOptionError(f"backend_options[{CONVERSION_OPTION!r}] must be a dict with keys from "
                                     f"{', '.join(sorted(_CONVERSION_KEYS))}, got {settings!r}")
    conv = _convert(model, backend, LoadOptions(device=options.device, precision=options.precision),
                    input_shapes=settings.get("input_shapes"), verify=settings.get("verify", True),
                    tolerance=settings.get("tolerance"), accept=settings.get("accept", False),
                    cache=settings.get("cache", True), timeout=settings.get("timeout", 900.0),
                    converter_options=settings.get("converter_options", {}))
    load_options = LoadOptions(device=options.device, threads=options.threads, precision=options.precision,
                               backend_options=backend_options)
    return open_model(conv.path), conv, load_options
