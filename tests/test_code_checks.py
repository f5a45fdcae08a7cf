"""The developer loop's code checks, run as the first tests: ruff (lint, format) and mypy, as pyproject.toml
configures them. requirements-test.txt installs both (the `lint` extra); without them these tests are skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.lint


def _check(module: str, *args: str, timeout: float = 600) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[lint]')")
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{module} {' '.join(args)}:\n{done.stdout[-6000:]}{done.stderr[-2000:]}"


def test_ruff_check() -> None:
    _check("ruff", "check", "--no-cache", ".")


def test_ruff_format() -> None:
    _check("ruff", "format", "--check", "--no-cache", ".")


@pytest.mark.timeout(900)  # a first run without mypy's cache: about 3 minutes on 2 busy cores
def test_mypy() -> None:
    _check("mypy", timeout=850)
