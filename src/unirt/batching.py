"""Batch dims: whether a model's batch dim is static (N) or dynamic, and gather/scatter between requests and batches.

A model is batched when dim 0 of every input and output is one batch dim, told from its shapes:
- a *dynamic* batch: dim 0 is the same named symbol (e.g. "N") on every input and every output (a real name:
  exporters' placeholders such as "?" or -1 are anonymous, `unirt.tensor.normalize_dim`);
- a *static* batch of 1: dim 0 is fixed at 1 everywhere (the usual batch-1 export; B rows run as B runs, which
  equals running them one by one).
A dim 0 fixed at N > 1 everywhere, or dynamic but unnamed or named differently per tensor, may just as well not be
a batch (a Softmax over dim 0, a transpose): it counts as one only with `batched=True`. unirt then
- pads a request of B < N rows to N for a static model (the padding rows are zeros, their outputs dropped) and
  splits B > N into ceil(B/N) runs, reassembling the outputs;
- splits a request above `max_batch` rows into runs of at most `max_batch` for a dynamic model;
- packs many requests into as few runs as the model allows (`Session.run_many`).

Gather (requests into one batch buffer) and scatter (a batch back into per-request arrays) are copies in C++ with
the GIL released, split over threads when large. `gather` and `scatter` here are the public entry points.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import _core
from .errors import InputError, UnsupportedOptionError
from .tensor import TensorInfo

__all__ = ["BatchSpec", "gather", "scatter", "copy_threads"]


def copy_threads() -> int:
    """Threads used for large gathers and scatters: up to 4, never more than the CPUs."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class BatchSpec:
    """How a model batches. `kind`: "static" (every input and output leads with the same fixed size `size`),
    "dynamic" (they lead with the same symbolic dim `symbol`; None when unnamed or named differently, under
    batched=True), or "none" (`reason` says why)."""

    kind: Literal["static", "dynamic", "none"]
    size: int | None = None
    symbol: str | None = None
    reason: str = ""

    @property
    def batched(self) -> bool:
        return self.kind != "none"

    @classmethod
    def detect(
        cls, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], batched: bool | None = None
    ) -> BatchSpec:
        """Read the batch dim from the model's shapes.

        `batched=None` infers it: a named dim 0 shared by every input and output, or a static dim 0 of 1;
        `False` turns batching off (static dims are then checked as given); `True` asserts dim 0 is a batch dim
        (rows independent), which also makes a static dim 0 of N > 1 and dynamic dims unnamed or named differently
        batch dims.
        """
        if batched is False:
            return cls("none", reason="batching is off (batched=False)")
        spec = cls._infer(inputs, outputs, lenient=batched is True)
        if batched is True and not spec.batched:
            raise UnsupportedOptionError(f"batched=True, but the model has no batch dim: {spec.reason}")
        return spec

    @classmethod
    def _infer(cls, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], lenient: bool) -> BatchSpec:
        tensors = list(inputs) + list(outputs)
        if not inputs:
            return cls("none", reason="the model has no inputs")
        unknown = [t.name for t in tensors if t.shape is None]  # UnknownRankInfo: no dim 0 known before a run
        if unknown and not lenient:
            return cls(
                "none",
                reason=f"{unknown[0]!r} has a rank unknown until the model runs; pass batched=True "
                "if dim 0 is a batch dim",
            )
        # asserted (batched=True): judged on the tensors with a shape; an output that turns out not to keep the
        # batch's rows is refused at run time rather than cut up wrongly
        tensors = [t for t in tensors if t.shape is not None]
        for t in tensors:
            if t.rank == 0:
                return cls("none", reason=f"{t.name!r} is a scalar")
            if t.dtype == object:
                return cls("none", reason=f"{t.name!r} holds strings")
        firsts = [t.shape[0] for t in tensors]
        if all(isinstance(d, int) for d in firsts):
            if len(set(firsts)) == 1 and firsts[0] >= 1:
                if firsts[0] == 1 or lenient:
                    return cls("static", size=firsts[0])
                return cls(
                    "none",
                    reason=f"dim 0 is fixed at {firsts[0]} on every input and output; pass "
                    "batched=True if it is a batch dim, to pad or split requests of other sizes",
                )
            return cls(
                "none",
                reason="dim 0 differs between inputs and outputs: "
                + ", ".join(f"{t.name}={t.shape[0]}" for t in tensors),
            )
        if any(isinstance(d, int) for d in firsts):
            return cls("none", reason="dim 0 is fixed on some tensors and dynamic on others")
        names = {d for d in firsts if isinstance(d, str)}
        if len(names) == 1 and all(isinstance(d, str) for d in firsts):
            return cls("dynamic", symbol=names.pop())
        if lenient:
            # Asserted a batch dim while unnamed, or named differently (torch's "input_dynamic_axes_1" and
            # "output_dynamic_axes_1", tf2onnx's "unk__12"; placeholders such as "?" are None by now): the inputs
            # must then agree on it at run time, and an output that turns out not to keep the batch's rows is never
            # cut up wrongly (run_many then runs requests one by one).
            return cls("dynamic", symbol=names.pop() if len(names) == 1 else None)
        dims = ", ".join(f"{t.name}={'?' if t.shape[0] is None else t.shape[0]}" for t in tensors)
        if not names:
            return cls(
                "none",
                reason=f"dim 0 is dynamic but unnamed ({dims}), so it need not be a batch dim; "
                "pass batched=True if it is one",
            )
        return cls(
            "none",
            reason=f"dim 0 is not one named dim shared by every input and output ({dims}); "
            "pass batched=True if it is one",
        )

    def __str__(self) -> str:
        if self.kind == "static":
            return f"static batch of {self.size}"
        if self.kind == "dynamic":
            return f"dynamic batch ({self.symbol or 'unnamed dim'})"
        return f"no batch dim ({self.reason})"


def _threads(threads: int | None) -> int:
    if threads is None:
        return copy_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UnsupportedOptionError(f"threads must be a positive int, got {threads!r}")
    return threads


def _as_arrays(parts: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    if isinstance(parts, np.ndarray) or not isinstance(parts, Sequence):
        raise InputError(f"{what} must be a sequence of numpy arrays, got {type(parts).__name__}")
    arrays = []
    for i, p in enumerate(parts):
        if not isinstance(p, np.ndarray):
            raise InputError(f"{what}[{i}] must be a numpy array, got {type(p).__name__}")
        if p.ndim == 0:
            raise InputError(f"{what}[{i}] is a scalar; batches are built along dim 0")
        if p.dtype == object:
            raise InputError(f"{what}[{i}] holds Python objects; only plain dtypes can be gathered")
        arrays.append(p if p.flags.c_contiguous else _core.contiguous_copy(p))
    return arrays


def gather(
    parts: Sequence[np.ndarray],
    *,
    rows: int | None = None,
    out: np.ndarray | None = None,
    empty=None,
    threads: int | None = None,
) -> np.ndarray:
    """Concatenate `parts` along dim 0 into one batch array, zero-filling rows past the parts (padding).

    The batch has `rows` rows (default: the parts' total), or is `out`; `empty(shape, dtype)` allocates it
    (e.g. `BufferPool.empty`; default numpy). Like `numpy.concatenate`, but a C++ copy with the GIL released,
    split over `threads` (default: up to 4) when large.
    """
    arrays = _as_arrays(parts, "parts")
    if out is None:
        if not arrays:
            raise InputError("gather needs at least one part, or an `out` array")
        first = arrays[0]
        for i, a in enumerate(arrays):
            if a.dtype != first.dtype or a.shape[1:] != first.shape[1:]:
                raise InputError(
                    f"parts[{i}] is {a.dtype}{list(a.shape)}; every part must be {first.dtype} with "
                    f"dims {list(first.shape[1:])} after the first"
                )
        total = sum(a.shape[0] for a in arrays)
        rows = total if rows is None else rows
        if rows < total:
            raise InputError(f"gather: the parts hold {total} rows, more than rows={rows}")
        shape = (rows,) + first.shape[1:]
        out = (empty or np.empty)(shape, first.dtype)
    elif not isinstance(out, np.ndarray):
        raise InputError(f"out must be a numpy array, got {type(out).__name__}")
    try:
        _core.gather(arrays, out, _threads(threads))
    except (ValueError, TypeError) as exc:  # the core's own words may already start with "gather:"
        raise InputError(f"gather: {str(exc).removeprefix('gather: ')}") from None
    return out


def scatter(
    batch: np.ndarray, into: Sequence[np.ndarray] | Sequence[int], *, threads: int | None = None
) -> list[np.ndarray]:
    """Split `batch` along dim 0 into consecutive pieces.

    Given arrays, copies the rows into them (C++, GIL released, threaded when large) and returns them; given
    row counts, returns views of `batch` without copying.
    """
    if not isinstance(batch, np.ndarray) or batch.ndim == 0:
        got = f"a {type(batch).__name__}" if not isinstance(batch, np.ndarray) else "a 0-d array"
        hint = (
            " (a dict of outputs: scatter each output array, e.g. outputs[name])" if isinstance(batch, Mapping) else ""
        )
        raise InputError(f"scatter needs a numpy array with at least one dim, got {got}{hint}")
    items = list(into)
    if all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in items):
        if any(n < 0 for n in items) or sum(items) > batch.shape[0]:
            raise InputError(f"scatter: row counts {items} do not fit a batch of {batch.shape[0]} rows")
        views, start = [], 0
        for n in items:
            views.append(batch[start : start + n])
            start += n
        return views
    for i, a in enumerate(items):
        if not isinstance(a, np.ndarray):
            raise InputError(f"into[{i}] must be a numpy array or a row count, got {type(a).__name__}")
    arrays = items
    source = batch if batch.flags.c_contiguous else _core.contiguous_copy(batch)
    try:
        _core.scatter(source, arrays, _threads(threads))
    except (ValueError, TypeError) as exc:  # the core's own words may already start with "scatter:"
        raise InputError(f"scatter: {str(exc).removeprefix('scatter: ')}") from None
    return arrays
