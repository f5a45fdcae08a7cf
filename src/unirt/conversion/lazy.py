"""Conversion at the first run's shapes: a Session whose backend converts an ONNX model with dynamic dims, given no
shapes, converts when the first inputs arrive (at their shapes, verified on them), never at a guess.

`LazyConversion` is the Session's runner meanwhile: it reports the source model's inputs and outputs, converts on
the first run (cached on disk per shape signature, `unirt.conversion`), and keeps the loaded conversions in a small
LRU. A later run at another shape uses a loaded conversion whose inputs take it (a dynamic-size ncnn model, an MNN
model that resizes) or converts again at that shape (a model that converts static only).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..backend import BackendSession, LoadOptions
from ..formats import ModelFile, ModelFormat
from ..tensor import TensorInfo
from .signature import format_shapes, needs_run_shapes

__all__ = ["LazyConversion", "deferred_signature", "MAX_LOADED"]

#: Converted models a lazily converting Session keeps loaded at once (one per shape signature its inputs take).
MAX_LOADED = 4


def deferred_signature(
    model: ModelFile, input_shapes: Mapping[str, Sequence[int]] | None
) -> tuple[list[TensorInfo], list[TensorInfo]] | None:
    """The source model's (inputs, outputs) when its conversion must wait for a run's shapes: an ONNX model with a
    dynamic dim beyond a batch dim (`needs_run_shapes`) on an input `input_shapes` does not give. None: convert
    now (every input's shape is known or given)."""
    if model.format is not ModelFormat.ONNX:
        return None
    inputs = _source_inputs(model)
    if any(i.dtype.kind not in "biuf" for i in inputs):  # strings: no converter takes them, whatever the shape
        return None
    given = input_shapes or {}
    if not any(needs_run_shapes(i) and i.name not in given for i in inputs):
        return None
    from .build import _onnx_file_signature

    return _onnx_file_signature(model)


def _source_inputs(model: ModelFile) -> tuple[TensorInfo, ...]:
    """The ONNX model's graph inputs (no shape inference), remembered per file (path, size, mtime): auto-selection
    asks for every converting backend."""
    if model.path is None:
        return _read_inputs(model)
    st = os.stat(model.path)
    key = (str(model.path), st.st_size, st.st_mtime_ns)
    found = _INPUTS.get(key)
    if found is None:
        found = _INPUTS[key] = _read_inputs(model)
        while len(_INPUTS) > 32:
            _INPUTS.pop(next(iter(_INPUTS)))
    return found


_INPUTS: dict[tuple, tuple[TensorInfo, ...]] = {}


def _read_inputs(model: ModelFile) -> tuple[TensorInfo, ...]:
    from .build import _load_onnx
    from .signature import onnx_signature

    return tuple(onnx_signature(_load_onnx(model, external_data=False))[0])


def _fits(infos: Sequence[TensorInfo], shapes: tuple[tuple[int, ...], ...], conv: Any = None) -> bool:
    """Whether a loaded conversion takes arrays of `shapes`: its declared inputs' fixed dims match, and each dim
    beyond a batch dim 0 is one it was converted (and verified) at, or one it keeps dynamic, verified at a second
    size (an MNN model resizes to anything: a size never verified is converted, so verified, afresh)."""
    made_at = getattr(conv, "shapes", None) or {}
    dynamic = getattr(conv, "dynamic_axes", None) or {}
    for info, shape in zip(infos, shapes):
        at = made_at.get(info.name)
        if at is not None and len(at) == len(shape):
            free = set(dynamic.get(info.name, ()))
            first = 0 if len(shape) == 1 else 1
            if any(a >= first and a not in free and s != d for a, (s, d) in enumerate(zip(shape, at))):
                return False
        if info.shape is None:
            continue
        if len(info.shape) != len(shape):
            return False
        if any(isinstance(d, int) and d != s for d, s in zip(info.shape, shape)):
            return False
    return True


class LazyConversion(BackendSession):
    """A Session's runner that converts at the shapes of the inputs it is given (see the module's docstring).

    `convert(feeds)` converts at `feeds`' shapes (cached) and returns (model, conversion, load options); `load`
    loads a converted model. Runs at a shape signature seen before go straight to its loaded conversion."""

    def __init__(
        self,
        backend: str,
        inputs: Sequence[TensorInfo],
        outputs: Sequence[TensorInfo],
        device: str,
        convert: Callable[[Mapping[str, np.ndarray]], tuple[ModelFile, Any, LoadOptions]],
        load: Callable[[ModelFile, LoadOptions], BackendSession],
        max_loaded: int = MAX_LOADED,
        seed: tuple[BackendSession, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.device = device
        self.precision: str | None = None
        self._names = [i.name for i in self.inputs]
        self._convert, self._load, self._max = convert, load, max(1, int(max_loaded))
        self._loaded: OrderedDict[int, tuple[BackendSession, Any]] = OrderedDict()  # id -> (runner, conversion)
        self._by_shapes: dict[tuple, BackendSession] = {}
        self._lock = threading.Lock()
        self._closed = False
        #: Every conversion made or loaded so far, oldest first; `conversion` is the latest.
        self.conversions: list[Any] = []
        self.reconversions = 0
        if seed is not None:
            self._add(*seed)

    @property
    def conversion(self) -> Any:
        return self.conversions[-1] if self.conversions else None

    def _add(self, runner: BackendSession, conv: Any) -> None:
        self._loaded[id(runner)] = (runner, conv)
        self.conversions.append(conv)
        self.precision = getattr(runner, "precision", None) or self.precision
        self.device = str(getattr(runner, "device", self.device) or self.device)
        while len(self._loaded) > self._max:  # bounded: the least recently used conversion is unloaded
            _, (old, _conv) = self._loaded.popitem(last=False)
            self._by_shapes = {k: r for k, r in self._by_shapes.items() if r is not old}
            old.close()

    def _runner_for(self, feeds: Mapping[str, np.ndarray], key: tuple) -> BackendSession:
        with self._lock:
            if self._closed:
                from ..errors import SessionClosedError

                raise SessionClosedError("this Session is closed")
            hit = self._by_shapes.get(key)
            if hit is not None:
                return hit
            for ident, (runner, conv) in reversed(self._loaded.items()):
                if _fits(runner.inputs, key, conv):
                    self._loaded.move_to_end(ident)
                    break
            else:
                if self._loaded:
                    self.reconversions += 1
                model, conv, options = self._convert(feeds)
                runner = self._load(model, options)
                self._add(runner, conv)
            if len(self._by_shapes) > 64:
                self._by_shapes.clear()
            self._by_shapes[key] = runner
            return runner

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> Sequence[Any]:
        key = tuple(feeds[n].shape for n in self._names)
        runner = self._by_shapes.get(key)
        if runner is None:
            runner = self._runner_for(feeds, key)
        return runner.run(feeds, output_names)

    def describe(self) -> str:
        """What it converted so far, for `explain` and the Session's repr."""
        if not self.conversions:
            return f"converts to {self.backend} at the first run's input shapes (none yet), verified on those inputs"
        shapes = "; ".join(c.describe_shapes() for _r, c in self._loaded.values())
        again = f", {self.reconversions} reconversion(s) for other shapes" if self.reconversions else ""
        return (
            f"converted to {self.backend} at the run's shapes: {shapes} ({len(self._loaded)} loaded, at most "
            f"{self._max}{again})"
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            loaded, self._loaded, self._by_shapes = list(self._loaded.values()), OrderedDict(), {}
        for runner, _conv in loaded:
            runner.close()


def shapes_text(feeds: Mapping[str, np.ndarray]) -> str:
    return format_shapes({k: np.shape(v) for k, v in feeds.items()})
