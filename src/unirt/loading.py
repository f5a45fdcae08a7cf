"""Loading a model on a plugin, written once. Every load goes through here: a `Session` (in this process and in the
child of `isolate=True`), `backend="fastest"` timing its candidates, and conversion loading its reference and the
converted model.

`prepare` converts the model first where the plugin converts its format on load (ncnn, MNN: `unirt.conversion`),
else takes unirt's conversion settings out of what the engine is given; `load_runner` calls the plugin's loader and
names the file, format and backend in an engine's own error. `CheckedRunner` loads a model and runs it on inputs
checked as a Session checks them, below `Session`: conversion verifies through it and never imports the session.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import registry
from .backend import Backend, BackendSession, LoadOptions
from .batching import BatchSpec
from .devices import Device
from .errors import ModelLoadError, RunError, UnirtError, UnsupportedOptionError
from .feeds import BatchSizeMismatch, InputChecker
from .formats import ModelFile

__all__ = ["CONVERSION_OPTION", "Prepared", "prepare", "load_runner", "split_settings", "CheckedRunner"]
log = logging.getLogger(__name__)

#: The key of `backend_options` that carries unirt's conversion settings (never given to an engine).
CONVERSION_OPTION = "conversion"


@dataclass(frozen=True)
class Prepared:
    """What to load: the model (converted where the plugin converts its format), the options for the engine, the
    `unirt.conversion.Conversion` made (else None), and unirt's conversion settings taken out of the options (for a
    frontend check by a backend that reads the format as it is)."""

    model: ModelFile
    options: LoadOptions
    conversion: Any = None
    settings: dict = field(default_factory=dict)


def split_settings(options: LoadOptions) -> tuple[LoadOptions, dict[str, Any]]:
    """The load options without unirt's conversion settings (the engine never sees them), and those settings."""
    backend_options = dict(options.backend_options)
    settings = backend_options.pop(CONVERSION_OPTION, None)
    if settings is None:
        return options, {}
    if not isinstance(settings, Mapping):
        raise UnsupportedOptionError(f"backend_options[{CONVERSION_OPTION!r}] must be a dict, got {settings!r}")
    return dataclasses.replace(options, backend_options=backend_options), dict(settings)


def _plugin(backend: str | Backend) -> Backend:
    return registry.get_backend(backend) if isinstance(backend, str) else backend


def prepare(
    backend: str | Backend,
    model: ModelFile,
    options: LoadOptions,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> Prepared:
    """Convert `model` for `backend` where it converts the model's format on load (at `input_shapes`, or at the
    shapes of a run's `inputs`, verified on them; cached), else only split unirt's settings from the options."""
    plugin = _plugin(backend)
    if plugin.converts_on_load(model):
        from .conversion import convert_for_load  # the upper layer: imported only by a load that converts

        target, conversion, load_options = convert_for_load(
            model, plugin.name, options, input_shapes=input_shapes, inputs=inputs
        )
        return Prepared(target, load_options, conversion)
    load_options, settings = split_settings(options)
    return Prepared(model, load_options, None, settings)


def load_runner(backend: str | Backend, model: ModelFile, options: LoadOptions) -> BackendSession:
    """`plugin.load(model, options)`; an engine error a plugin lets through becomes a ModelLoadError naming the file,
    its format and the backend."""
    plugin = _plugin(backend)
    try:
        runner = plugin.load(model, options)
    except UnirtError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{model.name}: backend {plugin.name!r} failed to load this {model.format} "
            f"model: {type(exc).__name__}: {exc}"
        ) from exc
    log.debug("loaded %s on %s (%s)", model.name, plugin.name, options.device)
    return runner


class CheckedRunner:
    """A model loaded on one backend (`load_runner`), run on inputs checked as a Session checks them: unirt's own
    runs below `Session` (a conversion's reference and converted model, a frontend's reference). No selection,
    batching, pools or frontend check. A context manager that closes the engine."""

    def __init__(self, backend: str | Backend, model: ModelFile, options: LoadOptions | None = None) -> None:
        options = options or LoadOptions(device=Device.parse("cpu"))
        self._runner = load_runner(backend, model, split_settings(options)[0])
        self.backend = _plugin(backend).name
        self.inputs = list(self._runner.inputs)
        spec = BatchSpec.detect(self.inputs, self._runner.outputs)
        self._static = spec.size if spec.kind == "static" else None
        self._check = InputChecker(self.inputs, self._static).check

    @property
    def outputs(self) -> list:
        return list(self._runner.outputs)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Every output on `feeds` ({name: array-like}); RunError when the engine fails. A static-batch model given
        another number of rows runs them N at a time (the last run padded), as a Session does."""
        try:
            arrays = self._check(dict(feeds))
        except BatchSizeMismatch as mismatch:
            n, rows = self._static or 1, mismatch.rows
            parts = [
                self.run({k: v[np.arange(lo, lo + n) % rows] for k, v in mismatch.arrays.items()})
                for lo in range(0, rows, n)
            ]
            return {k: np.concatenate([p[k] for p in parts])[:rows] for k in parts[0]} if parts else {}
        names = [o.name for o in self._runner.outputs]
        try:
            values = self._runner.run(arrays, names)
        except UnirtError:
            raise
        except Exception as exc:
            raise RunError(f"backend {self.backend!r} failed to run: {type(exc).__name__}: {exc}") from exc
        return dict(zip(names, values, strict=False))

    def close(self) -> None:
        self._runner.close()

    def __enter__(self) -> CheckedRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
