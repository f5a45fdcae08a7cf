"""Reading an .mnn file's inputs (name, dims with -1 for dynamic, dtype, layout) from its FlatBuffer.

MNN's Python API reports a dynamic dim as 1, so a model with a dynamic batch would look static and a static one
would accept any batch (MNN silently resizes). The Input ops in the file say which dims are dynamic.
Schema (MNN's schema/default/*.fbs): Net{oplists: 3, outputName: 4, tensorName: 7}; Op{main_type: 1, main: 2,
name: 3, outputIndexes: 4, type: 5}; Input{dims: 0, dtype: 1 = DT_FLOAT, dformat: 2 = NC4HW4}.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["InputSpec", "read_inputs", "check_structure"]

_OP_INPUT = 34  # OpType.Input
# OpType values in MNN's schema (MNN.fbs); an op type outside them makes MNN index its creator table out of bounds.
_OP_TYPE_RANGES = ((0, 122), (128, 156), (256, 269), (299, 308), (512, 515), (517, 518), (600, 601), (603, 604))
_PARAM_TAGS = 103  # OpParameter union members (1..103; 0 = NONE)
_PARAM_INPUT = 21  # OpParameter.Input (union type tag)
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    17: np.uint16,
    19: np.float16,
}
_FORMATS = {0: "NCHW", 1: "NHWC", 2: "NC4HW4", 3: "NHWC4"}


@dataclass(frozen=True)
class InputSpec:
    name: str
    dims: tuple[int, ...]  # -1 where dynamic
    dtype: np.dtype
    layout: str


class _Buffer:
    def __init__(self, data: bytes) -> None:
        self.b = data

    def _need(self, pos: int, size: int) -> None:
        if pos < 0 or pos + size > len(self.b):
            raise ValueError(f"offset {pos} (+{size}) lies outside the file ({len(self.b)} bytes)")

    def u8(self, pos: int) -> int:
        self._need(pos, 1)
        return self.b[pos]

    def i32(self, pos: int) -> int:
        self._need(pos, 4)
        return struct.unpack_from("<i", self.b, pos)[0]

    def u32(self, pos: int) -> int:
        self._need(pos, 4)
        return struct.unpack_from("<I", self.b, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field `index` of the table at `table`, None if absent."""
        vtable = table - self.i32(table)
        self._need(vtable, 4)
        size = struct.unpack_from("<H", self.b, vtable)[0]
        if 4 + 2 * index + 2 > size:
            return None
        self._need(vtable + 4 + 2 * index, 2)
        offset = struct.unpack_from("<H", self.b, vtable + 4 + 2 * index)[0]
        return table + offset if offset else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, index: int) -> tuple[int, int]:
        """(first element position, count) of a vector field; (0, 0) if absent."""
        pos = self.field(table, index)
        if pos is None:
            return 0, 0
        vec = self.deref(pos)
        count = self.u32(vec)
        if count > len(self.b):
            raise ValueError(f"vector of {count} entries cannot fit the file")
        return vec + 4, count

    def string(self, pos: int) -> str:
        start = self.deref(pos)
        length = self.u32(start)
        self._need(start + 4, length)
        return self.b[start + 4 : start + 4 + length].decode("utf-8", "replace")


def read_inputs(data: bytes) -> list[InputSpec]:
    """Every Input op of the main graph, in file order. ValueError if the FlatBuffer does not hold together."""
    fb = _Buffer(data)
    root = fb.u32(0)
    names_at, n_names = fb.vector(root, 7)
    ops_at, n_ops = fb.vector(root, 3)
    specs = []
    for i in range(n_ops):
        op = fb.deref(ops_at + 4 * i)
        type_pos = fb.field(op, 5)
        if type_pos is None or fb.i32(type_pos) != _OP_INPUT:
            continue
        tag_pos = fb.field(op, 1)
        main_pos = fb.field(op, 2)
        dims: tuple[int, ...] = ()
        dtype, layout = np.dtype(np.float32), "NC4HW4"
        if tag_pos is not None and fb.u8(tag_pos) == _PARAM_INPUT and main_pos is not None:
            param = fb.deref(main_pos)
            dims_at, n_dims = fb.vector(param, 0)
            dims = tuple(fb.i32(dims_at + 4 * k) for k in range(n_dims))
            dt_pos, fmt_pos = fb.field(param, 1), fb.field(param, 2)
            code = fb.i32(dt_pos) if dt_pos is not None else 1
            if code not in _DTYPES:
                raise ValueError(f"input op {i} has data type code {code}, which unirt cannot feed")
            dtype = np.dtype(_DTYPES[code])
            layout = _FORMATS.get(fb.u8(fmt_pos) if fmt_pos is not None else 2, "NC4HW4")
        outs_at, n_outs = fb.vector(op, 4)
        name = None
        if n_outs:
            index = fb.i32(outs_at)
            if 0 <= index < n_names:
                name = fb.string(names_at + 4 * index)
        if name is None:
            name_pos = fb.field(op, 3)
            name = fb.string(name_pos) if name_pos is not None else f"input{len(specs)}"
        specs.append(InputSpec(name, dims, dtype, layout))
    return specs


def _known_op(kind: int) -> bool:
    return any(lo <= kind <= hi for lo, hi in _OP_TYPE_RANGES)


def check_structure(data: bytes) -> None:
    """What MNN's FlatBuffer verifier does not check and its loader trusts: every op's tensor indexes inside the
    tensor table, op types and parameter tags that exist, output names that name tensors, one Input op per model
    input. ValueError naming the first problem."""
    fb = _Buffer(data)
    root = fb.u32(0)
    names_at, n_names = fb.vector(root, 7)
    ops_at, n_ops = fb.vector(root, 3)
    if n_ops == 0 or n_names == 0:
        raise ValueError("the model has no operators or no tensors")
    number_pos = fb.field(root, 8)
    if number_pos is not None and fb.i32(number_pos) not in (0, n_names):
        raise ValueError(f"tensorNumber {fb.i32(number_pos)} does not match the {n_names} tensor names")
    names = {fb.string(names_at + 4 * i) for i in range(n_names)}
    written: set[int] = set()
    for i in range(n_ops):
        op = fb.deref(ops_at + 4 * i)
        type_pos = fb.field(op, 5)
        kind = fb.i32(type_pos) if type_pos is not None else 0
        if not _known_op(kind):
            raise ValueError(f"op {i} has type {kind}, which is not an MNN op type")
        tag_pos = fb.field(op, 1)
        tag = fb.u8(tag_pos) if tag_pos is not None else 0
        if tag > _PARAM_TAGS:
            raise ValueError(f"op {i} has parameter type tag {tag}, beyond MNN's {_PARAM_TAGS}")
        if (tag == _PARAM_INPUT) != (kind == _OP_INPUT) and (kind == _OP_INPUT or tag == _PARAM_INPUT):
            raise ValueError(f"op {i}: an Input op must carry Input parameters and only it (type {kind}, tag {tag})")
        for field, what in ((0, "input"), (4, "output")):
            at, count = fb.vector(op, field)
            for k in range(count):
                index = fb.i32(at + 4 * k)
                if not 0 <= index < n_names:
                    raise ValueError(f"op {i} {what} #{k} is tensor {index}, outside the {n_names} tensors")
                if field == 4:
                    written.add(index)
    outs_at, n_outs = fb.vector(root, 4)
    for k in range(n_outs):
        name = fb.string(outs_at + 4 * k)
        if name not in names:
            raise ValueError(f"output {name!r} names no tensor of the model")
