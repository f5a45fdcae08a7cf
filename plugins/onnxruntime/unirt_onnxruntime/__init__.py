"""ONNX Runtime backend for unirt (registered as entry point `onnxruntime` in group `unirt.backends`)."""

from .backend import OnnxRuntimeBackend

__all__ = ["OnnxRuntimeBackend"]
