"""TensorRT optimization profiles (min/opt/max shape per input) from a network's input shapes, `max_batch` and
the caller's `shapes`. Pure logic: no tensorrt import."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unirt import InputError, UnsupportedOptionError

Shape = tuple[int, ...]
Range = tuple[Shape, Shape, Shape]  # (min, opt, max)

#: A dynamic batch dim with no max_batch (neither the Session's nor backend_options') builds for batches
#: 1..DEFAULT_MAX_BATCH, tuned for batch 1. trtexec builds such an engine for batch 1 only; unirt allows a few
#: more rows, and a Session splits larger requests at the engine's max (`TensorRTSession.max_batch`).
DEFAULT_MAX_BATCH = 8


@dataclass(frozen=True)
class Profile:
    """One optimization profile: {input name: (min, opt, max)}."""

    ranges: dict[str, Range]

    def check(self, name: str, shape: Shape) -> None:
        """InputError when a run's shape is outside what the engine was built for."""
        lo, _, hi = self.ranges[name]
        if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise InputError(
                f"input {name!r}: shape {list(shape)} is outside the TensorRT engine's profile "
                f"(min {list(lo)}, max {list(hi)}); rebuild with backend_options "
                "{'max_batch': N} or {'shapes': {name: {'min': ..., 'opt': ..., 'max': ...}}}"
            )

    def max_batch(self) -> int | None:
        """The largest batch every input with a ranged dim 0 takes (None when no input has one)."""
        tops = [hi[0] for lo, _, hi in self.ranges.values() if lo and lo[0] != hi[0]]
        return min(tops) if tops else None

    def as_json(self) -> dict[str, list[list[int]]]:
        return {name: [list(s) for s in r] for name, r in sorted(self.ranges.items())}


def _shape(name: str, value: Any, what: str) -> Shape:
    if isinstance(value, str):
        value = [d for d in value.lower().split("x") if d]
    try:
        shape = tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise UnsupportedOptionError(
            f"tensorrt: shapes[{name!r}] {what}: expected a list of ints, got {value!r}"
        ) from None
    if any(d < 0 for d in shape):
        raise UnsupportedOptionError(f"tensorrt: shapes[{name!r}] {what}: dims must be >= 0, got {list(shape)}")
    return shape


def _given(name: str, spec: Any) -> Range:
    if isinstance(spec, Mapping):
        missing = [k for k in ("min", "opt", "max") if k not in spec]
        if missing:
            raise UnsupportedOptionError(
                f"tensorrt: shapes[{name!r}] needs 'min', 'opt' and 'max' (missing {', '.join(missing)})"
            )
        return _shape(name, spec["min"], "min"), _shape(name, spec["opt"], "opt"), _shape(name, spec["max"], "max")
    fixed = _shape(name, spec, "shape")
    return fixed, fixed, fixed


def dynamic_inputs(inputs: Sequence[tuple[str, Sequence[int]]]) -> list[str]:
    """The inputs with a dynamic (-1) dim: TensorRT needs an optimization profile entry for each of them, also when
    `shapes` fixes one to a single shape (min == opt == max)."""
    return [name for name, dims in inputs if any(int(d) < 0 for d in dims)]


def derive_profile(
    inputs: Sequence[tuple[str, Sequence[int]]],
    max_batch: int | None = None,
    shapes: Mapping[str, Any] | None = None,
    opt_batch: int | None = None,
) -> Profile:
    """The profile for a network whose inputs have `dims` (-1 for dynamic).

    `shapes[name]` fixes an input (a list of ints, or "1x3x224x224") or gives its range ({"min", "opt", "max"}).
    Otherwise a dynamic dim 0 is the batch: 1 .. `max_batch`, optimised for `opt_batch` (default `max_batch`);
    with no max_batch, 1 .. DEFAULT_MAX_BATCH optimised for 1 (unless `opt_batch` says otherwise). Any other
    dynamic dim needs `shapes`: TensorRT builds kernels for bounded shapes only.
    """
    shapes = dict(shapes or {})
    names = {name for name, _ in inputs}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise UnsupportedOptionError(
            f"tensorrt: shapes names unknown input {unknown[0]!r}; inputs: {', '.join(sorted(names))}"
        )
    for label, value in (("max_batch", max_batch), ("opt_batch", opt_batch)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UnsupportedOptionError(f"tensorrt: {label} must be a positive int, got {value!r}")
    top = max_batch or DEFAULT_MAX_BATCH
    opt = opt_batch or (top if max_batch else 1)
    if opt > top:
        raise UnsupportedOptionError(
            f"tensorrt: opt_batch {opt} is larger than max_batch {top}"
            + ("" if max_batch else " (the default: give max_batch)")
        )
    ranges: dict[str, Range] = {}
    for name, dims in inputs:
        dims = tuple(int(d) for d in dims)
        if name in shapes:
            lo, mid, hi = _given(name, shapes[name])
        elif all(d >= 0 for d in dims):
            lo = mid = hi = dims
        else:
            other = [axis for axis, d in enumerate(dims) if d < 0 and axis != 0]
            if other:
                raise UnsupportedOptionError(
                    f"tensorrt: input {name!r} dim {other[0]} is dynamic ({list(dims)}); give its range, e.g. "
                    f"backend_options={{'shapes': {{{name!r}: {{'min': ..., 'opt': ..., 'max': ...}}}}}}"
                )
            lo, mid, hi = ((1, *dims[1:]), (opt, *dims[1:]), (top, *dims[1:]))
        for which, shape in (("min", lo), ("opt", mid), ("max", hi)):
            if len(shape) != len(dims):
                raise UnsupportedOptionError(
                    f"tensorrt: shapes[{name!r}] {which} has rank {len(shape)}, the input "
                    f"has rank {len(dims)} ({list(dims)})"
                )
            fixed = [(axis, d) for axis, d in enumerate(dims) if d >= 0 and shape[axis] != d]
            if fixed:
                raise UnsupportedOptionError(
                    f"tensorrt: shapes[{name!r}] {which} {list(shape)} changes static dim {fixed[0][0]} of {list(dims)}"
                )
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
            raise UnsupportedOptionError(
                f"tensorrt: shapes[{name!r}] must satisfy min <= opt <= max per dim, got "
                f"{list(lo)}, {list(mid)}, {list(hi)}"
            )
        ranges[name] = (lo, mid, hi)
    return Profile(ranges)
