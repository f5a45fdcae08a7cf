"""Building one conversion: fix up the source, convert and run the result in a child process, compare with the
reference backend's outputs, publish the cache entry. `unirt.conversion.convert` decides when to build."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..backend import LoadOptions
from ..cache import ENV_CACHE_DIR
from ..canary import CHILD_ENV, mark_safe
from ..errors import BackendUnavailableError, ConversionError, RunError, UnirtError, UnsupportedOptionError
from ..formats import ModelFile, ModelFormat, open_model
from ..loading import CheckedRunner
from ..tensor import TensorInfo
from . import store
from .fixups import FIXUPS_VERSION
from .signature import concrete_shape, format_shapes, infos_to_json, second_shapes, sidecar_path
from .verify import (
    TOLERANCES,
    OutputError,
    compare,
    describe_feeds,
    describe_sets,
    feed_sets,
    index_bounds,
    random_feeds,
)

__all__ = ["build", "conversion_parts", "engine_versions"]

log = logging.getLogger(__name__)


def engine_versions(name: str) -> str:
    """The plugin's, engine's and (where the plugin names one: `Backend.converter_version`) converter's versions."""
    entry = registry.backends(names=[name])[0]
    converter = registry.get_backend(name).converter_version()
    return f"{name} plugin {entry.plugin_version or '?'}, engine {entry.engine_version or '?'}" + (
        f", converter {converter}" if converter else ""
    )


def _readers(fmt: ModelFormat, target: str) -> list[str]:
    """Installed, available backends other than `target` that read `fmt` models, the preferred reference (the
    backend whose engine owns the format, as plugins declare) first."""
    owner = registry.owner(fmt)
    preferred = owner.name if owner is not None else None
    installed = registry.installed_names()
    names = []
    for name in ([preferred] if preferred else []) + installed:
        if name == target or name in names or name not in installed:
            continue
        try:
            plugin = registry.get_backend(name)
        except UnirtError:
            continue
        if fmt in plugin.formats and registry.availability(name).available:
            names.append(name)
    return names


def _loaded_signature(
    model: ModelFile, readers: list[str]
) -> tuple[str | None, tuple[list[TensorInfo], list[TensorInfo]] | None, list[str]]:
    """The first of `readers` that loads `model`, with the signature it reads; and why the others did not."""
    failures = []
    for name in readers:
        try:
            with CheckedRunner(name, model) as runner:
                return name, (list(runner.inputs), list(runner.outputs)), failures
        except UnirtError as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    return None, None, failures


def _reference_and_signature(
    model: ModelFile, target: str, verify: bool
) -> tuple[str | None, list[TensorInfo], list[TensorInfo]]:
    """The backend that gives reference outputs (None unless `verify`) and the source model's signature.

    Verifying needs a backend that loads the source: the preferred one, else any other installed reader. Without
    verification an ONNX model's signature is read from the file itself, so a model no reader loads still
    converts (a converter may well handle what ONNX Runtime refuses)."""
    readers = _readers(model.format, target)
    if not verify:
        if model.format is ModelFormat.ONNX:
            return (None, *_onnx_file_signature(model))
        name, signature, failures = _loaded_signature(model, readers)
        if signature is None:
            why = f": {'; '.join(failures)}" if failures else ""
            raise ConversionError(
                f"{model.name}: no installed backend reads this {model.format} model, so unirt "
                f"cannot learn the model's inputs{why}"
            )
        return (None, *signature)
    if not readers:
        raise ConversionError(
            f"{model.name}: verifying the conversion needs a backend that reads {model.format} "
            "models as the reference (pip install ./plugins/onnxruntime from unirt's source "
            "checkout); pass verify=False to accept an unverified conversion"
        )
    name, signature, failures = _loaded_signature(model, readers)
    if signature is None:
        raise ConversionError(
            f"{model.name}: the conversion cannot be verified: no reference backend loads the "
            f"source model ({'; '.join(failures)}). Pass verify=False to convert it unverified."
        )
    return (name, *signature)


def _onnx_file_signature(model: ModelFile) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs as the ONNX file states them, output shapes completed by ONNX's shape inference."""
    from .signature import onnx_signature

    proto = _load_onnx(model)
    try:
        from onnx import shape_inference

        proto = shape_inference.infer_shapes(proto)
    except Exception:  # shape inference is a nicety here: the file's own outputs still name the tensors
        pass
    return onnx_signature(proto)


def _load_onnx(model: ModelFile, external_data: bool = True) -> Any:
    try:
        import onnx
    except ImportError:
        raise ConversionError("converting an ONNX model needs the onnx package: pip install onnx") from None
    try:
        if model.path is not None:
            return onnx.load(str(model.path), load_external_data=external_data)
        return onnx.load_from_string(model.data)
    except Exception as exc:
        raise ConversionError(f"{model.name}: onnx cannot parse the model: {exc}") from None


def _prepare_source(model: ModelFile, work: Path) -> tuple[ModelFile, list[str], dict[str, int]]:
    """The model the converter sees: ONNX with fixups applied (written to `work`), other formats as they are; and
    the index ranges of its integer inputs, for verification (`verify.index_bounds`)."""
    if model.format is not ModelFormat.ONNX:
        return model, [], {}
    import onnx

    from .fixups import apply_fixups

    proto = _load_onnx(model)
    bounds = index_bounds(proto)
    notes = apply_fixups(proto)
    path = work / "source" / (Path(model.path).stem + ".onnx" if model.path else "model.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return open_model(path), notes, bounds


def _run_child(spec: dict, timeout: float, cwd: Path) -> dict:
    # The child is itself a throwaway process: its first load of the result needs no canary of its own.
    env = dict(os.environ, PYTHONFAULTHANDLER="1", **{CHILD_ENV: "1"})
    if env.get(ENV_CACHE_DIR):  # the child runs elsewhere: a relative cache dir would name another folder
        env[ENV_CACHE_DIR] = os.path.abspath(env[ENV_CACHE_DIR])
    try:  # cwd: `-m` puts it first on sys.path, and a source checkout there would shadow the installed unirt
        proc = subprocess.run(
            [sys.executable, "-m", "unirt.conversion.child"],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
        )
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


def _reference_outputs(model: ModelFile, reference: str | None, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The source model's outputs on `feeds` (whose integer inputs become zeros if random ones are invalid for
    it, e.g. out-of-range indices; `feeds` is updated so the converted model sees the same)."""

    def failed(exc: Exception) -> ConversionError:
        shapes = ", ".join(f"{k}={list(v.shape)}" for k, v in feeds.items())
        example = next(iter(feeds), "x")
        return ConversionError(
            f"{model.name}: the source model fails on random inputs at the shapes unirt chose for its dynamic dims "
            f"({shapes}): {exc}. Give shapes it takes: input_shapes={{{example!r}: [...]}} (unirt.convert, "
            f"unirt.Session) or --shape {example}:1x3x224x224 (CLI: run, bench, compare, convert, explain, info); a "
            "Session given no shapes converts at its first run's inputs instead"
        )

    with CheckedRunner(reference, model) as ref:
        try:
            return ref.run(feeds)
        except RunError as first:
            ints = [k for k, v in feeds.items() if v.dtype.kind in "iub"]
            if not ints:
                raise failed(first) from None
            for k in ints:
                feeds[k] = np.zeros_like(feeds[k])
            try:
                return ref.run(feeds)
            except RunError as exc:
                raise failed(exc) from None


#: Bumped when what a conversion builds changes: 2 = dynamic-size models verified at a second size.
_LAYOUT = 2


@functools.cache
def plugin_code_hash(name: str) -> str:
    """A hash of the plugin package's Python files: a fix to a plugin's converter code (or to what it refuses)
    converts afresh even where the plugin's version number did not move, so no stale cached failure survives it."""
    module = sys.modules.get(type(registry.get_backend(name)).__module__)
    package = Path(module.__file__).parent if module is not None and getattr(module, "__file__", None) else None
    return code_hash(package) if package is not None else "?"


def code_hash(package: Path) -> str:
    """sha256 (16 hex digits) over a package folder's .py files, by relative path and content."""
    digest = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        digest.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def conversion_parts(
    plugin_name: str, options: LoadOptions, input_shapes: Mapping | None, converter_options: Mapping
) -> dict:
    return {
        "backend": plugin_name,
        "versions": engine_versions(plugin_name),
        "precision": options.precision,
        "plugin_code": plugin_code_hash(plugin_name),
        "device": str(options.device),
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "converter_options": dict(converter_options),
        "fixups": FIXUPS_VERSION,
        "layout": _LAYOUT,
    }


def _within(errors: list[OutputError], tolerance: float) -> bool:
    return all(e.within(tolerance) for e in errors)


def _batchable(inputs: list[TensorInfo]) -> bool:
    """Every input has a dynamic dim 0 (and another dim): a batch dim, converted at 1 and verified at 2."""
    return bool(inputs) and all(i.shape is not None and i.rank > 1 and not isinstance(i.shape[0], int) for i in inputs)


def _run_sets(
    inputs: list[TensorInfo],
    shapes: dict[str, tuple[int, ...]],
    feeds: Mapping[str, np.ndarray] | None,
    bounds: dict[str, int],
) -> tuple[list[dict[str, np.ndarray]], str]:
    """Verification inputs for a conversion driven by a run: that run's real inputs first, then two random sets at
    its shapes, and one at another batch size where every input's dim 0 is dynamic. Returns them and what they
    are, in words."""
    real = [{k: np.asarray(feeds[k], order="C") for k in shapes}] if feeds is not None else []
    rng = np.random.default_rng(0)
    randoms = [random_feeds(inputs, shapes, rng, bounds) for _ in range(2)]
    if _batchable(inputs) and all(s[0] == 1 for s in shapes.values()):
        randoms.append(random_feeds(inputs, {n: (2,) + s[1:] for n, s in shapes.items()}, rng, bounds))
    what = describe_sets(randoms)
    if feeds is None:
        return randoms, what
    return real + randoms, f"the first run's inputs ({describe_feeds(real[0])}) and {what}"


def _second_size(
    model: ModelFile,
    reference: str | None,
    inputs: list[TensorInfo],
    shapes: dict,
    shapes2: dict,
    bounds: dict[str, int],
) -> tuple[dict | None, list, list]:
    """The second size to convert and verify a dynamic-size model at, with its random inputs and the reference's
    outputs: every open dim changed where the reference takes that; else only the dims it takes changed one at a
    time (a recognizer fixed at H=48 keeps a dynamic W); (None, [], []) where it takes none (static)."""
    rng = np.random.default_rng(1)

    def attempt(candidate: dict) -> tuple[list, list] | None:
        from ..native_output import native_output_silenced

        feeds = random_feeds(inputs, candidate, rng, bounds)
        try:
            with native_output_silenced():  # a probe: the engine's own error print is noise (logged below)
                return [feeds], [_reference_outputs(model, reference, feeds)]
        except ConversionError as exc:  # the model takes only the given size there (a MatMul over H, ...)
            log.info("%s: the reference refuses %s: %s", model.name, format_shapes(candidate), exc)
            return None

    found = attempt(shapes2)
    if found is not None:
        return shapes2, *found
    singles = [(n, a) for n in shapes for a, (d, d2) in enumerate(zip(shapes[n], shapes2[n])) if d != d2]
    if len(singles) < 2:
        return None, [], []
    kept = []
    for name, axis in singles:
        one = dict(shapes)
        one[name] = tuple(d2 if a == axis else d for a, (d, d2) in enumerate(zip(shapes[name], shapes2[name])))
        if attempt(one) is not None:
            kept.append((name, axis))
    if not kept:
        return None, [], []
    combined = {
        n: tuple(d2 if (n, a) in kept else d for a, (d, d2) in enumerate(zip(shapes[n], shapes2[n]))) for n in shapes
    }
    found = attempt(combined)
    return (combined, *found) if found is not None else (None, [], [])


def build(
    model: ModelFile,
    plugin_name: str,
    options: LoadOptions,
    key: str,
    *,
    input_shapes: Mapping | None,
    converter_options: Mapping,
    verify: bool,
    timeout: float,
    inputs: Mapping[str, np.ndarray] | None = None,
    tolerance: float | None = None,
    dynamic: bool = True,
) -> dict:
    """Convert (and run the result) in a child, compare with the reference, publish the cache entry.

    `inputs`: a run's real inputs (a Session converting at its first run): converted at their shapes, verified on
    them first. `dynamic`: ask the converter to keep the dims that are dynamic in the model dynamic (pnnx's
    inputshape2), verified at a second size (`second_shapes`); where the reference, the converter or that
    verification fails at it, the model is converted static at the shapes given."""
    reference, sig_in, outputs = _reference_and_signature(model, plugin_name, verify)
    if inputs is not None:
        missing = {i.name for i in sig_in} - set(inputs)
        if missing:
            raise ConversionError(f"converting at a run's inputs: inputs {sorted(missing)} are missing")
        shapes = {i.name: tuple(np.shape(inputs[i.name])) for i in sig_in}
        if _batchable(sig_in):  # a dynamic batch dim converts at 1 (as always), verified at the run's batch too
            shapes = {n: (1,) + s[1:] for n, s in shapes.items()}
    else:
        shapes = {i.name: concrete_shape(i, input_shapes) for i in sig_in}
        unknown = set(input_shapes or {}) - set(shapes)
        if unknown:
            raise ConversionError(f"input_shapes names unknown inputs {sorted(unknown)}; inputs: {sorted(shapes)}")
    shapes2 = second_shapes(sig_in, shapes) if dynamic else None
    work = store.new_work_dir(key).resolve()  # every path in the child's spec is absolute: it runs in `work`
    try:
        t0 = time.perf_counter()
        source, fix_notes, bounds = _prepare_source(model, work)
        sets, verified_on = _run_sets(sig_in, shapes, inputs, bounds) if verify else ([], "")
        if verify and inputs is None and input_shapes is None:  # the historical sets (guessed dynamic dims)
            sets = feed_sets(sig_in, input_shapes, bounds=bounds)
        ref_sets = []
        for i, feeds in enumerate(sets):
            try:
                ref_sets.append(_reference_outputs(model, reference, feeds))
            except ConversionError:
                # random sets beside a run's real inputs may be invalid for it, and so may the extra set at another
                # batch size (a model that takes batch 1 only): only a set at the shapes asked for must run
                at_shapes = all(tuple(v.shape) == tuple(shapes.get(k, v.shape)) for k, v in feeds.items())
                if (inputs is None or i == 0) and at_shapes:
                    raise
                sets[i] = {}
        if verify and not all(sets):
            verified_on += f" ({sum(1 for f in sets if not f)} of them dropped: the source model does not run them)"
        sets = [f for f in sets if f]
        sets2: list[dict[str, np.ndarray]] = []
        ref2: list[dict[str, np.ndarray]] = []
        if shapes2 is not None and verify:
            shapes2, sets2, ref2 = _second_size(model, reference, sig_in, shapes, shapes2, bounds)
        in_paths, out_paths, in2_paths, out2_paths = [], [], [], []
        for i, feeds in enumerate(sets):
            in_paths.append(str(work / f"verify_in_{i}.npz"))
            out_paths.append(str(work / f"verify_out_{i}.npz"))
            np.savez(in_paths[-1], **feeds)
        for i, feeds in enumerate(sets2):
            in2_paths.append(str(work / f"verify2_in_{i}.npz"))
            out2_paths.append(str(work / f"verify2_out_{i}.npz"))
            np.savez(in2_paths[-1], **feeds)
        extra = {"input_shapes2": {k: list(v) for k, v in shapes2.items()}} if shapes2 is not None else {}
        spec = {
            "backend": plugin_name,
            "model": os.path.abspath(source.path),
            "out_dir": str(work / "out"),
            "device": str(options.device),
            "precision": options.precision,
            "converter_options": {
                **dict(converter_options),
                "input_shapes": {k: list(v) for k, v in shapes.items()},
                **extra,
                "input_dtypes": {i.name: i.dtype.name for i in sig_in},
            },
            "load_options": dict(registry.get_backend(plugin_name).verification_options),
            "inputs": infos_to_json(sig_in),
            "outputs": infos_to_json(outputs),
            "sidecar": {
                "source": model.name,
                "source_format": model.format.value,
                "backend": plugin_name,
                "precision": options.precision,
                "fixups": fix_notes,
                "shapes": {k: list(v) for k, v in shapes.items()},
            },
            "verify_inputs": in_paths,
            "verify_outputs": out_paths,
            "verify_inputs2": in2_paths,
            "verify_outputs2": out2_paths,
        }

        def static_instead(why: str) -> dict:
            """The dynamic-size conversion failed or is off at the second size: convert at fixed shapes instead."""
            log.info(
                "%s: the dynamic %s conversion %s; converting static at %s",
                model.name,
                plugin_name,
                why,
                format_shapes(shapes),
            )
            shutil.rmtree(work, ignore_errors=True)
            return build(
                model,
                plugin_name,
                options,
                key,
                input_shapes=input_shapes,
                converter_options=converter_options,
                verify=verify,
                timeout=timeout,
                inputs=inputs,
                tolerance=tolerance,
                dynamic=False,
            )

        try:
            result = _run_child(spec, timeout, work)
        except ConversionError:
            if shapes2 is None:
                raise
            return static_instead("failed")
        seconds = time.perf_counter() - t0
        dyn = {k: list(v) for k, v in (result.get("dynamic_axes") or {}).items()}
        errors: list[OutputError] = []
        if verify:

            def load(paths: list[str]) -> list[dict[str, np.ndarray]]:
                got = []
                for p in paths:
                    with np.load(p, allow_pickle=False) as z:
                        got.append({k: z[k] for k in z.files})
                return got

            errors = compare(load(out_paths), ref_sets)
            if dyn and sets2:
                errors2 = compare(load(out2_paths), ref2)
                tol = TOLERANCES[options.precision] if tolerance is None else float(tolerance)
                if _within(errors, tol) and not _within(errors2, tol):
                    return static_instead(f"is off at {format_shapes(shapes2)}")
                worst = {e.name: e for e in errors}  # the worst error per output over both sizes
                for e in errors2:
                    if e.name not in worst or e.error > worst[e.name].error:  # type: ignore[operator]
                        worst[e.name] = e
                errors = list(worst.values())
                verified_on += f", and random inputs at {describe_feeds(sets2[0])} (the dynamic dims' second size)"
        if verify:  # the child loaded and ran it: no need to try it again in a throwaway process
            mark_safe(
                open_model(result["main"]),
                plugin_name,
                registry.availability(plugin_name).version or "",
                LoadOptions(device=options.device, precision=options.precision),
            )
        shutil.rmtree(work / "source", ignore_errors=True)
        for p in in_paths + out_paths + in2_paths + out2_paths:
            Path(p).unlink(missing_ok=True)
        files = [Path(f) for f in result["files"]]
        side = sidecar_path(Path(result["main"]))
        files += [side] if side.exists() and side not in files else []
        record = {
            "main": str(Path(result["main"]).relative_to(work)),
            "files": [str(f.relative_to(work)) for f in files],
            "seconds": seconds,
            "converter": engine_versions(plugin_name),
            "fixups": fix_notes,
            "verified": verify,
            "reference": reference if verify else None,
            "errors": [e.as_dict() for e in errors],
            "source": model.name,
            "shapes": {k: list(v) for k, v in shapes.items()},
            "dynamic_axes": dyn,
            "verified_on": verified_on if verify else None,
        }
        store.publish(key, work, record)
        return record
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
