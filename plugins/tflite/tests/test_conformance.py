"""TFLite/LiteRT against unirt's conformance suite (unirt.testing.conformance). The suite's models are built as
TFLite twins (unirt.testing.tflite: same math, same weights); ONNX Runtime on the ONNX originals is the reference.
The onnx wheel's models are skipped: this backend reads .tflite only (conversion is unirt's conversion layer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unirt.testing.conformance import BackendConformance
from unirt.testing.tflite import TFLITE_BUILDERS, build_tflite

_NO_TWIN = {
    "strings": "TFLite's string tensors have no op that passes them through",
    "byte_transformer": "its string-free twin would need TFLite's embedding and attention ops, not built here",
    "batchnorm_default_epsilon": "it checks an ONNX converter fixup (BatchNormalization's default epsilon)",
    "softmax_coerced": "it checks an ONNX converter fixup (opset < 13 Softmax axis coercion)",
}


class TestTFLiteConformance(BackendConformance):
    backend = "tflite"

    def model_file(self, name: str, directory: Path) -> Path:
        if name not in TFLITE_BUILDERS:
            pytest.skip(f"no TFLite twin of {name}: {_NO_TWIN.get(name, 'not built by unirt.testing.tflite')}")
        return build_tflite(name, directory)
