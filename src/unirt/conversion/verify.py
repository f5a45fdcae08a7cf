"""Comparing a converted model's outputs with the source model's on the same inputs, and the metric that judges them.

The metric (`OutputError.error`, judged against `TOLERANCES`), per output and per input set, worst over the sets:

    error = rms(got - ref) / max(rms(ref), SCALE_FLOOR)

* Where the output's own scale is at least SCALE_FLOOR (1e-3) this is the relative L2 error ||got-ref|| / ||ref||:
  an error relative to what the output is, whatever its units.
* Below it the output is *near zero* on these inputs (a sigmoid/softmax tail, a detector's score map on random
  data: ~1e-7 everywhere), and the relative error only measures how small the reference is: engines compute such
  values from O(1) intermediates (logits, exponents) whose absolute rounding carries through unscaled, so a
  good fp32 conversion is ~1e-3 off *relatively* yet 1e-7 off in value. The output is then judged on its
  absolute rms error, against tolerance x SCALE_FLOOR (1e-6 at fp32). A wrong conversion of a near-zero
  output still fails: its error is of the output's own size or the floor's, far beyond 1e-6.
* Integer and bool outputs must match exactly (`error` is the fraction of elements that differ); NaN/inf must be
  where the reference has them; another shape fails. `rel_l2` and `max_abs` are reported alongside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..tensor import TensorInfo
from .signature import concrete_shape

__all__ = [
    "TOLERANCES",
    "SCALE_FLOOR",
    "OutputError",
    "index_bounds",
    "random_feeds",
    "feed_sets",
    "compare",
    "describe_sets",
    "describe_feeds",
]

#: Largest relative L2 error (||converted - reference|| / ||reference||) accepted per precision, on float outputs.
#: Integer and bool outputs must match exactly.
TOLERANCES = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 5e-2, "int8": 1e-1}

#: The output scale (rms of the reference) below which an output counts as near zero and its error is measured
#: in absolute terms, relative to this floor instead of to itself (see the module docstring).
SCALE_FLOOR = 1e-3


@dataclass(frozen=True)
class OutputError:
    """How far one output of the converted model is from the reference, worst over the input sets."""

    name: str
    rel_l2: float  # float outputs: relative L2; integer/bool outputs: fraction of elements that differ
    max_abs: float
    note: str = ""
    exact: bool = False  # an integer/bool output: any difference is a failure, whatever the tolerance
    error: float | None = None  # the judged metric (module docstring); None: as rel_l2 (records before it)
    scale: float | None = None  # rms of the reference output (the worst set's), None when not measured

    def __post_init__(self) -> None:
        if self.error is None:
            object.__setattr__(self, "error", self.rel_l2)

    @property
    def near_zero(self) -> bool:
        """The reference output was below SCALE_FLOOR: judged on absolute error."""
        return not self.exact and self.scale is not None and self.scale < SCALE_FLOOR

    def within(self, tolerance: float) -> bool:
        """Exact outputs: identical; float outputs: `error` <= tolerance."""
        return self.acceptable if self.exact else self.error <= tolerance  # type: ignore[operator]

    def describe(self) -> str:
        """ "y: rel-L2 0.002, max abs 0.01"; for a near-zero output, the judged error first and why."""
        if self.near_zero:
            text = (
                f"{self.name}: error {self.error:.3g} (near-zero output, rms {self.scale:.2g} < {SCALE_FLOOR:g}: "
                f"rms error / {SCALE_FLOOR:g}), rel-L2 {self.rel_l2:.3g}, max abs {self.max_abs:.3g}"
            )
        else:  # error == rel_l2 here (for an integer output, the fraction of elements that differ)
            text = f"{self.name}: rel-L2 {self.rel_l2:.3g}, max abs {self.max_abs:.3g}"
        return text + (f" ({self.note})" if self.note else "")

    @property
    def acceptable(self) -> bool:
        """For an exact output, whether it matched; float outputs are judged against a tolerance instead."""
        return not self.exact or self.rel_l2 == 0.0

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "rel_l2": self.rel_l2,
            "max_abs": self.max_abs,
            "note": self.note,
            "exact": self.exact,
            "error": self.error,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> OutputError:
        scale = d.get("scale")
        return cls(
            str(d["name"]),
            float(d["rel_l2"]),
            float(d["max_abs"]),
            str(d.get("note", "")),
            bool(d.get("exact", False)),
            float(d.get("error", d["rel_l2"])),
            None if scale is None else float(scale),
        )


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


def random_feeds(
    inputs: Sequence[TensorInfo],
    shapes: Mapping[str, tuple[int, ...]],
    rng: np.random.Generator,
    bounds: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
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
            raise ConversionError(
                f"input {info.name!r} is a {info.dtype} tensor: unirt cannot make random inputs "
                "to verify a conversion of it (and the converters take numeric tensors only)"
            )
    return feeds


def feed_sets(
    inputs: Sequence[TensorInfo],
    given: Mapping[str, Sequence[int]] | None,
    seed: int = 0,
    bounds: Mapping[str, int] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Two random input sets at the conversion's shapes; a third with batch 2 where every input's leading dim is
    dynamic and not fixed by the user (catches batch handling on engines with no batch dim). `bounds`: index
    ranges of integer inputs (`index_bounds`)."""
    rng = np.random.default_rng(seed)
    shapes = {i.name: concrete_shape(i, given) for i in inputs}
    sets = [random_feeds(inputs, shapes, rng, bounds) for _ in range(2)]
    batchable = inputs and all(
        i.rank > 0 and not isinstance(i.shape[0], int) and not (given and i.name in given) for i in inputs
    )
    if batchable:
        sets.append(random_feeds(inputs, {n: (2,) + s[1:] for n, s in shapes.items()}, rng, bounds))
    return sets


def _error(name: str, got: np.ndarray, ref: np.ndarray) -> OutputError:
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return OutputError(name, float("inf"), float("inf"), f"shape {list(got.shape)} != reference {list(ref.shape)}")
    exact = ref.dtype.kind not in "fc"
    if ref.size == 0:
        return OutputError(name, 0.0, 0.0, exact=exact)
    if exact:
        differ = float(np.mean(got != ref))
        return OutputError(
            name,
            differ,
            float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))),
            "integer output, must match exactly: fraction of elements that differ" if differ else "",
            exact=True,
        )
    g, r = got.astype(np.float64), ref.astype(np.float64)
    same_nonfinite = (np.isnan(g) & np.isnan(r)) | (np.isinf(g) & (g == r))
    if np.any(~np.isfinite(g) & ~same_nonfinite) or np.any(~np.isfinite(r) & ~same_nonfinite):
        return OutputError(name, float("inf"), float("inf"), "non-finite values where the reference has others")
    g, r = np.where(same_nonfinite, 0.0, g), np.where(same_nonfinite, 0.0, r)
    d = g - r
    diff, norm = float(np.linalg.norm(d)), float(np.linalg.norm(r))
    rel = diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))
    rms_d, rms_r = diff / np.sqrt(r.size), norm / np.sqrt(r.size)
    return OutputError(
        name, rel, float(np.max(np.abs(d))), error=float(rms_d / max(rms_r, SCALE_FLOOR)), scale=float(rms_r)
    )


def compare(
    got_sets: Sequence[Mapping[str, np.ndarray]], ref_sets: Sequence[Mapping[str, np.ndarray]]
) -> list[OutputError]:
    """Worst error (`OutputError.error`, the judged metric) per output over every input set."""
    worst: dict[str, OutputError] = {}
    for got, ref in zip(got_sets, ref_sets):
        for name, r in ref.items():
            e = (
                _error(name, got[name], r)
                if name in got
                else OutputError(name, float("inf"), float("inf"), "missing from the converted model")
            )
            if name not in worst or e.error > worst[name].error:  # type: ignore[operator]
                worst[name] = e
    return list(worst.values())


def describe_feeds(feeds: Mapping[str, np.ndarray]) -> str:
    """`x: 1x3x224x224, mask: 1x128` (a scalar shows as `()`)."""
    return ", ".join(f"{k}: {'x'.join(map(str, np.shape(v))) or '()'}" for k, v in feeds.items())


def describe_sets(sets: Sequence[Mapping[str, np.ndarray]], what: str = "random inputs") -> str:
    """What verification ran on, in words: "random inputs at x: 1x3x224x224, 3 sets" (each distinct shape
    listed once)."""
    shapes: list[str] = []
    for feeds in sets:
        text = describe_feeds(feeds)
        if text not in shapes:
            shapes.append(text)
    return f"{what} at {'; '.join(shapes)}, {len(sets)} set{'s' if len(sets) != 1 else ''}"
