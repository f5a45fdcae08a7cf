"""TensorRT against unirt's conformance suite (unirt.testing.conformance), at fp32 on the GPU: every ONNX model is
built into an engine on load (cached in the engine cache); ONNX Runtime is the reference. Skipped, with the exact
reason, where TensorRT or a CUDA GPU is missing (test_availability.py checks that reason).

Dynamic batch dims build for 1..max_batch (8 here, as the suite runs batches up to 7); the suite's model with
dynamic spatial dims gets a shape range, since TensorRT builds kernels for bounded shapes only. Engine builds take
seconds each, so this runs a representative subset of the onnx wheel's cases (ops TensorRT's ONNX parser supports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from unirt.testing.conformance import BackendConformance
from unirt_tensorrt.backend import unavailable_reason

REASON, _ = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"TensorRT cannot run here: {REASON}")

MAX_BATCH = 8
# unknown_dims: x float32[?, 3, H, W]; the suite runs it at H x W up to 6 x 9 (and 1 x 9)
_SPATIAL = {"x": {"min": [1, 3, 1, 1], "opt": [1, 3, 4, 5], "max": [MAX_BATCH, 3, 16, 16]}}


class TestTensorRTConformance(BackendConformance):
    backend = "tensorrt"
    device = "cuda"
    session_kwargs = {"backend_options": {"max_batch": MAX_BATCH}}
    refuses = {"strings": "tensorrt could not parse this onnx model"}  # TensorRT has no string tensors
    wheel_subset = (
        "simple/test_single_relu_model",
        "simple/test_sign_model",
        "pytorch-converted/test_AvgPool2d",
        "pytorch-converted/test_Conv1d",
        "pytorch-converted/test_Conv2d",
        "pytorch-converted/test_Conv2d_depthwise",
        "pytorch-converted/test_ConvTranspose2d",
        "pytorch-converted/test_ConstantPad2d",
        "pytorch-converted/test_ELU",
        "pytorch-converted/test_LogSoftmax",
        "pytorch-converted/test_MaxPool1d",
        "pytorch-converted/test_PixelShuffle",
        "pytorch-converted/test_ReflectionPad2d",
        "pytorch-converted/test_Sigmoid",
        "pytorch-converted/test_Softmax",
        "pytorch-converted/test_Tanh",
        "pytorch-operator/test_operator_clip",
        "pytorch-operator/test_operator_conv",
    )

    def open(self, path: Path, **kwargs: Any) -> Any:
        if Path(path).stem == "unknown_dims" and "backend_options" not in kwargs:
            kwargs["backend_options"] = {"max_batch": MAX_BATCH, "shapes": _SPATIAL}
        return super().open(path, **kwargs)
