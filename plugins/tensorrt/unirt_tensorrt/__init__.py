"""TensorRT backend for unirt (registered as entry point `tensorrt` in group `unirt.backends`).

The engine (`tensorrt`, `cuda-python`) is the extra `unirt-tensorrt[engine]` (`pip install './plugins/tensorrt[engine]'`
from unirt's source checkout); everything that needs no GPU (profiles, dtypes, cache keys, error mapping) is importable
without it.
"""

from .backend import TensorRTBackend

__all__ = ["TensorRTBackend"]
