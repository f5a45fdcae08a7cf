"""Plugins with the mistakes a third party makes, one per backend: each must become one unusable entry naming its
mistake, never break listing or auto-selection for the others."""

from __future__ import annotations

from unirt import Availability, Backend, LoadOptions, ModelFile, ModelFormat, UnsupportedOptionError


class _Base(Backend):
    def probe(self) -> Availability:
        return Availability(True, version="0.1", devices=("cpu",))

    def load(self, model: ModelFile, options: LoadOptions):
        raise UnsupportedOptionError(f"{self.name} is a malformed test plugin and loads nothing")


class NoFormatsBackend(_Base):
    """Forgot `formats`."""

    name = "noformats"


class StringFormatsBackend(_Base):
    """`formats` holds strings, not ModelFormat members."""

    name = "strformats"
    formats = frozenset({"onnx"})  # type: ignore[arg-type]


class RaisingAcceptsBackend(_Base):
    """accepts() raises on every model."""

    name = "raisingaccepts"
    formats = frozenset({ModelFormat.ONNX})

    def accepts(self, model: ModelFile) -> bool:
        raise RuntimeError("accepts() exploded")


class StringDevicesBackend(_Base):
    """probe() gives devices as one string instead of a tuple of them."""

    name = "strdevices"
    formats = frozenset({ModelFormat.ONNX})

    def probe(self) -> Availability:
        return Availability(True, version="0.1", devices="cpu")  # type: ignore[arg-type]
