"""The torch backend against unirt's conformance suite (unirt.testing.conformance). The suite's models are built as
ExportedProgram twins (unirt.testing.torch_models: same math, the ONNX model's weights); ONNX Runtime on the ONNX
originals is the reference. The onnx wheel's models are skipped: this backend reads PyTorch formats only.
UNIRT_TEST_TORCH_DEVICE=cuda runs the suite on the GPU (scripts/gpu_check.sh)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unirt.testing.conformance import BackendConformance
from unirt.testing.torch_models import TORCH_BUILDERS, build_torch


class TestTorchConformance(BackendConformance):
    backend = "torch"
    device = os.environ.get("UNIRT_TEST_TORCH_DEVICE", "cpu")  # scripts/gpu_check.sh runs it on cuda

    def model_file(self, name: str, directory: Path) -> Path:
        if name not in TORCH_BUILDERS:
            pytest.skip(f"no PyTorch twin of {name}: torch has no string tensors")
        return build_torch(name, directory)
