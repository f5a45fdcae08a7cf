"""unirt.testing.fuzz reports a backend that crashes on damaged files as failures naming each variant, and goes
on after each crash; it passes a backend that refuses them."""

from __future__ import annotations

import os

import pytest
from conftest import install_distribution

import unirt
from unirt.testing.fuzz import check_malformed, variants


def test_variants_cover_every_kind_of_damage(model, tmp_path):
    names = [v.name for v in variants(model("dynamic_mlp"))]
    for expected in ("empty", "garbage", "header_then_garbage", "bitflip_0", "bitflip_7"):
        assert expected in names
    assert any(n.startswith("truncated_header") for n in names) and len([n for n in names if "truncated" in n]) >= 5
    param = tmp_path / "m.param"
    param.write_text("7767517\n2 2\nInput data 0 1 data\nReLU relu 1 1 data out\n")
    (tmp_path / "m.bin").write_bytes(b"\0" * 64)
    companion = [v.name for v in variants(param)]
    assert {"bin.missing", "bin.empty", "bin.header_then_garbage"} <= set(companion)
    missing = next(v for v in variants(param) if v.name == "bin.missing")
    assert missing.files["m.bin"] is None and missing.files["m.param"] == param.read_bytes()


def test_crashes_are_reported_by_variant(model, tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    install_distribution(
        site, "unirt-crashing-test", "unirt_crashing_plugin", {"crashing": "unirt_crashing_plugin:CrashingBackend"}
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    source = model("dynamic_mlp")
    monkeypatch.setenv("UNIRT_TEST_PRISTINE", str(source))
    report = check_malformed(source, backend="crashing", workdir=tmp_path / "fuzz", bitflips=4)
    outcome = {r.variant: r.outcome for r in report.results}
    assert outcome["original"] == "ran"
    assert outcome["empty"].startswith("refused")  # unirt refuses it before any backend sees it
    crashed = [v for v, o in outcome.items() if o == "crashed: killed by signal 11"]
    assert len(crashed) >= 2  # the harness restarted after the first crash
    assert len(outcome) == len(variants(source, bitflips=4)) + 1  # every variant has an answer
    with pytest.raises(AssertionError, match=rf"{crashed[0]}: crashed: killed by signal 11"):
        report.assert_ok()
    unirt.refresh()
