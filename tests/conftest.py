from __future__ import annotations

import gc
import importlib
import os
import shutil
from pathlib import Path

import pytest

import unirt
from unirt import testing

PLUGIN_SOURCES = Path(__file__).parent / "plugin_sources"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def model(models_dir):
    """model("dynamic_mlp") -> path of that test model, built once per test run."""
    return lambda name: testing.build(name, models_dir)


@pytest.fixture(scope="session")
def conv_model(models_dir):
    """conv_model("dynamic") / conv_model("static"): unirt.testing.batched_cnn with a batch dim N, or fixed at 4."""

    def build(kind: str) -> Path:
        path = models_dir / f"conv_{kind}.onnx"
        if not path.exists():
            testing.batched_cnn(path, batch={"dynamic": "N", "static": 4}[kind])
        return path

    return build


def install_distribution(site: Path, dist: str, module: str, entry_points: dict[str, str]) -> None:
    """Write a distribution the way pip does (module + .dist-info with entry_points.txt) into `site`."""
    shutil.copy(PLUGIN_SOURCES / f"{module}.py", site / f"{module}.py")
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = ["[unirt.backends]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def test_plugins(tmp_path, monkeypatch):
    """Install two test distributions: `reference` (works) and `broken` (its import fails)."""
    site = tmp_path / "site"
    site.mkdir()
    install_distribution(
        site, "unirt-reference-test", "unirt_reference_plugin", {"reference": "unirt_reference_plugin:ReferenceBackend"}
    )
    install_distribution(site, "unirt-broken-test", "unirt_broken_plugin", {"broken": "unirt_broken_plugin:Backend"})
    monkeypatch.syspath_prepend(str(site))
    unirt.refresh()
    yield site
    unirt.refresh()


@pytest.fixture
def known_fakeengine(monkeypatch):
    """Make "fakeengine" one of this project's backends (in the default order: what makes a backend "known"),
    not installed here: every real one may be, in the test environment."""
    from unirt import selection

    for hw_class, order in list(selection.DEFAULT_ORDER.items()):
        monkeypatch.setitem(selection.DEFAULT_ORDER, hw_class, (*order, "fakeengine"))
    return "fakeengine"


MALFORMED_PLUGINS = {
    "noformats": "NoFormatsBackend",
    "strformats": "StringFormatsBackend",
    "raisingaccepts": "RaisingAcceptsBackend",
    "strdevices": "StringDevicesBackend",
}


@pytest.fixture
def malformed_plugins(test_plugins):
    """`test_plugins` plus a distribution of plugins with a mistake each
    (tests/plugin_sources/unirt_malformed_plugin)."""
    install_distribution(
        test_plugins,
        "unirt-malformed-test",
        "unirt_malformed_plugin",
        {name: f"unirt_malformed_plugin:{cls}" for name, cls in MALFORMED_PLUGINS.items()},
    )
    importlib.invalidate_caches()
    unirt.refresh()
    return set(MALFORMED_PLUGINS)


def _unirt_segments() -> dict[str, int]:
    """unirt's segments in /dev/shm ("unirt.<pid>.<n>") and the pid of the process that made each."""
    try:
        names = os.listdir("/dev/shm")
    except OSError:  # no /dev/shm listing here (macOS): nothing to check
        return {}
    found = {}
    for name in names:
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "unirt" and parts[1].isdigit():
            found[name] = int(parts[1])
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@pytest.fixture(scope="session", autouse=True)
def no_leaked_shared_memory():
    """After the suite, no shared-memory segment made by this test process or by a process of it that has died
    may remain in /dev/shm ("unirt.<pid>.<n>": regions of other live processes on the machine are theirs)."""
    before = _unirt_segments()
    yield
    gc.collect()
    leaked = sorted(
        n for n, pid in _unirt_segments().items() if n not in before and (pid == os.getpid() or not _pid_alive(pid))
    )
    assert not leaked, f"shared-memory segments leaked by the test suite: {leaked}"


def pytest_collection_modifyitems(items):
    """The code checks (the `lint` marker: ruff, mypy) run before everything else."""
    items.sort(key=lambda item: item.get_closest_marker("lint") is None)
