"""unirt's deployment tools, as a Python API the `unirt` CLI only parses for and prints.

- `info(model, shapes)`: inputs/outputs, opsets, parameters, FLOPs, weight and activation memory;
- `bench(model, backends=...)`: load time, first-run and steady latency percentiles, throughput, memory;
- `compare(model, backends=...)`: the same inputs on several backends, per-output error metrics, pass/fail;
- `optimize(model, out)`: onnxslim's graph simplification, outputs checked unchanged;
- `quantize(model, out, mode="fp16"|"int8")`: ONNX Runtime's quantization, accuracy and latency deltas.

Each tool is its own module; their extra dependencies come with `pip install '.[tools]'` (from unirt's source
checkout) and are imported only when a tool needs them (a missing one raises MissingDependencyError naming the extra).
"""

from __future__ import annotations

from ._deps import MissingDependencyError
from .bench import BenchReport, BenchResult, bench
from .compare import CompareReport, compare, compare_models
from .info import ModelInfo, info
from .optimize import OptimizeReport, optimize
from .quantize import QuantizeReport, quantize
from .shapes import parse_shapes, resolve_shapes

# The functions share their modules' names (unirt.tools.info is the function; its module is unirt.tools.info's
# __module__). These imports run after each submodule is bound, so the function wins.
__all__ = [
    "MissingDependencyError",
    "parse_shapes",
    "resolve_shapes",
    "info",
    "ModelInfo",
    "compare",
    "compare_models",
    "CompareReport",
    "bench",
    "BenchReport",
    "BenchResult",
    "optimize",
    "OptimizeReport",
    "quantize",
    "QuantizeReport",
]
