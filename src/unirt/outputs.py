"""Sizing outputs before a run, so the backend can write them into unirt's memory (a pool or an arena).

An output's shape is known before the run when each of its dims is fixed or is a symbolic dim that also appears
in an input (its size is then read from that input). Everything is worked out at load; `shapes` is per call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .tensor import TensorInfo

__all__ = ["OutputPlanner", "POOL_MIN_BYTES"]

#: Under pooled_outputs="auto", outputs smaller than this (with every dynamic dim at 1) are left to the engine's
#: allocator: for small arrays a fresh allocation costs less than binding caller memory (about 3 us per call with
#: ONNX Runtime), and deciding at load keeps Session.run's lean path for them.
POOL_MIN_BYTES = 64 * 1024

Recipe = tuple[int | tuple[str, int], ...]  # per dim: a size, or (input name, axis) to read it from


class OutputPlanner:
    """Knows, for each output whose shape can be computed from the inputs' shapes, how to compute it."""

    def __init__(self, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> None:
        where: dict[str, tuple[str, int]] = {}
        for i in inputs:
            for axis, d in enumerate(i.shape or ()):
                if isinstance(d, str):
                    where.setdefault(d, (i.name, axis))
        self.dtypes = {o.name: o.dtype for o in outputs}
        self._declared = {o.name: o.shape for o in outputs}  # None: the rank is unknown until the model runs
        # Per output, its dims named after an input's dim: (axis, input name, input axis). They check `out=` arrays.
        self._ties = {
            o.name: tuple((axis, *where[d]) for axis, d in enumerate(o.shape) if isinstance(d, str) and d in where)
            for o in outputs
            if o.shape is not None
        }
        self.recipes: dict[str, Recipe] = {}
        self.static: dict[str, tuple[int, ...]] = {}
        for o in outputs:
            if o.dtype == object or o.shape is None:
                continue  # strings are Python objects the engine builds; an unknown rank has no recipe
            recipe: list[int | tuple[str, int]] = []
            for d in o.shape:
                if isinstance(d, int) and d >= 0:
                    recipe.append(d)
                elif isinstance(d, str) and d in where:
                    recipe.append(where[d])
                else:
                    break
            else:
                self.recipes[o.name] = tuple(recipe)
                if all(isinstance(d, int) for d in recipe):
                    self.static[o.name] = tuple(recipe)  # type: ignore[arg-type]

    def min_nbytes(self, name: str) -> int:
        """The output's size with every dim read from an input at 1."""
        n = self.dtypes[name].itemsize
        for d in self.recipes[name]:
            if type(d) is int:
                n *= d
        return n

    def shape(self, name: str, arrays: dict[str, np.ndarray]) -> tuple[int, ...] | None:
        recipe = self.recipes.get(name)
        if recipe is None:
            return None
        return tuple(d if type(d) is int else arrays[d[0]].shape[d[1]] for d in recipe)  # type: ignore[index]

    def expected(self, name: str, arrays: dict[str, np.ndarray], rows: int | None = None) -> tuple:
        """The output's shape as far as it is known before the run: declared sizes, dims read from the inputs'
        shapes, dim 0 = `rows` when given; the rest as declared (a symbol, or None)."""
        if self._declared[name] is None:
            return None  # any shape: the rank is unknown until the model runs
        dims = list(self._declared[name])
        for axis, source, source_axis in self._ties[name]:
            dims[axis] = arrays[source].shape[source_axis]
        if rows is not None and dims:
            dims[0] = rows
        return tuple(dims)

    @staticmethod
    def fits(expected: tuple | None, shape: tuple[int, ...]) -> bool:
        return (
            expected is None
            or len(shape) == len(expected)
            and all(type(d) is not int or d == s for d, s in zip(expected, shape))
        )

    def check_out(
        self, out: Any, names: Sequence[str], arrays: dict[str, np.ndarray], where: str = "out", rows: int | None = None
    ) -> dict[str, np.ndarray]:
        """Validate a caller's output arrays before the run (`run(out=)`, and per request of `run_many(out=)` with
        `rows`, the request's batch): each names an output of this run, is a writeable C-contiguous array of its
        dtype, and has the shape known from `arrays` (checked inputs). InputError naming what is wrong."""
        if not isinstance(out, Mapping):
            raise InputError(f"{where}: expected a dict {{output name: array}}, got {type(out).__name__}")
        for name, target in out.items():
            if name not in names:
                raise InputError(f"{where}[{name!r}]: not an output of this run; outputs: {', '.join(names)}")
            if not isinstance(target, np.ndarray) or not target.flags.c_contiguous or not target.flags.writeable:
                raise InputError(f"{where}[{name!r}]: expected a writeable C-contiguous numpy array")
            dtype = self.dtypes[name]
            if target.dtype != dtype:
                raise InputError(f"{where}[{name!r}]: expected dtype {dtype}, got {target.dtype}")
            if rows is not None and (target.ndim == 0 or target.shape[0] != rows):
                raise InputError(
                    f"{where}[{name!r}]: expected {rows} rows (the request's batch), got shape {list(target.shape)}"
                )
            expected = self.expected(name, arrays, rows)  # dims named after an input's are known by now
            if not self.fits(expected, target.shape):
                dims = ", ".join("?" if d is None else str(d) for d in expected)  # type: ignore[union-attr]
                what = "these inputs" if rows is None else "this request"
                raise InputError(f"{where}[{name!r}]: expected shape [{dims}] for {what}, got {list(target.shape)}")
        return dict(out)

    def nbytes(self, name: str, shape: tuple[int, ...]) -> int:
        n = self.dtypes[name].itemsize
        for d in shape:
            n *= d
        return n
