"""MNN backend for unirt (registered as entry point `mnn` in group `unirt.backends`)."""

from .backend import MnnBackend

__all__ = ["MnnBackend"]
