"""scripts/support_matrix.py writes the matrix from real runs (a small subset here; docs/ holds the full one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import unirt

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "support_matrix.py"


def test_support_matrix_from_real_runs(tmp_path):
    backends = [b.name for b in unirt.backends() if b.available and b.name in ("onnxruntime", "openvino", "tflite")]
    converting = [b for b in unirt.backends()  # ncnn, MNN: convert ONNX on load
                  if b.available and "onnx" in b.converts_from and "onnx" not in b.formats]
    backends += [b.name for b in converting]
    out = tmp_path / "matrix.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--only", "built", "--output", str(out),
                           "--backends", ",".join(backends)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "Do not edit by hand" in text
    assert "| unirt.testing.models | dynamic_mlp | " + " | ".join(["pass"] * len(backends)) + " |" in text
    for name in backends:
        assert f"| {name} | " in text
    for b in converting:  # the matrix runs them (converting each model), it does not call them "not read"
        assert f"| {b.name} | {b.engine_version} | {b.formats[0]}, onnx (converted) | available | " in text
        row = next(line for line in text.splitlines() if line.startswith("| unirt.testing.models | strings | "))
        assert "refused: ConversionError: input 's' is a object tensor" in row
