"""`UnknownRankInfo`: an input or output whose rank nothing tells before the model runs.

A model file may record no shape at all for a tensor (an ONNX value without a shape; every output of a native
ncnn .param or of an .mnn file whose inputs have dynamic dims). Its `shape` is None (not (), which says scalar),
`rank` None and `is_dynamic` True. Runners that learn the real rank from a run (ncnn, MNN) replace it with a
TensorInfo of that rank afterwards; the core plans nothing for it before (no batch dim, no preallocated output).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .tensor import TensorInfo

__all__ = ["UnknownRankInfo", "has_rank", "observe"]


class UnknownRankInfo(TensorInfo):
    """A tensor the model gives no shape for: `shape` None, `rank` None."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", None)
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def rank(self) -> int | None:  # type: ignore[override]
        return None

    @property
    def is_dynamic(self) -> bool:
        return True

    def shape_str(self) -> str:
        return "[unknown rank]"


def has_rank(info: TensorInfo) -> bool:
    return info.shape is not None


def observe(infos: list[TensorInfo], watched: frozenset[str], names: Sequence[str], values: Sequence[Any]) -> bool:
    """Update `infos` in place from a run's outputs, for the outputs in `watched` (those the file gives no shape
    for): an unknown rank takes the run's shape and dtype; a dim that differs from the one recorded becomes None
    (dynamic); a rank that changes makes it unknown again. Returns whether anything changed."""
    changed = False
    for name, value in zip(names, values):
        if name not in watched:
            continue
        k = next(i for i, info in enumerate(infos) if info.name == name)
        info, shape = infos[k], tuple(np.shape(value))
        if info.shape is None:
            new: TensorInfo = TensorInfo(name, shape, np.asarray(value).dtype)
        elif len(info.shape) != len(shape):
            new = UnknownRankInfo(name, (), info.dtype)
        else:
            new = TensorInfo(name, tuple(d if d == s else None for d, s in zip(info.shape, shape)), info.dtype)
        if new.shape != info.shape or new.dtype != info.dtype or type(new) is not type(info):
            infos[k] = new
            changed = True
    return changed
