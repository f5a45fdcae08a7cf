"""Malformed model files end in unirt.ModelLoadError (or load, where the file is still a valid model): never a
crash. Each variant is loaded in a child process, so a crash is seen as a failure instead of killing pytest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from unirt.testing import conformance_cases

CHILD = r"""
import json, sys
import numpy as np
import unirt
results = {}
for path in sys.argv[1:]:
    try:
        with unirt.Session(path, backend="onnxruntime") as s:
            feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], i.dtype) for i in s.inputs}
            try:
                s.run(feeds)
                results[path] = "ran"
            except unirt.UnirtError as e:
                results[path] = "loaded; run error: " + type(e).__name__
    except unirt.UnirtError as e:
        results[path] = type(e).__name__
    except Exception as e:
        results[path] = "NOT A UNIRT ERROR: %s: %s" % (type(e).__name__, e)
print(json.dumps(results))
"""


def variants(source: Path, out: Path) -> list[Path]:
    data = source.read_bytes()
    rng = np.random.default_rng(0)
    made = {"empty.onnx": b"", "garbage.onnx": rng.bytes(4096),
            "header_then_garbage.onnx": data[:64] + rng.bytes(len(data) - 64)}
    for i, cut in enumerate([1, 2, 16, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1]):
        made[f"truncated_{i}.onnx"] = data[:cut]
    for i in range(12):
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), size=1 + i):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        made[f"bitflip_{i}.onnx"] = bytes(flipped)
    paths = []
    for name, content in made.items():
        (out / name).write_bytes(content)
        paths.append(out / name)
    return paths


def test_malformed_models_never_crash(tmp_path):
    source = next(c.model for c in conformance_cases(("light",)) if c.name == "light_squeezenet")
    paths = variants(source, tmp_path)
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, f"child died (signal {-proc.returncode})\n{proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == set(map(str, paths))
    bad = {p: r for p, r in results.items() if r.startswith("NOT A UNIRT ERROR")}
    assert not bad, bad
    for name in ("empty.onnx", "garbage.onnx", "truncated_0.onnx", "truncated_3.onnx"):
        assert results[str(tmp_path / name)] in ("ModelLoadError", "ModelFormatError"), results[str(tmp_path / name)]
