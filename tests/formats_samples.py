"""Minimal, structurally valid files of every format unirt detects, built byte by byte for format tests."""

from __future__ import annotations

import struct
from pathlib import Path


def flatbuffer(fields: dict[int, bytes | int], identifier: bytes = b"", n_fields: int = 0) -> bytes:
    """A FlatBuffer whose root table has `fields`: int -> a u32 scalar, bytes -> a vector of u32 of that many
    entries (the bytes are the entry count encoded as len(bytes))."""
    n_fields = max(n_fields, max(fields) + 1)
    header = 8 if identifier else 4
    vt_size = 4 + 2 * n_fields
    vtable_pos = header
    table_pos = (vtable_pos + vt_size + 3) // 4 * 4
    slots = sorted(fields)
    obj_size = 4 + 4 * len(slots)
    vectors_pos = table_pos + obj_size
    out = bytearray(vectors_pos)
    struct.pack_into("<I", out, 0, table_pos)
    if identifier:
        out[4:8] = identifier
    offsets = [0] * n_fields
    for k, idx in enumerate(slots):
        offsets[idx] = 4 + 4 * k
    struct.pack_into(f"<HH{n_fields}H", out, vtable_pos, vt_size, obj_size, *offsets)
    struct.pack_into("<i", out, table_pos, table_pos - vtable_pos)
    for k, idx in enumerate(slots):
        slot = table_pos + 4 + 4 * k
        value = fields[idx]
        if isinstance(value, int):
            struct.pack_into("<I", out, slot, value)
        else:
            vec = len(out)
            out += struct.pack("<I", len(value)) + b"\0\0\0\0" * len(value)
            struct.pack_into("<I", out, slot, vec - slot)
    return bytes(out)


def tflite_bytes() -> bytes:
    return flatbuffer({0: 3, 2: b"x", 4: b"xx"}, identifier=b"TFL3", n_fields=5)


def mnn_bytes() -> bytes:
    return flatbuffer({3: b"abc", 7: b"abcd", 8: 4}, n_fields=12)


def write_openvino(directory: Path, with_bin: bool = True) -> Path:
    xml = directory / "model.xml"
    xml.write_text(
        '<?xml version="1.0"?>\n<net name="m" version="11">\n<layers>\n'
        '<layer id="0" name="w" type="Const" version="opset1"/>\n</layers>\n</net>\n'
    )
    if with_bin:
        (directory / "model.bin").write_bytes(b"\0" * 16)
    return xml


def write_ncnn(directory: Path) -> Path:
    param = directory / "model.param"
    param.write_text("7767517\n2 2\nInput data 0 1 data\nReLU relu 1 1 data out\n")
    (directory / "model.bin").write_bytes(b"")
    return param


def tensorrt_bytes() -> bytes:
    return b"ftrt" + b"\0" * 60
