"""Damaged ncnn models (.param and .bin: empty, truncated, bit-flipped, garbage, missing) end in ModelLoadError or
load as still-valid models: never a crash (ncnn's extract after a failed load_model is a SIGSEGV)."""

from __future__ import annotations

import pytest

from unirt.testing.fuzz import check_malformed


@pytest.mark.parametrize("name", ["squeezenet", "dynamic_mlp"])
def test_malformed_models_never_crash(converted, tmp_path, name):
    check_malformed(converted(name).path, backend="ncnn", workdir=tmp_path, bitflips=12).assert_ok()
