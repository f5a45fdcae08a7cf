"""scripts/support_matrix.py writes the matrix from real runs (a small subset here; docs/ holds the full one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import unirt

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "support_matrix.py"


def test_support_matrix_from_real_runs(tmp_path):
    backends = [b.name for b in unirt.backends() if b.available and b.name in ("onnxruntime", "openvino", "tflite")]
    converting = [
        b
        for b in unirt.backends()  # ncnn, MNN: convert ONNX on load
        if b.available and "onnx" in b.converts_from and "onnx" not in b.formats
    ]
    backends += [b.name for b in converting]
    out = tmp_path / "matrix.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "built", "--output", str(out), "--backends", ",".join(backends)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
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


def test_support_matrix_precision_axis(tmp_path):
    """--precision-axis: one row per (model, backend, reduced precision), measured against that backend's fp32, or
    the refusal with its reason."""
    backends = [b.name for b in unirt.backends() if b.available and b.name in ("onnxruntime", "mnn")]
    out = tmp_path / "matrix.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--only",
            "none",
            "--output",
            str(out),
            "--backends",
            ",".join(backends),
            "--precision-axis",
            "--precision-models",
            "mobilenet_like_224",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "## Reduced precision" in text
    rows = [line for line in text.splitlines() if line.startswith("| mobilenet_like_224 | ")]
    assert len(rows) == 3 * len(backends), rows  # bf16, fp16, int8 (unirt quantize's static Q/DQ model)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        # either a measured mode (Session.precision, a time ratio, errors) or a refusal naming the reason
        assert (
            cells[3] == cells[2] and float(cells[4].split(" / ")[0]) > 0 and float(cells[6]) >= 0
        ) or "refused: " in cells[8], row
    if "onnxruntime" in backends:
        assert any("| onnxruntime | bf16 |" in r and "refused: onnxruntime has no bf16 mode" in r for r in rows)
        int8 = next(r for r in rows if "| onnxruntime | int8 |" in r)
        assert "| int8 | int8 |" in int8 and "static Q/DQ from unirt quantize" in int8
    if "mnn" in backends:  # MNN's converter cannot take the Q/DQ model: said before converting
        assert any(
            "| mnn | int8 |" in r
            and "refused: ConversionError: mnn: MNN's ONNX converter cannot convert a quantized ONNX model" in r
            for r in rows
        )
