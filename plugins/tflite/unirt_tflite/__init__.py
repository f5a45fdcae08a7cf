"""TFLite / LiteRT backend for unirt (registered as entry point `tflite` in group `unirt.backends`)."""

from .backend import TFLiteBackend

__all__ = ["TFLiteBackend"]
