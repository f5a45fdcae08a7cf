"""Reading and checking an ncnn text .param before ncnn sees it.

ncnn trusts its .param: a layer reading a blob nobody wrote, more blobs than the header declares, or a bottom count
that runs into the next layer's tokens make `extract` read out of bounds. `parse_param` checks all of that and
returns the graph (layers, inputs, outputs); any damage is a ValueError naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["MAGIC", "Layer", "ParamGraph", "parse_param", "layer_types"]

MAGIC = 7767517
_MAX_LAYERS = 1_000_000
_MAX_IO = 10_000
_NAME = re.compile(r"^[^\s=]+$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)$", re.I)
_ARRAY_KEY_BASE = -23300


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, object] = field(default_factory=dict)
    line: int = 0


@dataclass
class ParamGraph:
    layers: list[Layer]
    blob_count: int
    inputs: list[Layer]  # the Input layers, in file order
    outputs: list[str]  # blobs no layer reads, in the order they are written

    def input_dims(self, layer: Layer) -> tuple[int, ...] | None:
        """An Input layer's declared shape as numpy dims (c, d, h, w trimmed), or None when it declares none."""
        w, h, d, c = (int(layer.params.get(k, 0)) for k in (0, 1, 11, 2))  # type: ignore[call-overload]
        dims = [v for v in (c, d, h, w) if v > 0]
        return tuple(dims) if dims else None

    def reader_dims(self, layer: Layer) -> tuple[int | None, ...] | None:
        """An Input layer that declares no shape: its per-sample dims as far as the layer reading it fixes them
        (a Convolution's input channels, an InnerProduct's inner size, from their weight counts), with None for
        what stays open (H, W). None when no single reader of a known kind tells."""
        blob = layer.tops[0]
        readers = [r for r in self.layers if blob in r.bottoms]
        for reader in readers:
            p = reader.params

            def num(key: int, default: int = 0, p: dict = p) -> int:
                value = p.get(key, default)
                return int(value) if isinstance(value, (int, float)) else default

            outputs, weights = num(0), num(6)
            if reader.type in ("Convolution", "ConvolutionDepthWise", "Convolution1D"):
                kw = num(1)
                kh = 1 if reader.type == "Convolution1D" else num(11, kw)
                group = num(7, 1) if reader.type == "ConvolutionDepthWise" else 1
                if outputs > 0 and kw > 0 and kh > 0 and weights > 0 and (weights * group) % (outputs * kw * kh) == 0:
                    channels = weights * group // (outputs * kw * kh)
                    return (channels, None) if reader.type == "Convolution1D" else (channels, None, None)
            elif reader.type == "InnerProduct":
                weights = num(2)
                if outputs > 0 and weights > 0 and weights % outputs == 0 and len(readers) == 1:
                    return (weights // outputs,)
        return None


def _value(token: str, line: int) -> object:
    if token.startswith('"'):
        if not token.endswith('"') or len(token) < 2:
            raise ValueError(f"line {line}: unterminated string value {token!r}")
        return token[1:-1]
    if _INT.match(token):
        return int(token)
    if _FLOAT.match(token):
        return float(token)
    raise ValueError(f"line {line}: {token!r} is not a number")


def _params(tokens: list[str], line: int) -> dict[int, object]:
    params: dict[int, object] = {}
    for token in tokens:
        key_text, sep, value = token.partition("=")
        if not sep or not _INT.match(key_text):
            raise ValueError(f"line {line}: parameter {token!r} is not key=value")
        key = int(key_text)
        if key <= _ARRAY_KEY_BASE:
            items = value.split(",")
            if not items or not _INT.match(items[0]) or int(items[0]) != len(items) - 1:
                raise ValueError(f"line {line}: array parameter {token!r}: its count does not match its items")
            params[_ARRAY_KEY_BASE - key] = [_value(v, line) for v in items[1:]]
        elif not 0 <= key < 32:
            raise ValueError(f"line {line}: parameter id {key} is outside 0..31")
        else:
            params[key] = _value(value, line)
    return params


def _tokens(text: str) -> list[str]:
    """Split on whitespace, keeping quoted string values (which may contain spaces) whole."""
    return re.findall(r'[^\s"]*"[^"]*"|[^\s"]+', text)


def parse_param(data: bytes, layer_exists: Callable[[str], bool]) -> ParamGraph:
    """Parse and check a text .param. `layer_exists(type)` says whether this ncnn build has a layer type."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the .param is not text (byte {exc.start} is not UTF-8)") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        raise ValueError(f"the first line is not ncnn's magic number {MAGIC}")
    if len(lines) < 2:
        raise ValueError("no layer/blob count line after the magic number")
    counts = lines[1].split()
    if len(counts) != 2 or not all(_INT.match(c) for c in counts):
        raise ValueError(f"line 2 must be '<layer count> <blob count>', got {lines[1].strip()!r}")
    layer_count, blob_count = int(counts[0]), int(counts[1])
    if not 0 < layer_count <= _MAX_LAYERS or not 0 < blob_count <= _MAX_LAYERS * 4:
        raise ValueError(f"implausible counts: {layer_count} layers, {blob_count} blobs")
    if len(lines) - 2 != layer_count:
        raise ValueError(
            f"the header declares {layer_count} layers but the file has {len(lines) - 2} (truncated or edited?)"
        )
    layers: list[Layer] = []
    written: dict[str, int] = {}
    read: set[str] = set()
    known: dict[str, bool] = {}
    for number, raw in enumerate(lines[2:], start=3):
        tokens = _tokens(raw)
        if len(tokens) < 4 or not _INT.match(tokens[2]) or not _INT.match(tokens[3]):
            raise ValueError(f"line {number}: expected '<type> <name> <bottom count> <top count> ...'")
        kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        if not 0 <= n_in <= _MAX_IO or not 0 <= n_out <= _MAX_IO or len(tokens) < 4 + n_in + n_out:
            raise ValueError(
                f"line {number}: layer {name!r} declares {n_in} inputs and {n_out} outputs, "
                f"but lists {len(tokens) - 4} names and parameters"
            )
        if kind not in known:
            known[kind] = bool(_NAME.match(kind)) and layer_exists(kind)
        if not known[kind]:
            raise ValueError(f"line {number}: unknown layer type {kind!r}")
        bottoms, tops = tokens[4 : 4 + n_in], tokens[4 + n_in : 4 + n_in + n_out]
        for blob in bottoms + tops:
            if not _NAME.match(blob):
                raise ValueError(f"line {number}: {blob!r} is not a blob name")
        for blob in bottoms:
            if blob not in written:
                raise ValueError(f"line {number}: layer {name!r} reads blob {blob!r}, which no earlier layer writes")
            read.add(blob)
        for blob in tops:
            if blob in written:
                raise ValueError(f"line {number}: blob {blob!r} is written twice (lines {written[blob]} and {number})")
            written[blob] = number
        layers.append(Layer(kind, name, bottoms, tops, _params(tokens[4 + n_in + n_out :], number), number))
    if len(written) != blob_count:
        raise ValueError(f"the header declares {blob_count} blobs but the layers write {len(written)}")
    inputs = [layer for layer in layers if layer.type == "Input"]
    outputs = [blob for blob in written if blob not in read]
    if not inputs or not outputs:
        raise ValueError("the graph has no Input layer" if not inputs else "the graph has no output blob")
    return ParamGraph(layers, blob_count, inputs, outputs)


def layer_types(text: str) -> list[tuple[str, int]]:
    """(layer type, line number) of every layer line of a text .param, unchecked."""
    lines = text.splitlines()
    return [(tokens[0], number) for number, line in enumerate(lines[2:], start=3) if (tokens := line.split())]
