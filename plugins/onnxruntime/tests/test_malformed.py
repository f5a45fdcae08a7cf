"""Malformed model files end in unirt.ModelLoadError (or load, where the file is still a valid model): never a
crash. The shared harness (unirt.testing.fuzz) loads each damaged variant in a child process."""

from __future__ import annotations

from unirt.testing import conformance_cases
from unirt.testing.fuzz import DEFAULT_MUST_REFUSE, check_malformed


def test_malformed_models_never_crash(tmp_path):
    source = next(c.model for c in conformance_cases(("light",)) if c.name == "light_squeezenet")
    report = check_malformed(
        source, backend="onnxruntime", workdir=tmp_path, must_refuse=DEFAULT_MUST_REFUSE + ("truncated_*",)
    )
    report.assert_ok()
