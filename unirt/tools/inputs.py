"""Feeds for the tools: random inputs of the resolved shapes, or inputs read from .npz/.npy files."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..tensor import TensorInfo

__all__ = ["random_feeds", "load_feeds", "save_arrays"]


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


def random_feeds(inputs: Sequence[TensorInfo], shapes: Mapping[str, tuple[int, ...]], seed: int = 0
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
            raise InputError(f"inputs file {path} holds a single array; expected an .npz with one array per input "
                             "name (np.savez(path, name=array, ...))")
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
