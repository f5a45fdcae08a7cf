"""PyTorch backend for unirt (registered as entry point `torch` in group `unirt.backends`)."""

from .backend import TorchBackend

__all__ = ["TorchBackend"]
