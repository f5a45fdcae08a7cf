"""Input shapes for the tools: parse `name:1x3x224x224,...` and resolve a model's dynamic dims from it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..errors import InputError, UnsupportedOptionError
from ..tensor import TensorInfo

__all__ = ["Shapes", "parse_shapes", "resolve_shapes", "format_shape"]

Shapes = dict[str, tuple[int, ...]]
_DIMS = re.compile(r"^(\d+(x\d+)*)?$")


def parse_shapes(spec: str | Sequence[str] | None) -> Shapes:
    """Parse trtexec-style shapes: "x:1x3x224x224,mask:1x77" (also `name=dims`; an empty dims part is a scalar).

    Input names may themselves contain ':' (TensorFlow's "input:0"): the dims are what follows the last one.
    """
    if not spec:
        return {}
    items = [spec] if isinstance(spec, str) else list(spec)
    shapes: Shapes = {}
    for item in (part.strip() for text in items for part in text.split(",")):
        if not item:
            continue
        sep = "=" if "=" in item else ":"
        name, found, dims = item.rpartition(sep)
        dims = dims.strip().lower()
        if not found or not name or not _DIMS.match(dims):
            raise UnsupportedOptionError(
                f"malformed shape {item!r}: expected NAME:DIMS with DIMS like 1x3x224x224, "
                "several separated by commas (e.g. x:1x3x224x224,mask:1x77)"
            )
        if name in shapes:
            raise UnsupportedOptionError(f"shape for input {name!r} given twice")
        shapes[name] = tuple(int(d) for d in dims.split("x")) if dims else ()
    return shapes


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def resolve_shapes(
    inputs: Sequence[TensorInfo],
    shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    batch: int | None = None,
    dynamic_default: int | None = None,
) -> Shapes:
    """Concrete shapes for every input, from the model's static dims, `shapes` and `batch`.

    `shapes` gives whole shapes by input name; they must agree with the model's rank and static dims. A symbolic
    dim set once (e.g. "N" in one input) takes that size in every input that shares it. `batch` sets dim 0 of
    every input whose dim 0 is dynamic. A dim still unknown becomes `dynamic_default`, or raises InputError
    naming it when that is None. An input of unknown rank (`shape` None) takes its whole shape, of any rank, from
    `shapes`; without one it is an InputError whatever `dynamic_default` says.
    """
    given = {k: tuple(v) for k, v in (shapes or {}).items()}
    names = [i.name for i in inputs]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise InputError(
            f"shape given for unknown input{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; the model's inputs are: {', '.join(names) or 'none'}"
        )
    if batch is not None and batch < 1:
        raise UnsupportedOptionError(f"batch must be >= 1, got {batch}")
    symbols: dict[str, int] = {}
    resolved: dict[str, list[int | None]] = {}
    for info in inputs:
        shape = given.get(info.name)
        if info.shape is None:  # rank unknown (the model gives no shape): any rank given is taken
            if shape is None:
                raise InputError(
                    f"input {info.name!r} ({info.dtype}) has no shape in the model, so its rank is "
                    f"unknown; give its whole shape, e.g. --shapes {info.name}:2x3"
                )
            resolved[info.name] = list(shape)
            continue
        dims: list[int | None] = [d if isinstance(d, int) else None for d in info.shape]
        if shape is not None:
            if len(shape) != info.rank:
                raise InputError(
                    f"shape {format_shape(shape)} for input {info.name!r} has rank {len(shape)}; the "
                    f"model's {info.name!r} is {info.dtype}{info.shape_str()} (rank {info.rank})"
                )
            for axis, (want, got) in enumerate(zip(info.shape, shape)):
                if isinstance(want, int) and want != got:
                    raise InputError(
                        f"shape {format_shape(shape)} for input {info.name!r} contradicts the model at "
                        f"dim {axis}: the model fixes it to {want} ({info.dtype}{info.shape_str()})"
                    )
                if isinstance(want, str):
                    if symbols.setdefault(want, got) != got:
                        raise InputError(
                            f"dim {want!r} is {symbols[want]} in one input and {got} in "
                            f"{info.name!r}; inputs sharing a dim name must agree"
                        )
            dims = list(shape)
        resolved[info.name] = dims
    for info in inputs:
        dims = resolved[info.name]
        if info.shape is None:
            continue  # its shape was given whole
        if batch is not None and info.rank and not isinstance(info.shape[0], int):
            dims[0] = batch
        elif batch is not None and info.rank and info.shape[0] != batch:
            raise InputError(
                f"batch {batch} contradicts input {info.name!r}: the model fixes dim 0 to "
                f"{info.shape[0]} ({info.dtype}{info.shape_str()})"
            )
        for axis, d in enumerate(dims):
            if d is not None:
                continue
            sym = info.shape[axis]
            if isinstance(sym, str) and sym in symbols:
                dims[axis] = symbols[sym]
            elif dynamic_default is not None:
                dims[axis] = dynamic_default
            else:
                label = f" ({sym!r})" if isinstance(sym, str) else ""
                raise InputError(
                    f"input {info.name!r} dim {axis}{label} is dynamic ({info.dtype}{info.shape_str()}); "
                    f"give its size, e.g. --shapes {info.name}:"
                    f"{format_shape([x if x is not None else 1 for x in dims])}"
                )
    return {name: tuple(int(d) for d in dims) for name, dims in resolved.items()}  # type: ignore[arg-type]
