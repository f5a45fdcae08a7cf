"""OpenVINO backend for unirt (registered as entry point `openvino` in group `unirt.backends`)."""

from .backend import OpenVinoBackend

__all__ = ["OpenVinoBackend"]
