from __future__ import annotations

import json

import pytest

import unirt
from unirt import BackendUnavailableError, registry
from unirt.cli import main as cli_main
from unirt.selection import ENV_ORDER


def test_plugin_from_a_test_distribution_is_discovered(test_plugins):
    rows = {b.name: b for b in unirt.backends()}
    ref = rows["reference"]
    assert ref.installed and ref.available
    assert ref.distribution == "unirt-reference-test" and ref.plugin_version == "0.1.0"
    assert ref.formats == ("onnx",) and ref.devices == ("cpu",)
    assert isinstance(registry.get_backend("reference"), unirt.Backend)


def test_broken_plugin_is_listed_with_its_error_and_breaks_nothing(test_plugins):
    rows = {b.name: b for b in unirt.backends()}
    broken = rows["broken"]
    assert broken.installed and not broken.available
    assert "fancyengine_that_does_not_exist" in broken.reason and "ModuleNotFoundError" in broken.reason
    assert rows["reference"].available  # the others still work
    with pytest.raises(BackendUnavailableError, match="installed but unusable.*fancyengine"):
        registry.get_backend("broken")


def test_missing_backend_says_what_to_install(test_plugins, known_fakeengine):
    # a backend of this project that is not installed here: its plugin folder in a unirt checkout
    with pytest.raises(BackendUnavailableError) as err:
        registry.get_backend("fakeengine")
    msg = str(err.value)
    assert "pip install ./plugins/fakeengine (unirt-fakeengine" in msg and "reference" in msg  # lists what is installed
    assert registry.distribution("fakeengine") == "unirt-fakeengine"
    # a name no plugin registers (a typo, a third-party plugin missing): no "pip install" advice to make up
    with pytest.raises(
        BackendUnavailableError,
        match="'nosuchengine' is not installed, and it is none of unirt's own "
        r"\(.*onnxruntime, openvino, .*\): check the name, or install the plugin that provides it",
    ):
        registry.get_backend("nosuchengine")


def test_include_missing_lists_this_projects_backends():
    rows = {b.name: b for b in unirt.backends(include_missing=True)}
    assert set(registry.known_names()) <= set(rows)
    for row in rows.values():
        if not row.installed:
            assert "pip install" in row.reason


def test_discovery_is_lazy_until_used(test_plugins):
    entries = registry._discover()
    assert entries["reference"].backend is None  # listed, not yet imported
    registry.availability("reference")
    assert entries["reference"].backend is not None


def test_malformed_plugins_are_unusable_entries_naming_their_mistake(malformed_plugins, model, monkeypatch, capsys):
    """No `formats`, string formats, a raising accepts(), devices given as a string: each plugin is one unusable
    row saying what it got wrong; listing, explain, auto-selection and the CLI work for everyone else."""
    rows = {b.name: b for b in unirt.backends()}
    assert malformed_plugins <= set(rows) and rows["reference"].available
    assert "has no `formats`" in rows["noformats"].reason and not rows["noformats"].available
    assert "holds 'onnx' (str)" in rows["strformats"].reason and "ModelFormat" in rows["strformats"].reason
    assert "devices='cpu'" in rows["strdevices"].reason and "tuple of device strings" in rows["strdevices"].reason
    assert not rows["strdevices"].available
    assert rows["raisingaccepts"].available  # its bug shows only when it judges a model
    with pytest.raises(BackendUnavailableError, match="noformats.*has no `formats`"):
        registry.get_backend("noformats")

    # explain and Session(auto) skip the malformed ones, with the reason, even when they come first
    monkeypatch.setenv(ENV_ORDER, ",".join(sorted(malformed_plugins)) + ",reference")
    exp = unirt.explain(model("dynamic_mlp"))
    by_name = {c.backend: c for c in exp.candidates}
    assert exp.chosen.backend == "reference"
    assert "plugin error: RuntimeError: accepts() exploded" in by_name["raisingaccepts"].reason
    assert not any(by_name[n].eligible for n in malformed_plugins)
    sess = unirt.Session(model("dynamic_mlp"))
    assert sess.backend == "reference"
    sess.close()

    assert cli_main(["backends", "--json"]) == 0
    listed = {b["name"]: b for b in json.loads(capsys.readouterr().out)["backends"]}
    assert not listed["strformats"]["available"] and listed["reference"]["available"]
    assert cli_main(["backends"]) == 0
    assert "has no `formats`" in capsys.readouterr().out
