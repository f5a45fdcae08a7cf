"""Comparing a converted model's outputs with the source model's on the same random inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConversionError
from ..tensor import TensorInfo
from .signature import concrete_shape

__all__ = ["TOLERANCES", "OutputError", "index_bounds", "random_feeds", "feed_sets", "compare"]

#: Largest relative L2 error (||converted - reference|| / ||reference||) accepted per precision, on float outputs.
#: Integer and bool outputs must match exactly.
TOLERANCES = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 5e-2, "int8": 1e-1}


@dataclass(frozen=True)
class OutputError:
    """How far one output of the converted model is from the reference, worst over the input sets."""

    name: str
    rel_l2: float  # float outputs: relative L2; integer/bool outputs: fraction of elements that differ
    max_abs: float
    note: str = ""
    exact: bool = False  # an integer/bool output: any difference is a failure, whatever the tolerance

    @property
    def acceptable(self) -> bool:
        """For an exact output, whether it matched; float outputs are judged against a tolerance instead."""
        return not self.exact or self.rel_l2 == 0.0

    def as_dict(self) -> dict:
        return {"name": self.name, "rel_l2": self.rel_l2, "max_abs": self.max_abs, "note": self.note,
                "exact": self.exact}

    @classmethod
    def from_dict(cls, d: Mapping) -> "OutputError":
        return cls(str(d["name"]), float(d["rel_l2"]), float(d["max_abs"]), str(d.get("note", "")),
                   bool(d.get("exact", False)))


def index_bounds(model: Any) -> dict[str, int]:
    """{graph input: n} for integer inputs that an onnx.ModelProto uses directly as Gather indices into an
    initializer with n rows along the gathered axis (an embedding table): any index in [0, n) is valid. The
    smallest n where an input indexes several tables."""
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        data, indices = node.input[0], node.input[1]
        if indices not in inputs or indices in inits or data not in inits:
            continue
        dims = inits[data]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        axis += len(dims) if axis < 0 else 0
        if 0 <= axis < len(dims) and dims[axis] > 0:
            bounds[indices] = min(bounds.get(indices, dims[axis]), int(dims[axis]))
    return bounds


def random_feeds(inputs: Sequence[TensorInfo], shapes: Mapping[str, tuple[int, ...]],
                 rng: np.random.Generator, bounds: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Inputs like a user's: standard normal floats, random bools, and ints that are valid indices: over [0, n)
    for an input `bounds` knows (e.g. an embedding table's rows, `index_bounds`), else 0 or 1."""
    feeds = {}
    for info in inputs:
        shape = shapes[info.name]
        kind = info.dtype.kind
        if kind == "f":
            feeds[info.name] = rng.standard_normal(shape).astype(info.dtype)
        elif kind in "iu":
            high = min((bounds or {}).get(info.name, 2), int(np.iinfo(info.dtype).max) + 1)
            feeds[info.name] = rng.integers(0, high, size=shape).astype(info.dtype)
        elif kind == "b":
            feeds[info.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise ConversionError(f"input {info.name!r} is a {info.dtype} tensor: unirt cannot make random inputs "
                                  "to verify a conversion of it (and the converters take numeric tensors only)")
    return feeds


def feed_sets(inputs: Sequence[TensorInfo], given: Mapping[str, Sequence[int]] | None,
              seed: int = 0, bounds: Mapping[str, int] | None = None) -> list[dict[str, np.ndarray]]:
    """Two random input sets at the conversion's shapes; a third with batch 2 where every input's leading dim is
    dynamic and not fixed by the user (catches batch handling on engines with no batch dim). `bounds`: index
    ranges of integer inputs (`index_bounds`)."""
    rng = np.random.default_rng(seed)
    shapes = {i.name: concrete_shape(i, given) for i in inputs}
    sets = [random_feeds(inputs, shapes, rng, bounds) for _ in range(2)]
    batchable = inputs and all(i.rank > 0 and not isinstance(i.shape[0], int) and not (given and i.name in given)
                               for i in inputs)
    if batchable:
        sets.append(random_feeds(inputs, {n: (2,) + s[1:] for n, s in shapes.items()}, rng, bounds))
    return sets


def _error(name: str, got: np.ndarray, ref: np.ndarray) -> OutputError:
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return OutputError(name, float("inf"), float("inf"), f"shape {list(got.shape)} != reference "
                                                             f"{list(ref.shape)}")
    exact = ref.dtype.kind not in "fc"
    if ref.size == 0:
        return OutputError(name, 0.0, 0.0, exact=exact)
    if exact:
        differ = float(np.mean(got != ref))
        return OutputError(name, differ, float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))),
                           "integer output, must match exactly: fraction of elements that differ" if differ else "",
                           exact=True)
    g, r = got.astype(np.float64), ref.astype(np.float64)
    same_nonfinite = (np.isnan(g) & np.isnan(r)) | (np.isinf(g) & (g == r))
    if np.any(~np.isfinite(g) & ~same_nonfinite) or np.any(~np.isfinite(r) & ~same_nonfinite):
        return OutputError(name, float("inf"), float("inf"), "non-finite values where the reference has others")
    g, r = np.where(same_nonfinite, 0.0, g), np.where(same_nonfinite, 0.0, r)
    diff = np.linalg.norm(g - r)
    scale = np.linalg.norm(r)
    rel = float(diff / scale) if scale > 0 else float(diff)
    return OutputError(name, rel, float(np.max(np.abs(g - r))))


def compare(got_sets: Sequence[Mapping[str, np.ndarray]],
            ref_sets: Sequence[Mapping[str, np.ndarray]]) -> list[OutputError]:
    """Worst error per output over every input set."""
    worst: dict[str, OutputError] = {}
    for got, ref in zip(got_sets, ref_sets):
        for name, r in ref.items():
            e = _error(name, got[name], r) if name in got else OutputError(name, float("inf"), float("inf"),
                                                                           "missing from the converted model")
            if name not in worst or e.rel_l2 > worst[name].rel_l2:
                worst[name] = e
    return list(worst.values())
