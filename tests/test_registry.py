from __future__ import annotations

import pytest

import unirt
from unirt import BackendUnavailableError, registry


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


def test_missing_backend_says_what_to_install(test_plugins, monkeypatch):
    # a backend of this project that is not installed here (every real one may be, in the test environment)
    monkeypatch.setitem(registry.KNOWN_BACKENDS, "fakeengine", "unirt-fakeengine")
    with pytest.raises(BackendUnavailableError) as err:
        registry.get_backend("fakeengine")
    msg = str(err.value)
    assert "pip install unirt-fakeengine" in msg and "reference" in msg  # lists what is installed
    with pytest.raises(BackendUnavailableError, match="not installed"):
        registry.get_backend("nosuchengine")


def test_include_missing_lists_this_projects_backends():
    rows = {b.name: b for b in unirt.backends(include_missing=True)}
    assert set(registry.KNOWN_BACKENDS) <= set(rows)
    for name, row in rows.items():
        if not row.installed:
            assert "pip install" in row.reason


def test_discovery_is_lazy_until_used(test_plugins):
    entries = registry._discover()
    assert entries["reference"].backend is None  # listed, not yet imported
    registry.availability("reference")
    assert entries["reference"].backend is not None
