"""Feeds for the tools: random inputs of the resolved shapes, or inputs read from .npz/.npy files.

`default_shapes` picks the shapes random inputs are made at. A dynamic dim is never silently 1 (a detector at
1x1, a VAD at one sample): it takes the size the user gave, else the size the model file carries
(`unirt.tools.model_shapes`), else 1 only where it is a batch (dim 0 of an input of rank 2 or more); any other dim
is an InputError naming it and the `--shape name:1x3x320x320` that gives it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..formats import ModelFile
from ..tensor import TensorInfo
from .model_shapes import Carried, carried_shapes
from .shapes import Shapes, format_shape, resolve_shapes

__all__ = ["random_feeds", "load_feeds", "save_arrays", "default_shapes", "fill_carried"]

_OPEN = -1  # a dim resolve_shapes could not size (its dynamic_default here)


def _random(info: TensorInfo, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    kind = info.dtype.kind
    if kind == "f":
        return rng.standard_normal(shape).astype(info.dtype)
    if kind in "iu":  # small non-negative values: valid as indices, token ids and counts
        return rng.integers(0, 2, size=shape).astype(info.dtype)
    if kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(info.dtype)
    if kind in "OUS":
        return np.full(shape, "a", dtype=object)
    raise InputError(f"input {info.name!r}: cannot make random values of dtype {info.dtype}; give inputs from a file")


def random_feeds(
    inputs: Sequence[TensorInfo], shapes: Mapping[str, tuple[int, ...]], seed: int = 0
) -> dict[str, np.ndarray]:
    """One random array per input, of the model's dtype and the resolved shape (same seed, same values)."""
    rng = np.random.default_rng(seed)
    return {i.name: _random(i, tuple(shapes[i.name]), rng) for i in inputs}


def load_feeds(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays by input name from an .npz file (one array per input)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"inputs file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputError(
                f"inputs file {path} holds a single array; expected an .npz with one array per input "
                "name (np.savez(path, name=array, ...))"
            )
        with data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read inputs file {path}: {exc}") from None


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays to an .npz file by name (names may contain '/' to group them, e.g. backend/output)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file object: np.savez would otherwise append .npz to other suffixes
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def default_shapes(
    inputs: Sequence[TensorInfo],
    given: Mapping[str, Sequence[int]] | None = None,
    *,
    model: ModelFile | str | Path | None = None,
    batch: int | None = None,
    carried: Carried | None = None,
    sources: dict[str, str] | None = None,
    option: str = "--shape",
) -> Shapes:
    """Concrete shapes for random inputs: `given` shapes, `batch` for dynamic dims 0, sizes the `model` file
    carries (or `carried`, already read) for the other dynamic dims, and 1 for a dynamic dim 0 still open on an
    input of rank >= 2 (a batch). Any dim still open raises InputError naming each and the `option` syntax that
    sizes it. `sources`, when given, is filled with where each input's carried sizes came from."""
    given = {k: tuple(v) for k, v in (given or {}).items()}
    open_dims = [
        (i, a)
        for i in inputs
        if i.name not in given and i.shape is not None
        for a, d in enumerate(i.shape)
        if not isinstance(d, int)
    ]
    if carried is None:
        carried = carried_shapes(model, inputs) if model is not None and open_dims else {}
    filled = fill_carried(inputs, given, carried, batch=batch, sources=sources)
    resolved = {k: list(v) for k, v in resolve_shapes(filled, given, batch=batch, dynamic_default=_OPEN).items()}
    batch_dims = {
        info.shape[0] for info, f in zip(inputs, filled) if f.rank and f.rank >= 2 and resolved[info.name][0] == _OPEN
    }
    for info in inputs:
        dims = resolved[info.name]
        for axis, d in enumerate(dims):
            if d == _OPEN and (
                (axis == 0 and len(dims) >= 2) or (isinstance(info.shape[axis], str) and info.shape[axis] in batch_dims)
            ):
                dims[axis] = 1
    missing = [(info, [a for a, d in enumerate(resolved[info.name]) if d == _OPEN]) for info in inputs]
    missing = [(info, axes) for info, axes in missing if axes]
    if missing:
        raise InputError(_missing_message(missing, resolved, option))
    return {name: tuple(dims) for name, dims in resolved.items()}


def fill_carried(
    inputs: Sequence[TensorInfo],
    given: Mapping[str, Sequence[int]],
    carried: Carried,
    *,
    batch: int | None = None,
    sources: dict[str, str] | None = None,
) -> list[TensorInfo]:
    """`inputs` with the dynamic dims that `carried` sizes made static, for inputs `given` leaves to the model (a
    named dim a given shape sizes, and dim 0 when `batch` is set, are left for `resolve_shapes` to size)."""
    # a named dim some given shape sizes is tied to that size: resolve_shapes carries it over, no carried size
    tied = {d for i in inputs if i.name in given and i.shape is not None for d in i.shape if isinstance(d, str)}
    filled = []
    for info in inputs:
        hint = carried.get(info.name)
        if info.name in given or info.shape is None or hint is None or len(hint[0]) != info.rank:
            filled.append(info)
            continue
        dims = list(info.shape)
        for axis, d in enumerate(dims):
            size = hint[0][axis]
            if isinstance(d, int) or size is None or d in tied or (axis == 0 and batch is not None):
                continue
            dims[axis] = size
        if dims != list(info.shape):
            if sources is not None:
                sources[info.name] = hint[1]
            filled.append(dataclasses.replace(info, shape=tuple(dims)))
        else:
            filled.append(info)
    return filled


def _label(info: TensorInfo, axis: int) -> str:
    d = info.shape[axis]
    return d if isinstance(d, str) and d.isidentifier() else f"d{axis}"


def _missing_message(
    missing: list[tuple[TensorInfo, list[int]]], resolved: Mapping[str, list[int]], option: str
) -> str:
    lines, examples = [], []
    for info, axes in missing:
        which = ", ".join(f"{a}" + (f" ({info.shape[a]!r})" if isinstance(info.shape[a], str) else "") for a in axes)
        lines.append(f"input {info.name!r} {info.dtype}{info.shape_str()}: dim{'s' if len(axes) > 1 else ''} {which}")
        dims: list[Any] = [f"<{_label(info, a)}>" if d == _OPEN else d for a, d in enumerate(resolved[info.name])]
        examples.append(f"{info.name}:{format_shape(dims)}")
    return (
        "the model has dynamic dims it carries no size for (no metadata, conversion record or constant in "
        "the graph fixes them), and unirt will not guess one: "
        + "; ".join(lines)
        + f". Give the shape to run at, e.g. {option} "
        + ",".join(examples)
    )
