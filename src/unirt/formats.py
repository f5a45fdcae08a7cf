"""Model formats and their detection from file content (magic bytes and structure), not from the suffix alone.

Each format has one small sniff function; `detect_format` runs them all. A sniff function answers
"yes", "no", or "this is my format but it is damaged" (a `Damaged`), so a truncated ONNX file is
reported as a damaged ONNX file instead of an unknown one.

The built-in formats are `ModelFormat` members. A plugin can add a format of its own (a `PluginFormat`) with a
detector (`Backend.detect_format`), asked only when no built-in format matches (xarray's `guess_can_open`).
"""

from __future__ import annotations

import enum
import functools
import io
import mmap
import os
import struct
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .errors import ModelFormatError, ModelLoadError

__all__ = ["ModelFormat", "PluginFormat", "Format", "ModelFile", "detect_format", "open_model"]

PathLike = Union[str, "os.PathLike[str]"]


class ModelFormat(str, enum.Enum):
    """A serialized model format. The value is the short name used in messages and the CLI."""

    ONNX = "onnx"
    OPENVINO = "openvino"  # OpenVINO IR: .xml topology + .bin weights
    TFLITE = "tflite"
    NCNN = "ncnn"  # .param (text or binary) + .bin weights
    MNN = "mnn"
    TENSORRT = "tensorrt"  # serialized engine ("plan")
    TORCH_EXPORT = "torch-export"  # torch.export.save: an ExportedProgram in a .pt2 zip archive
    TORCH_AOTI = "torch-aoti"  # torch._inductor.aoti_compile_and_package: compiled AOTInductor .pt2 package
    TORCHSCRIPT = "torchscript"  # torch.jit.save: a .pt zip with code/ and constants.pkl

    def __str__(self) -> str:
        return self.value


class PluginFormat(str):
    """A model format a plugin adds (not one of unirt's `ModelFormat`s), e.g. `PluginFormat("myfmt")`.

    It behaves as a `ModelFormat` does where unirt uses one: a string equal to its short name, with `.value`.
    """

    __slots__ = ()

    def __new__(cls, name: str) -> PluginFormat:
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"a plugin format's name is a short word such as 'myfmt', got {name!r}")
        if name in ModelFormat._value2member_map_:
            raise ValueError(f"{name!r} is a built-in format: use ModelFormat({name!r})")
        return super().__new__(cls, name)

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"PluginFormat({self.value!r})"

    def __reduce__(self) -> tuple:
        return (PluginFormat, (self.value,))


#: A model format: a built-in one, or one a plugin adds.
Format = ModelFormat | PluginFormat


@dataclass(frozen=True)
class ModelFile:
    """A model found on disk (or given as bytes) and its detected format.

    `files` lists every file the model consists of, the main file first (an OpenVINO IR's .xml then .bin; an ONNX
    model's external data files, under `details["external_data"]` too).
    `data` holds the bytes when the model was given in memory; `path` is then None.
    `details` carries format facts found while sniffing (e.g. a TensorRT payload offset).
    """

    format: Format
    path: Path | None
    files: tuple[Path, ...] = ()
    data: bytes | None = field(default=None, repr=False)
    size: int = 0
    details: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"<{self.size} bytes in memory>"

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    @functools.cached_property
    def content_hash(self) -> str:
        """SHA-256 of the model's content, every file of it (`unirt.model_hash`): computed once per model, the key
        of every cache of what unirt makes from a model."""
        from .model_hash import content_hash

        return content_hash(self)

    def companion(self, suffix: str) -> Path | None:
        """The model's file ending in `suffix` (e.g. ".bin"), if it has one."""
        return next((f for f in self.files if f.suffix == suffix), None)


class Damaged(Exception):
    """Raised by a sniff function: the content is this format, but broken."""


Sniff = Callable[[memoryview, "Path | None"], "dict | None"]  # returns details when it matches

# --- ONNX: a protobuf ModelProto; walk the top-level fields and check they fit the file ---------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# ModelProto fields unirt checks: number -> (name, wire type)
_ONNX_FIELDS = {
    1: ("ir_version", _VARINT),
    2: ("producer_name", _LEN),
    3: ("producer_version", _LEN),
    4: ("domain", _LEN),
    5: ("model_version", _VARINT),
    6: ("doc_string", _LEN),
    7: ("graph", _LEN),
    8: ("opset_import", _LEN),
    14: ("metadata_props", _LEN),
    20: ("training_info", _LEN),
    25: ("functions", _LEN),
}


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    end = min(len(buf), pos + 10)
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise ValueError("bad varint")


def _sniff_onnx(buf: memoryview, path: Path | None) -> dict | None:
    # A ModelProto almost always starts with ir_version (field 1, varint): tag byte 0x08.
    looks_onnx = len(buf) > 1 and buf[0] == 0x08
    pos, seen = 0, {}
    try:
        while pos < len(buf):
            key, pos = _varint(buf, pos)
            number, wire = key >> 3, key & 7
            if number == 0 or wire not in (_VARINT, _I64, _LEN, _I32):
                raise ValueError(f"invalid protobuf tag {key} at byte {pos}")
            expected = _ONNX_FIELDS.get(number)
            if expected is not None and expected[1] != wire:
                raise ValueError(f"field {expected[0]} has the wrong wire type")
            if wire == _VARINT:
                value, pos = _varint(buf, pos)
            elif wire == _LEN:
                length, pos = _varint(buf, pos)
                if pos + length > len(buf):
                    raise ValueError(
                        f"field {expected[0] if expected else number} needs {length} bytes at byte "
                        f"{pos} but the file ends at byte {len(buf)} (truncated?)"
                    )
                value, pos = (pos, pos + length), pos + length
            else:
                width = 8 if wire == _I64 else 4
                if pos + width > len(buf):
                    raise ValueError("truncated fixed-width field")
                value, pos = None, pos + width
            seen[number] = value
    except ValueError as exc:
        if looks_onnx:
            raise Damaged(f"not a valid ONNX protobuf: {exc}") from None
        return None
    if 7 not in seen or 1 not in seen:
        if looks_onnx:
            missing = "graph" if 7 not in seen else "ir_version"
            raise Damaged(f"ONNX model has no {missing}")
        return None
    details = {"ir_version": seen[1]}
    locations = _external_locations(buf, *seen[7])
    if locations:
        details["external_data"] = _external_files(locations, path)
    return details


# ONNX tensors kept outside the .onnx file: TensorProto.data_location = EXTERNAL and external_data entries, one
# with key "location" (a path relative to the model's folder). They can sit in the graph's initializers, sparse
# initializers and node attributes (Constant values), in subgraphs too. Field numbers from onnx.proto.
_GRAPH_TENSORS = {5: "tensor", 15: "sparse"}  # GraphProto.initializer, .sparse_initializer
_ATTRIBUTE_PARTS = {5: "tensor", 10: "tensor", 6: "graph", 11: "graph", 22: "sparse", 23: "sparse"}
_EXTERNAL = 1
_LOCATION_KEY = b"\x0a\x08location"  # StringStringEntryProto.key = "location", as serialized


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, Any]]:
    """(field number, varint value or (start, end) of a length-delimited field) for each field of a message."""
    pos = start
    while pos < end:
        key = buf[pos]  # one-byte varints inline: a large graph has tens of thousands of fields
        key, pos = (key, pos + 1) if key < 0x80 else _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == _LEN:
            length = buf[pos]
            length, pos = (length, pos + 1) if length < 0x80 else _varint(buf, pos)
            if pos + length > end:
                raise ValueError("field runs past its message")
            yield number, (pos, pos + length)
            pos += length
        elif wire in (_I64, _I32):
            pos += 8 if wire == _I64 else 4
        else:
            raise ValueError(f"invalid protobuf tag {key}")
    if pos != end:
        raise ValueError("field runs past its message")


def _tensor_location(buf: memoryview, start: int, end: int) -> str | None:
    external, location = False, None
    for number, value in _fields(buf, start, end):
        if number == 14:  # data_location
            external = value == _EXTERNAL
        elif number == 13:  # external_data: StringStringEntryProto {key = 1, value = 2}
            entry = dict(_fields(buf, *value))
            if 1 in entry and bytes(buf[slice(*entry[1])]) == b"location" and 2 in entry:
                location = bytes(buf[slice(*entry[2])]).decode("utf-8", "replace")
    return location if external else None


def _external_locations(buf: memoryview, start: int, end: int) -> list[str]:
    """The external-data locations a GraphProto's tensors name, in order, each once. A nested message too
    damaged to walk is left for the engine to report: this only lists files."""
    found: dict[str, None] = {}

    def tensor(kind: str, span: tuple[int, int]) -> None:
        if kind == "graph":
            graph(span)
        elif kind == "sparse":  # SparseTensorProto.values = 1, .indices = 2
            for number, value in _fields(buf, *span):
                if number in (1, 2):
                    tensor("tensor", value)
        else:
            location = _tensor_location(buf, *span)
            if location is not None:
                found.setdefault(location)

    def graph(span: tuple[int, int]) -> None:
        nodes = []
        for number, value in _fields(buf, *span):
            if number in _GRAPH_TENSORS:
                tensor(_GRAPH_TENSORS[number], value)
            elif number == 1:
                nodes.append(value)
        # Nodes are written one after another: one scan of their bytes says whether any holds an external tensor.
        if not nodes or _LOCATION_KEY not in bytes(buf[nodes[0][0] : nodes[-1][1]]):
            return
        for node in nodes:
            for attr_field, attr in _fields(buf, *node):
                if attr_field == 5:  # NodeProto.attribute
                    for part, part_span in _fields(buf, *attr):
                        if part in _ATTRIBUTE_PARTS:
                            tensor(_ATTRIBUTE_PARTS[part], part_span)

    try:
        graph((start, end))
    except ValueError:
        pass
    return list(found)


def _external_files(locations: list[str], path: Path | None) -> tuple[Path, ...]:
    if path is None:
        raise Damaged(
            f"its weights are in external data files ({', '.join(locations)}): load it from its .onnx "
            "path so they can be found"
        )
    folder = path.parent
    files = []
    for location in locations:
        rel = Path(location)
        if rel.is_absolute() or ".." in rel.parts or not location:
            raise Damaged(f"external data location {location!r} is not a relative path inside the model's folder")
        file = folder / rel
        if not file.is_file():
            raise Damaged(f"its external data file {file} is missing (the model names {location!r})")
        files.append(file)
    return tuple(files)


# --- FlatBuffers (TFLite, MNN): check the root table and its vtable lie inside the file -------------------


def _u16(buf: memoryview, pos: int) -> int:
    return struct.unpack_from("<H", buf, pos)[0]


def _u32(buf: memoryview, pos: int) -> int:
    return struct.unpack_from("<I", buf, pos)[0]


def _flatbuffer_fields(buf: memoryview) -> tuple[int, list[int]]:
    """The root table's position and its vtable's field offsets; ValueError if they do not fit the file."""
    size = len(buf)
    if size < 12:
        raise ValueError(f"file is {size} bytes, too small for a FlatBuffer")
    root = _u32(buf, 0)
    if not 4 <= root <= size - 4:
        raise ValueError(f"root table offset {root} is outside the file ({size} bytes)")
    vtable = root - struct.unpack_from("<i", buf, root)[0]
    if not 0 <= vtable <= size - 4:
        raise ValueError(f"vtable offset {vtable} is outside the file")
    vt_size, obj_size = _u16(buf, vtable), _u16(buf, vtable + 2)
    if vt_size < 4 or vt_size % 2 or vtable + vt_size > size or root + obj_size > size:
        raise ValueError("root vtable is malformed")
    return root, [_u16(buf, vtable + 4 + 2 * i) for i in range((vt_size - 4) // 2)]


def _flatbuffer_vector(buf: memoryview, root: int, fields: list[int], index: int) -> int | None:
    """Length of the vector in field `index` of the root table, None if absent; ValueError if out of bounds."""
    if index >= len(fields) or fields[index] == 0:
        return None
    slot = root + fields[index]
    if slot + 4 > len(buf):
        raise ValueError(f"field {index} lies outside the file")
    vec = slot + _u32(buf, slot)
    if vec + 4 > len(buf):
        raise ValueError(f"vector in field {index} starts outside the file")
    count = _u32(buf, vec)
    if vec + 4 + 4 * count > len(buf):
        raise ValueError(f"vector in field {index} ({count} entries) runs past the end of the file (truncated?)")
    return count


def _sniff_tflite(buf: memoryview, path: Path | None) -> dict | None:
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        return None
    try:
        root, fields = _flatbuffer_fields(buf)
        subgraphs = _flatbuffer_vector(buf, root, fields, 2)  # Model.subgraphs
        _flatbuffer_vector(buf, root, fields, 4)  # Model.buffers
    except ValueError as exc:
        raise Damaged(f"TFLite flatbuffer is malformed: {exc}") from None
    if not subgraphs:
        raise Damaged("TFLite model has no subgraphs")
    return {"subgraphs": subgraphs}


def _sniff_mnn(buf: memoryview, path: Path | None) -> dict | None:
    # MNN's Net has no file identifier: require its op list (field 3) and tensor names (field 7).
    claimed = path is not None and path.suffix.lower() == ".mnn"
    if len(buf) >= 8 and bytes(buf[4:8]) == b"TFL3":
        return None
    try:
        root, fields = _flatbuffer_fields(buf)
        ops = _flatbuffer_vector(buf, root, fields, 3)
        names = _flatbuffer_vector(buf, root, fields, 7)
    except (ValueError, struct.error) as exc:
        if claimed:
            raise Damaged(f"MNN flatbuffer is malformed: {exc}") from None
        return None
    if not ops or names is None or len(fields) > 64:
        if claimed:
            raise Damaged("MNN model has no operators")
        return None
    return {"ops": ops}


# --- Text and header formats -------------------------------------------------------------------------------


def _sniff_openvino(buf: memoryview, path: Path | None) -> dict | None:
    head = bytes(buf[:4096]).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not (head.startswith(b"<?xml") or head.startswith(b"<net")) or b"<net" not in head:
        return None
    if path is None:
        raise Damaged("an OpenVINO IR must be loaded from its .xml path so its .bin weights can be found")
    weights = path.with_suffix(".bin")
    if not weights.is_file() and b'type="Const"' in bytes(buf):
        raise Damaged(f"OpenVINO IR weights file {weights} is missing")
    return {"weights": weights if weights.is_file() else None}


_NCNN_MAGIC = 7767517


def _sniff_ncnn(buf: memoryview, path: Path | None) -> dict | None:
    text_magic = bytes(buf[:16]).split(b"\n", 1)[0].strip() == str(_NCNN_MAGIC).encode()
    binary_magic = len(buf) >= 4 and struct.unpack_from("<i", buf, 0)[0] == _NCNN_MAGIC
    if not (text_magic or binary_magic):
        return None
    if path is None:
        raise Damaged("an ncnn model must be loaded from its .param path so its .bin weights can be found")
    weights = path.with_suffix(".bin") if path.suffix != ".bin" else None
    if path.name.endswith(".param.bin"):
        weights = path.with_name(path.name[: -len(".param.bin")] + ".bin")
    return {
        "param_format": "text" if text_magic else "binary",
        "weights": weights if weights is not None and weights.is_file() else None,
    }


_TRT_MAGICS = (b"ftrt", b"ptrt")


def _sniff_tensorrt(buf: memoryview, path: Path | None) -> dict | None:
    if bytes(buf[:4]) in _TRT_MAGICS:
        return {"payload_offset": 0}
    # Ultralytics wraps plans as [u32 metadata length][JSON metadata][plan].
    if len(buf) >= 8 and buf[4:5] == b"{":
        start = 4 + _u32(buf, 0)
        if start + 4 <= len(buf) and bytes(buf[start : start + 4]) in _TRT_MAGICS:
            return {"payload_offset": start}
    if path is not None and path.suffix.lower() in (".engine", ".plan", ".trt"):
        raise Damaged("no TensorRT plan header (magic tag 'ftrt') found")
    return None


# --- PyTorch: zip archives told apart by their member names; pickles refused -------------------------------

_HOW_TO_EXPORT = (
    "unirt runs no pickled Python objects (loading one runs arbitrary code, and a state_dict has no "
    "graph to run). Export the model instead: torch.export.save(torch.export.export(model, "
    "example_args), 'model.pt2') (preferred), or torch.jit.script(model).save('model.pt')"
)
# Pickle protocol 2-5 header, then an opcode a pickle starts with (torch's legacy format: LONG1 magic number)
_PICKLE_FIRST_OPS = frozenset(b"\x8a\x95}]c(K\x8c\x80X\x93")


def _zip_members(buf: memoryview, path: Path | None) -> list[str] | None:
    """The member names of a zip file (reading only its central directory), None if it is not one."""
    try:
        with zipfile.ZipFile(path if path is not None else io.BytesIO(buf)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def _sniff_torch(buf: memoryview, path: Path | None) -> dict | None:
    """ExportedProgram archive, AOTInductor package or TorchScript zip; a torch.save pickle is refused."""
    where = str(path) if path is not None else "model bytes"
    if len(buf) > 2 and buf[0] == 0x80 and 2 <= buf[1] <= 5 and buf[2] in _PICKLE_FIRST_OPS:
        raise ModelFormatError(f"{where}: a Python pickle (torch.save of a state_dict or module?). {_HOW_TO_EXPORT}")
    if bytes(buf[:4]) != b"PK\x03\x04":
        return None
    names = _zip_members(buf, path)
    if names is None:
        return None
    tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if any(t.startswith("data/aotinductor/") for t in tails):
        return {"archive": "aoti"}
    if "serialized_exported_program.json" in {t.rsplit("/", 1)[-1] for t in tails} or (
        "archive_format" in tails and any(t.startswith("models/") and t.endswith(".json") for t in tails)
    ):
        return {"archive": "export"}
    if "constants.pkl" in tails and any(t.startswith("code/") for t in tails):
        return {"archive": "torchscript"}
    if "data.pkl" in tails:
        raise ModelFormatError(
            f"{where}: a zip of a pickled Python object (torch.save of a state_dict or module?). {_HOW_TO_EXPORT}"
        )
    if "archive_format" in tails:
        raise Damaged(
            "a PyTorch .pt2 archive with neither an exported program (models/*.json) nor an "
            "AOTInductor model (data/aotinductor/)"
        )
    return None


_TORCH_FORMATS = {
    "export": ModelFormat.TORCH_EXPORT,
    "aoti": ModelFormat.TORCH_AOTI,
    "torchscript": ModelFormat.TORCHSCRIPT,
}


# Order matters only for speed and for formats whose checks are weaker (MNN has no magic: keep it last).
_SNIFFERS: tuple[tuple[ModelFormat, Sniff], ...] = (
    (ModelFormat.TFLITE, _sniff_tflite),
    (ModelFormat.TENSORRT, _sniff_tensorrt),
    (ModelFormat.NCNN, _sniff_ncnn),
    (ModelFormat.OPENVINO, _sniff_openvino),
    (ModelFormat.ONNX, _sniff_onnx),
    (ModelFormat.TORCH_EXPORT, _sniff_torch),  # one sniffer for the three torch formats (details["archive"])
    (ModelFormat.MNN, _sniff_mnn),
)

_SUFFIXES = {
    ".onnx": ModelFormat.ONNX,
    ".xml": ModelFormat.OPENVINO,
    ".tflite": ModelFormat.TFLITE,
    ".lite": ModelFormat.TFLITE,
    ".param": ModelFormat.NCNN,
    ".mnn": ModelFormat.MNN,
    ".engine": ModelFormat.TENSORRT,
    ".plan": ModelFormat.TENSORRT,
    ".trt": ModelFormat.TENSORRT,
    ".pt2": ModelFormat.TORCH_EXPORT,
}


def detect_format(
    buf: bytes | memoryview, path: Path | None = None, detectors: Sequence[Any] = ()
) -> tuple[Format, dict]:
    """Detect a model's format from its content. Raises ModelLoadError (damaged) or ModelFormatError (unknown).

    Built-in formats first; then the formats plugins add: `detectors` (Backend objects, e.g. one given to
    `Session(backend=...)`), then every installed plugin's `Backend.detect_format`."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    where = str(path) if path is not None else "model bytes"
    if len(view) == 0:
        raise ModelLoadError(f"{where}: the file is empty")
    for fmt, sniff in _SNIFFERS:
        try:
            details = sniff(view, path)
        except Damaged as exc:
            raise ModelLoadError(f"{where}: detected format {fmt}, but {exc}") from None
        except (struct.error, IndexError) as exc:  # a sniffer's bounds check missed a case
            if path is not None and _SUFFIXES.get(path.suffix.lower()) is fmt:
                raise ModelLoadError(f"{where}: detected format {fmt}, but its structure is broken ({exc})") from None
            continue
        if details is not None:
            return _TORCH_FORMATS.get(details.get("archive"), fmt), details
    hinted = _SUFFIXES.get(path.suffix.lower()) if path is not None else None
    if hinted is None:
        found = _plugin_format(view, path, detectors)
        if found is not None:
            return found, {}
    if hinted is not None:
        raise ModelLoadError(
            f"{where}: the suffix says {hinted}, but the content is not a valid {hinted} model "
            f"(first bytes: {bytes(view[:8])!r})"
        )
    from . import registry

    known = ", ".join([f.value for f in ModelFormat] + sorted(f.value for f in registry.plugin_formats()))
    raise ModelFormatError(
        f"{where}: unrecognised model format (first bytes: {bytes(view[:8])!r}); unirt reads {known}"
    )


def _plugin_format(view: memoryview, path: Path | None, detectors: Sequence[Any]) -> PluginFormat | None:
    """The first plugin format whose detector claims the content (a plugin's ModelLoadError: damaged)."""
    from . import registry  # registry imports this module

    where = str(path) if path is not None else "model bytes"
    for backend in (*detectors, *registry.format_detectors()):
        try:
            fmt = backend.detect_format(view, path)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{where}: {exc}") from None
        except Exception as exc:  # a plugin's bug skips that plugin's formats, not detection
            registry.log.warning("backend %r: detect_format failed: %s: %s", backend.name, type(exc).__name__, exc)
            continue
        if fmt is None:
            continue
        if not isinstance(fmt, PluginFormat) or fmt not in backend.formats:
            registry.log.warning(
                "backend %r: detect_format returned %r, not a PluginFormat in its formats; ignored", backend.name, fmt
            )
            continue
        return fmt
    return None


def _model_files(fmt: Format, path: Path, details: dict) -> tuple[Path, ...]:
    weights = details.get("weights")
    return (path, weights) if weights is not None else (path, *details.get("external_data", ()))


def open_model(model: PathLike | bytes | ModelFile, detectors: Sequence[Any] = ()) -> ModelFile:
    """Resolve a path (or in-memory bytes) to a `ModelFile`, reading only what detection needs.

    `detectors`: Backend objects whose `detect_format` is asked too (before the installed plugins')."""
    if isinstance(model, ModelFile):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        fmt, details = detect_format(data, None, detectors)
        return ModelFile(format=fmt, path=None, data=data, size=len(data), details=details)
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(f"expected a model path or bytes, got {type(model).__name__}")
    path = Path(model)
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected a model file")
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise ModelLoadError(f"{path}: the file is empty")
            # Map instead of reading: sniffing a multi-GB model touches only a few pages.
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    fmt, details = detect_format(view, path, detectors)
                finally:
                    view.release()
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    return ModelFile(format=fmt, path=path, files=_model_files(fmt, path, details), size=size, details=details)
