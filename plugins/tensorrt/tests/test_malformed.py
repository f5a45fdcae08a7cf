"""Damaged TensorRT plan files (.engine/.plan) end in a unirt error, never a crash. Files without a plan header are
refused before TensorRT is involved (testable anywhere); a plan that has one goes to TensorRT's deserializer, first
in a throwaway process (`unirt.canary`), so a crash there is a ModelLoadError. Without TensorRT and a GPU, those
files are refused with the exact reason TensorRT cannot run here; the fuzz run over a real engine is skipped."""

from __future__ import annotations

import numpy as np
import pytest

import unirt
from unirt import testing
from unirt.testing.fuzz import check_malformed, variants
from unirt_tensorrt.backend import unavailable_reason

REASON, _ = unavailable_reason()
needs_gpu = pytest.mark.skipif(REASON is not None, reason=f"TensorRT cannot run here: {REASON}")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("suffix", [".engine", ".plan"])
def test_damaged_plan_files_are_refused(tmp_path, suffix):
    """Variants (empty, truncated, bit flips, garbage after the 'ftrt' header, garbage) of a file that starts like
    a plan and is no engine: none may load, and none may crash the process."""
    fake = tmp_path / f"fake{suffix}"
    fake.write_bytes(b"ftrt" + np.random.default_rng(0).bytes(4096))
    seen = set()
    for v in variants(fake, seed=1, bitflips=6):
        folder = tmp_path / v.name
        folder.mkdir()
        for name, data in v.files.items():
            (folder / name).write_bytes(data)
        path = folder / v.main
        data = path.read_bytes()
        with pytest.raises(unirt.UnirtError) as caught:
            unirt.Session(path, backend="tensorrt")
        error = caught.value
        if data[:4] != b"ftrt":
            seen.add("no header")
            assert isinstance(error, unirt.ModelLoadError), (v.name, error)
            assert "the file is empty" in str(error) or "no TensorRT plan header (magic tag 'ftrt')" in str(error)
        elif REASON is not None:
            seen.add("header")
            assert isinstance(error, unirt.BackendUnavailableError) and REASON in str(error), (v.name, error)
        else:
            seen.add("header")
            assert isinstance(error, unirt.ModelLoadError), (v.name, error)
    assert seen == {"no header", "header"}  # both paths were taken


@needs_gpu
def test_malformed_engines_never_crash(tmp_path):
    """Damaged copies of a real engine: refused with ModelLoadError, or (a flipped weight bit) still a valid engine
    that runs; never a dead process."""
    engine = unirt.convert(testing.build("dynamic_mlp", tmp_path), to="tensorrt", out=tmp_path / "mlp.engine")
    check_malformed(engine.path, backend="tensorrt", workdir=tmp_path / "fuzz", seed=0, bitflips=8).assert_ok()
