"""TensorRT backend for unirt (registered as entry point `tensorrt` in group `unirt.backends`).

The engine (`tensorrt`, `cuda-python`) is the extra `unirt-tensorrt[engine]`; everything that needs no GPU
(profiles, dtypes, cache keys, error mapping) is importable without it.
"""

from .backend import TensorRTBackend

__all__ = ["TensorRTBackend"]
