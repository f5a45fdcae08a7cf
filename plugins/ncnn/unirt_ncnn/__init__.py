"""ncnn backend for unirt (registered as entry point `ncnn` in group `unirt.backends`)."""

from .backend import NcnnBackend

__all__ = ["NcnnBackend"]
