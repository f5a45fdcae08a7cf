"""Checking feeds against a model's inputs before anything reaches native code.

Everything that can be worked out from the model is precomputed in `InputChecker.__init__`; `check` is the
hot path of `Session.run` and does only per-call work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _core
from .device_tensors import describe, device_of, host_copy
from .errors import InputError
from .tensor import TensorInfo, to_array

__all__ = ["InputChecker", "BatchSizeMismatch"]


class BatchSizeMismatch(InputError):
    """Raised by `check` for a static-batch model when every check passed but the batch dim is not N: the
    session then pads or splits. Carries the checked arrays and the request's batch size."""

    def __init__(self, arrays: dict[str, np.ndarray], rows: int, expected: int) -> None:
        super().__init__(f"the model takes a static batch of {expected}, the inputs have {rows} rows")
        self.arrays = arrays
        self.rows = rows


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class InputChecker:
    """Turns user feeds into `{name: C-contiguous ndarray}` or raises InputError naming the input."""

    def __init__(
        self,
        inputs: Sequence[TensorInfo],
        batch_size: int | None = None,
        batch_hint: int | None = None,
        converted_for: str | None = None,
        batch_rows_agree: bool = False,
        *,
        device_inputs: frozenset[str] = frozenset(),
        copy_device_inputs: bool = False,
        runs_on: str = "",
    ) -> None:
        """`batch_size`: the static batch dim N of a model whose dim 0 is a batch dim; a request with another
        batch size then raises BatchSizeMismatch (for the session to pad or split) instead of InputError.
        `batch_hint`: N for a model whose dim 0 is fixed at N everywhere but not taken as a batch dim; the
        InputError for another size then says that batched=True pads or splits.
        `converted_for`: the backend a model was converted for on load, at fixed shapes; the InputError for
        another size of a static dim then says how to convert at other shapes.
        `batch_rows_agree`: dim 0 is a batch dim (batched=True) that the inputs do not share by name (unnamed, or
        named differently): every input must then have the same number of rows, which no dim name checks.
        `device_inputs`: device kinds whose tensors the backend takes as they are (`unirt.device_tensors`);
        a tensor on another device is refused (naming `runs_on`, e.g. "onnxruntime, cpu"), or copied to the host
        with `copy_device_inputs`."""
        self._device_inputs = device_inputs
        self._copy_device_inputs = copy_device_inputs
        self._runs_on = runs_on
        self._inputs = tuple(inputs)
        self._batch_size = batch_size
        self._batch_hint = batch_hint
        self._converted_for = converted_for
        self._count = len(inputs)
        self._names = tuple(i.name for i in inputs)
        # (name, dtype, full shape if every dim is static else None, static (axis, size) pairs, rank, info); an input
        # of unknown rank (UnknownRankInfo: TorchScript, AOTInductor record none) takes any shape.
        self._specs = tuple(
            (
                i.name,
                i.dtype,
                None if i.is_dynamic else i.shape,
                tuple(
                    (axis, d)
                    for axis, d in enumerate(i.shape or ())
                    if isinstance(d, int) and not (axis == 0 and batch_size is not None)
                ),
                i.rank,
                i,
            )
            for i in inputs
        )
        self._single = inputs[0].name if len(inputs) == 1 else None
        # Symbolic dims shared by several places must agree at run time (e.g. batch "N" on two inputs).
        places: dict[str, list[tuple[str, int]]] = {}
        for i in inputs:
            for axis, d in enumerate(i.shape or ()):
                if isinstance(d, str):
                    places.setdefault(d, []).append((i.name, axis))
        self._shared_symbols = tuple((s, tuple(p)) for s, p in places.items() if len(p) > 1)
        self._rows_agree = batch_rows_agree and batch_size is None and len(inputs) > 1
        self._string_inputs = tuple(i.name for i in inputs if i.dtype.kind == "O")

    # -- hot path ------------------------------------------------------------------------------------------
    def check(self, feeds: Any) -> dict[str, np.ndarray]:
        if type(feeds) is not dict:
            feeds = self._as_dict(feeds)
        if len(feeds) != self._count:
            raise self._mismatch(feeds)
        out = feeds  # handed on as-is when every input is already right (the common case): no new dict
        rows = None  # set when a static batch dim differs from the model's
        for name, dtype, static_shape, fixed, rank, info in self._specs:
            try:
                x = given = feeds[name]
            except KeyError:
                raise self._mismatch(feeds) from None
            if type(x) is not np.ndarray:
                x = self._foreign(x, name, dtype)
            if x.dtype is not dtype and x.dtype != dtype:
                x = self._fix_dtype(x, info)
            shape = x.shape
            if shape != static_shape:  # one comparison settles a fully static input
                if len(shape) != rank and rank is not None:
                    raise InputError(
                        f"input {name!r}: expected rank {info.rank} with shape "
                        f"{_shape_text(info.shape)}, got rank {len(shape)} "
                        f"with shape {_shape_text(shape)}"
                    )
                for axis, size in fixed:
                    if shape[axis] != size:
                        raise self._static_mismatch(info, axis, shape)
                if self._batch_size is not None and shape[0] != self._batch_size:
                    rows = self._batch_rows(rows, name, shape[0])
            if not x.flags.c_contiguous:
                x = _core.contiguous_copy(x) if x.dtype.kind != "O" else np.ascontiguousarray(x)
            if x is not given:
                if out is feeds:
                    out = dict(feeds)
                out[name] = x
        if self._shared_symbols:
            self._check_symbols(out)
        if self._rows_agree:
            self._check_rows_agree(out)
        if self._string_inputs:
            out = self._utf8_text(out, feeds)
        if rows is not None:
            self._check_batch(out, rows)
            raise BatchSizeMismatch(out, rows, self._batch_size)  # type: ignore[arg-type]
        return out

    # -- slow paths, only on unusual input ------------------------------------------------------------------
    def _foreign(self, x: Any, name: str, dtype: np.dtype) -> Any:
        """A feed that is not a numpy array: a device tensor (passed through, copied or refused) or an array-like."""
        where = device_of(x)
        if where is None:
            return to_array(x, name, dtype)
        kind, index = where
        if kind in self._device_inputs:
            return describe(x, name, kind, index)
        if self._copy_device_inputs:
            return host_copy(x, name)
        raise InputError(
            f"input {name!r} is on {kind}:{index}; this backend ({self._runs_on or 'this session'}) "
            f"takes host memory: pass {name}.cpu() (torch) or cupy.asnumpy({name}) (CuPy), or open the "
            "Session with copy_device_inputs=True to have unirt copy it (a device-to-host copy per run)"
        )

    @staticmethod
    def _batch_rows(rows: int | None, name: str, size: int) -> int:
        if rows is not None and rows != size:
            raise InputError(f"the inputs disagree on the batch size (dim 0): {rows} rows, and {size} in {name!r}")
        return size

    def _static_mismatch(self, info: TensorInfo, axis: int, shape: tuple[int, ...]) -> InputError:
        why = (
            "is static"
            if self._converted_for is None
            else f"is static in the {self._converted_for} conversion, made at fixed input shapes"
        )
        text = (
            f"input {info.name!r}: expected shape {_shape_text(info.shape)} (dim {axis} {why}), "
            f"got {_shape_text(shape)}"
        )
        if axis == 0 and self._batch_hint is not None:
            text += (
                f"; if dim 0 is a batch dim, Session(..., batched=True) (unirt run --batched) pads or splits "
                f"requests to the model's static batch of {self._batch_hint}"
            )
        elif self._converted_for is not None:
            text += (
                f"; a dim the source model leaves dynamic takes other sizes once converted at them: "
                f"backend_options={{'conversion': {{'input_shapes': {{{info.name!r}: [...]}}}}}}"
            )
        return InputError(text)

    def _check_batch(self, arrays: dict[str, np.ndarray], rows: int) -> None:
        for name in self._names:
            if arrays[name].shape[0] != rows:
                raise InputError(
                    f"the inputs disagree on the batch size (dim 0): {rows} rows, and "
                    f"{arrays[name].shape[0]} in {name!r}"
                )

    def _check_rows_agree(self, arrays: dict[str, np.ndarray]) -> None:
        first = self._names[0]
        rows = arrays[first].shape[0]
        for name in self._names[1:]:
            if arrays[name].shape[0] != rows:
                raise InputError(
                    f"the inputs disagree on the batch size (dim 0, a batch dim by batched=True): "
                    f"{rows} rows in {first!r}, {arrays[name].shape[0]} in {name!r}; every input of a "
                    "request has the same rows (none is broadcast along the batch dim)"
                )

    def _as_dict(self, feeds: Any) -> dict[str, Any]:
        if isinstance(feeds, Mapping):
            return dict(feeds)
        if self._single is not None:
            return {self._single: feeds}
        if isinstance(feeds, (list, tuple)) and len(feeds) == self._count:
            return dict(zip(self._names, feeds))
        if feeds is None and not self._count:  # a model without inputs: run(None) like run({}) or run([])
            return {}
        raise InputError(
            f"the model has {self._count} inputs ({', '.join(self._names)}); pass a dict "
            f"{{name: array}} or a sequence of {self._count} arrays in that order, "
            f"got {type(feeds).__name__}"
        )

    def _mismatch(self, feeds: Mapping[str, Any]) -> InputError:
        missing = [repr(n) for n in self._names if n not in feeds]
        extra = [repr(n) for n in feeds if n not in self._names]
        parts = []
        if missing:
            parts.append(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected input{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
        return InputError(f"{'; '.join(parts)}; the model's inputs are: {', '.join(self._names)}")

    @staticmethod
    def _fix_dtype(x: np.ndarray, info: TensorInfo) -> np.ndarray:
        expected = info.dtype
        got = x.dtype
        # Same type in the other byte order: the same values, so convert rather than refuse.
        if got.newbyteorder("=") == expected and got.kind == expected.kind:
            return x.astype(expected)
        # String tensors: numpy str/bytes arrays are fine for an object-typed (string) input.
        if expected.kind == "O" and got.kind in "US":
            return x.astype(object)
        raise InputError(f"input {info.name!r}: expected {expected}, got {got}")

    def _utf8_text(self, out: dict[str, Any], feeds: dict[str, Any]) -> dict[str, Any]:
        """String tensors hold text: bytes elements are decoded as UTF-8 (engines would store their repr)."""
        for name in self._string_inputs:
            x = out[name]
            if not any(isinstance(v, (bytes, bytearray)) for v in x.flat):
                continue
            try:
                text = [v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else v for v in x.flat]
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"input {name!r}: string tensors hold UTF-8 text; got bytes that are not UTF-8 "
                    f"({exc.reason} at byte {exc.start})"
                ) from None
            decoded = np.empty(x.shape, dtype=object)
            decoded.flat[:] = text
            if out is feeds:
                out = dict(feeds)
            out[name] = decoded
        return out

    def _check_symbols(self, arrays: dict[str, np.ndarray]) -> None:
        for symbol, places in self._shared_symbols:
            sizes = {(name, axis): arrays[name].shape[axis] for name, axis in places}
            if len(set(sizes.values())) > 1:
                detail = ", ".join(f"{name} dim {axis} = {size}" for (name, axis), size in sizes.items())
                raise InputError(f"dim {symbol!r} must be the same size everywhere it appears; got {detail}")
