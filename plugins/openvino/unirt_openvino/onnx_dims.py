"""The dim names of an ONNX model's inputs and outputs ("N", "seq"), which OpenVINO's ONNX frontend drops.

unirt needs them: a named dim 0 shared by every input and output is a batch dim, a name shared by two inputs
must have one size, and an output dim named after an input dim can be sized before a run. They are read from the
protobuf directly, walking only ModelProto.graph -> GraphProto.input/output: parsing the whole model with `onnx`
would copy every weight for a few strings.
"""

from __future__ import annotations

from unirt.tensor import normalize_dim

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_GRAPH, _INPUT, _OUTPUT = 7, 11, 12  # ModelProto.graph; GraphProto.input, .output (ValueInfoProto)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]  # IndexError past the end: caught by onnx_dim_names
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("bad varint")


def _fields(buf: memoryview, start: int, end: int):
    """(field number, value) for each field of the message in buf[start:end]; a length-delimited value is its
    (start, end), a varint its int; fixed-width fields are skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == _LEN:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            yield number, (pos, pos + length)
            pos += length
        elif wire in (_I64, _I32):
            pos += 8 if wire == _I64 else 4
        else:
            raise ValueError(f"wire type {wire}")


def _dims(buf: memoryview, value_info: tuple[int, int]) -> tuple[str, tuple[str | int | None, ...] | None]:
    """(name, dims) of a ValueInfoProto: per dim its dim_param, its dim_value, or None (also for placeholders, as
    `unirt.tensor.normalize_dim` decides); dims None without a shape."""
    name, dims = "", None
    for number, value in _fields(buf, *value_info):
        if number == 1:  # name
            name = bytes(buf[value[0] : value[1]]).decode("utf-8", "replace")
        elif number == 2:  # type: TypeProto.tensor_type (1) -> shape (2) -> dim (1)
            for t_number, tensor in _fields(buf, *value):
                if t_number != 1:
                    continue
                for s_number, shape in _fields(buf, *tensor):
                    if s_number != 2:
                        continue
                    dims = []
                    for d_number, dim in _fields(buf, *shape):
                        if d_number != 1:
                            continue
                        entry: str | int | None = None
                        for f_number, f_value in _fields(buf, *dim):
                            if f_number == 1:  # dim_value, an int64 (-1 is written as 2**64 - 1)
                                entry = f_value - (1 << 64) if f_value >= 1 << 63 else f_value
                            elif f_number == 2 and f_value[1] > f_value[0]:  # dim_param
                                entry = bytes(buf[f_value[0] : f_value[1]]).decode("utf-8", "replace")
                        dims.append(normalize_dim(entry))  # placeholders ("?", -1) name nothing
    return name, tuple(dims) if dims is not None else None


def onnx_dim_names(data: bytes | memoryview) -> dict[str, tuple[str | int | None, ...]]:
    """{tensor name: dims} for the graph inputs and outputs of an ONNX model; {} if the bytes cannot be walked
    (OpenVINO read the model already: the names are a refinement, never a reason to refuse it)."""
    buf = memoryview(data)
    found: dict[str, tuple[str | int | None, ...]] = {}
    try:
        for number, graph in _fields(buf, 0, len(buf)):
            if number != _GRAPH or isinstance(graph, int):
                continue
            for g_number, value_info in _fields(buf, *graph):
                if g_number in (_INPUT, _OUTPUT) and not isinstance(value_info, int):
                    name, dims = _dims(buf, value_info)
                    if dims is not None:
                        found[name] = dims
    except (ValueError, IndexError, TypeError):
        return {}
    return found
