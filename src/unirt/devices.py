"""Device names with one meaning on every backend: "auto", "cpu", "cuda", "cuda:1", "gpu", "gpu:0", "npu"."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UnsupportedOptionError

__all__ = ["Device", "DEVICE_KINDS"]

DEVICE_KINDS = ("auto", "cpu", "cuda", "gpu", "npu")
_GPU_KINDS = ("cuda", "gpu", "rocm")  # what the generic "gpu" matches


@dataclass(frozen=True)
class Device:
    """A requested or offered device: a kind and an optional index."""

    kind: str
    index: int | None = None

    @classmethod
    def parse(cls, spec: str | Device | None) -> Device:
        if spec is None:
            return cls("auto")
        if isinstance(spec, Device):
            return spec
        if not isinstance(spec, str):
            raise UnsupportedOptionError(
                f"device must be a string such as 'cpu' or 'cuda:0', got {type(spec).__name__}"
            )
        text = spec.strip().lower()
        kind, sep, index_text = text.partition(":")
        index: int | None = None
        if sep:
            if not index_text.isdigit():
                raise UnsupportedOptionError(f"device {spec!r}: the index after ':' must be a number, e.g. 'cuda:1'")
            index = int(index_text)
        if kind not in DEVICE_KINDS + ("rocm",):
            raise UnsupportedOptionError(
                f"device {spec!r} is not known; use one of {', '.join(DEVICE_KINDS)} "
                "(optionally with an index, e.g. 'cuda:1')"
            )
        if kind in ("auto", "cpu") and index not in (None, 0):
            raise UnsupportedOptionError(f"device {spec!r}: '{kind}' takes no index")
        return cls(kind, None if kind in ("auto", "cpu") else index)

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    def matches(self, offered: str | Device) -> bool:
        """Whether an offered device (e.g. a backend's "cuda:0") satisfies this request. "auto" takes anything
        but an NPU: NPUs compute in reduced precision and are used only when asked for (device="npu")."""
        other = Device.parse(offered) if isinstance(offered, str) else offered
        if self.kind == "auto":
            return other.kind != "npu"
        if self.kind == "gpu":
            kind_ok = other.kind in _GPU_KINDS
        else:
            kind_ok = other.kind == self.kind
        return kind_ok and (self.index is None or (other.index or 0) == self.index)

    def pick(self, offered: Iterable[str]) -> str | None:
        """The first offered device that satisfies this request (offers come most capable first)."""
        return next((d for d in offered if self.matches(d)), None)
