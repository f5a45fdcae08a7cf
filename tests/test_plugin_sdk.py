"""Plugins own their facts: a third-party plugin (docs/plugins.md's example, run from the page itself) adds an
engine and a format of its own, given to Session as a class or installed through an entry point; the core's tables
come from the plugins; the project's plugins import only the SDK."""

from __future__ import annotations

import gzip
import importlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import unirt
from unirt import registry
from unirt.errors import InputError, ModelFormatError, ModelLoadError, UnsupportedOptionError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"


def _doc_blocks() -> list[str]:
    """The python code blocks of docs/plugins.md's complete example: the plugin, then its use."""
    text = DOC.read_text()
    example = text[text.index("## A complete example") :]
    return re.findall(r"```python\n(.*?)```", example, re.S)


@pytest.fixture
def gzonnx(tmp_path, monkeypatch):
    """docs/plugins.md's example plugin as the module unirt_gzonnx (importable, not installed)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "unirt_gzonnx.py").write_text(_doc_blocks()[0])
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("unirt_gzonnx", None)
    module = importlib.import_module("unirt_gzonnx")
    yield module
    sys.modules.pop("unirt_gzonnx", None)
    unirt.refresh()


@pytest.fixture
def installed_gzonnx(gzonnx):
    """The example installed as the distribution unirt-gzonnx, found through its entry point."""
    site = Path(gzonnx.__file__).parent
    info = site / "unirt_gzonnx-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: unirt-gzonnx\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[unirt.backends]\ngzonnx = unirt_gzonnx:GzOnnxBackend\n")
    importlib.invalidate_caches()
    unirt.refresh()
    yield gzonnx
    unirt.refresh()


@pytest.fixture
def gz_model(model, tmp_path):
    """A real ONNX model (dynamic_mlp), gzip-compressed, and the ONNX file it came from."""
    source = Path(model("dynamic_mlp"))
    path = tmp_path / "model.onnx.gz"
    path.write_bytes(gzip.compress(source.read_bytes()))
    return path, source


def _feeds(sess: unirt.Session) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        i.name: rng.standard_normal([d if isinstance(d, int) else 3 for d in i.shape]).astype(i.dtype)
        for i in sess.inputs
    }


def test_the_docs_usage_block_runs(gzonnx, model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_bytes(Path(model("dynamic_mlp")).read_bytes())
    exec(_doc_blocks()[1], {"GzOnnxBackend": gzonnx.GzOnnxBackend})
    assert capsys.readouterr().out.split() == ["gzonnx", "gzonnx"]


@pytest.mark.parametrize("given", ["class", "instance"])
def test_session_takes_a_backend_object(gzonnx, gz_model, given):
    path, source = gz_model
    backend = gzonnx.GzOnnxBackend if given == "class" else gzonnx.GzOnnxBackend()
    with unirt.Session(path, backend=backend) as sess, unirt.Session(source, backend="onnxruntime") as ref:
        assert sess.backend == "gzonnx" and sess.model.format == gzonnx.GZONNX and sess.model.format.value == "gzonnx"
        feeds = _feeds(ref)
        got, want = sess.run(feeds), ref.run(feeds)
        assert list(got) == list(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    # the object was used where it was named: the format is not known to unirt at large, nor picked by auto
    with pytest.raises(ModelFormatError, match="unrecognised model format"):
        unirt.open_model(path)
    assert "gzonnx" not in registry.installed_names()


def test_backend_argument_is_checked(gzonnx, gz_model):
    path, _ = gz_model
    with pytest.raises(InputError, match="a unirt.Backend object or subclass; got object"):
        unirt.Session(path, backend=object())

    class Unfinished(unirt.Backend):
        name = "unfinished"
        formats = frozenset({unirt.ModelFormat.ONNX})

    with pytest.raises(InputError, match="does not implement load, probe"):
        unirt.Session(path, backend=Unfinished)

    class Impostor(gzonnx.GzOnnxBackend):
        name = "onnxruntime"

    if "onnxruntime" in registry.installed_names():
        with pytest.raises(InputError, match="named 'onnxruntime', as the installed plugin .* another name"):
            unirt.Session(path, backend=Impostor)
        # the installed plugin's own class is that plugin
        own = type(registry.get_backend("onnxruntime"))
        with unirt.Session(gz_model[1], backend=own) as sess:
            assert sess.backend == "onnxruntime"

    class StringFormats(gzonnx.GzOnnxBackend):
        name = "strformats_given"
        formats = "gzonnx"

    with pytest.raises(InputError, match="expected a frozenset of unirt.ModelFormat"):
        unirt.Session(path, backend=StringFormats)
    with pytest.raises(UnsupportedOptionError, match="isolate=True .* install it as a plugin"):
        unirt.Session(path, backend=gzonnx.GzOnnxBackend, isolate=True)
    with pytest.raises(ValueError, match="built-in format"):
        unirt.PluginFormat("onnx")


def test_an_installed_plugins_format_flows_through_unirt(installed_gzonnx, gz_model, tmp_path, capsys):
    path, source = gz_model
    fmt = installed_gzonnx.GZONNX
    assert unirt.open_model(path).format == fmt
    assert unirt.open_model(path.read_bytes()).format == fmt
    with unirt.Session(path) as sess:  # auto: the only installed backend that reads it
        assert sess.backend == "gzonnx" and sess.selection.chosen.backend == "gzonnx"
        assert "format gzonnx" in str(sess.selection)
        sess.run(_feeds(sess))
    from unirt.cli import main

    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "gzonnx" in out and "x" in out
    row = {b.name: b for b in unirt.backends()}["gzonnx"]
    assert row.available and row.formats == ("gzonnx",) and row.distribution == "unirt-gzonnx"
    assert (
        registry.install_hint("gzonnx") == "pip install onnxruntime (and this plugin's own package)"
    )  # what the plugin declares
    # damaged: its detector says so; an unknown format's error lists the plugin's format among those unirt reads
    damaged = tmp_path / "damaged.onnx.gz"
    damaged.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="gzip data is damaged"):
        unirt.open_model(damaged)
    unknown = tmp_path / "unknown.bin"
    unknown.write_bytes(b"\x00\x01\x02 not a model at all")
    with pytest.raises(ModelFormatError, match=r"unirt reads onnx, .*gzonnx"):
        unirt.open_model(unknown)
    # serving reads its format's facts from it
    from unirt.deploy.kserve import kserve_format
    from unirt.serve.repository import model_files

    assert model_files("gzonnx") == ("model.onnx.gz",)
    assert kserve_format(fmt) == {"name": "onnx-gzip"}


def test_install_hints_come_from_one_place(known_fakeengine):
    assert (
        registry.install_hint("fakeengine")
        == "pip install ./plugins/fakeengine (unirt-fakeengine, from unirt's source checkout)"
    )
    assert registry.install_hint("nosuchengine") == "install a plugin that provides the 'nosuchengine' backend"
    for name in registry.installed_names():
        plugin = registry.find_backend(name)
        if plugin is not None and plugin.install_hint:
            assert registry.install_hint(name) == plugin.install_hint
    for name in registry.known_names():
        if name in registry.installed_names():  # its distribution is read from its metadata: unirt-<name>
            assert registry.distribution(name) == f"unirt-{name}"


def test_tables_are_derived_from_the_plugins():
    """The core's per-backend tables, read from what each installed plugin of this project declares."""
    from unirt.deploy.image import image_contents, plugins
    from unirt.deploy.kserve import kserve_format
    from unirt.integrations.ray.options import ReplicaOptions
    from unirt.serve.config import backend_names, platforms
    from unirt.serve.repository import model_files

    installed = set(registry.installed_names())
    images = plugins()
    checked = 0
    for name in installed & set(registry.known_names()):
        plugin = registry.get_backend(name)
        assert platforms()[plugin.serve_platform or name] == name
        assert all(backend_names()[alias] == name for alias in (name, *plugin.serve_aliases))
        for fmt, facts in plugin.format_facts.items():
            assert plugin.owns(fmt) and registry.owner(fmt) is plugin
            assert set(facts.model_files) <= set(model_files(name))
            assert kserve_format(fmt)["name"] == facts.kserve_name
        assert images[name].gpu == plugin.needs_gpu and images[name].extra == plugin.image_extra
        assert ReplicaOptions("m.onnx", backend=name, device="gpu").gpus == (
            1 if plugin.needs_gpu or plugin.gpu_vendor == "nvidia" else 0
        )
        assert set(image_contents([name]).extras) == {"serve", *plugin.unirt_extras}
        checked += 1
    assert checked >= 1
    # what serving clients and manifests have always called them, now declared by the plugins
    expected = {
        "onnxruntime": ("onnxruntime_onnx", "model.onnx", {"name": "onnx", "version": "1"}),
        "tensorrt": ("tensorrt_plan", "model.plan", {"name": "tensorrt", "version": "10"}),
        "openvino": ("openvino", "model.xml", {"name": "openvino"}),
        "tflite": ("tflite", "model.tflite", {"name": "tflite"}),
        "ncnn": ("ncnn", "model.param", {"name": "ncnn"}),
        "mnn": ("mnn", "model.mnn", {"name": "mnn"}),
    }
    for name, (platform, file_name, kserve) in expected.items():
        if name in installed:
            assert platforms()[platform] == name and model_files(name)[0] == file_name
            assert kserve_format(unirt.ModelFormat(name if name != "onnxruntime" else "onnx")) == kserve
    if "tflite" in installed:
        assert backend_names()["litert"] == "tflite"
    if "tensorrt" in installed:
        assert ReplicaOptions("m.onnx", backend="tensorrt").gpus == 1
    if "openvino" in installed:
        assert ReplicaOptions("m.onnx", backend="openvino", device="gpu").gpus == 0


_ALLOWED = re.compile(r"unirt(\.(plugin_sdk|backend|errors|formats|tensor|devices))?")


def test_plugins_import_only_the_contract_and_the_sdk():
    """The project's plugins use what a third party's may (docs/plugins.md): nothing else of unirt's."""
    found = []
    for source in sorted(ROOT.glob("plugins/*/unirt_*/**/*.py")):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            m = re.match(r"\s*(?:from\s+(unirt(?:\.[\w.]+)?)\s+import|import\s+(unirt(?:\.[\w.]+)?))\b", line)
            if m and not _ALLOWED.fullmatch(m.group(1) or m.group(2)):
                found.append(f"{source.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [], "plugins import unirt internals beyond the SDK:\n" + "\n".join(found)


def test_the_sdk_names_resolve():
    from unirt import plugin_sdk

    for name in plugin_sdk.__all__:
        assert getattr(plugin_sdk, name) is not None, name
    from unirt.plugin_sdk import check_loads, read_sidecar  # noqa: F401  (from-imports go through the same path)

    with pytest.raises(AttributeError, match="a plugin may use: .*cache_dir"):
        plugin_sdk.session_internals  # noqa: B018
