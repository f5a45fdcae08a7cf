"""Test helpers shared by unirt's tests and every plugin's tests (a third party's too).

- `models`: small models built with onnx.helper (static/dynamic dims, several inputs, ints, scalars, strings);
- `cases`: the real models inside the onnx wheel with their reference outputs;
- `random_weights`: random-weight copies of the wheel's light CNNs (their own weights are constant);
- `tflite`: TFLite twins of the built models, built with LiteRT's FlatBuffers schema (needs ai-edge-litert);
- `conformance`: the pytest suite every backend plugin runs against itself (import it from a test module).
- `fuzz`: damaged copies of a model, loaded in child processes: a plugin's malformed-file test in two lines.

onnx is needed to use this package; `import unirt` never imports it.
"""

from .cases import ConformanceCase, assert_outputs_close, conformance_cases
from .models import (
    MODEL_BUILDERS,
    batched_cnn,
    batchnorm_default_epsilon,
    build,
    byte_transformer,
    dynamic_mlp,
    int_ops,
    matmul_relu,
    multi_io,
    softmax_coerced,
    string_concat,
    unknown_dims,
    with_external_data,
)

__all__ = [
    "ConformanceCase",
    "assert_outputs_close",
    "conformance_cases",
    "MODEL_BUILDERS",
    "build",
    "dynamic_mlp",
    "int_ops",
    "matmul_relu",
    "multi_io",
    "string_concat",
    "unknown_dims",
    "byte_transformer",
    "batchnorm_default_epsilon",
    "softmax_coerced",
    "batched_cnn",
    "with_external_data",
]
