"""examples/ray_serve.py runs as a user runs it: its own local Ray instance, two replicas, handle and HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="the ray extra is not installed (pip install '.[ray]')")
ROOT = Path(__file__).resolve().parents[2]


def test_ray_serve_example():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ray_serve.py")], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-4000:]}"
    out = done.stdout
    assert "64 requests through the handle: answers equal a local Session's" in out
    assert "answers equal" in out.split("HTTP on")[1]
    assert out.count("replica ") >= 4
