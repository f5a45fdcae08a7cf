from __future__ import annotations

import dataclasses

import pytest
from formats_samples import tensorrt_bytes, write_ncnn

import unirt
from unirt import Hardware, open_model
from unirt.selection import DEFAULT_ORDER, ENV_ORDER, rank

INTEL = Hardware("x86_64", "intel", "Xeon", frozenset({"avx512f"}), 8)
ARM = Hardware("aarch64", "arm", "", frozenset({"neon"}), 4)


def names(explanation):
    return [c.backend for c in explanation.candidates]


def test_env_variable_puts_its_backends_first(test_plugins, model, monkeypatch):
    m = open_model(model("dynamic_mlp"))
    monkeypatch.setenv(ENV_ORDER, "reference")
    exp = rank(m, "auto", INTEL)
    assert exp.chosen.backend == "reference" and exp.chosen.device == "cpu"
    assert ENV_ORDER in exp.order_source
    assert "first eligible" in exp.chosen.reason


def test_default_order_follows_hardware_class(model, test_plugins, monkeypatch):
    monkeypatch.delenv(ENV_ORDER, raising=False)
    m = open_model(model("dynamic_mlp"))
    exp = rank(m, "auto", INTEL)
    assert exp.hardware_class == "x86-intel"
    ordered = [n for n in names(exp) if n in DEFAULT_ORDER["x86-intel"]]
    assert ordered == [n for n in DEFAULT_ORDER["x86-intel"] if n in ordered]
    # third-party plugins come after this project's backends
    assert names(exp).index("reference") > max(names(exp).index(n) for n in ordered)
    assert rank(m, "auto", ARM).hardware_class == "arm"
    gpu = dataclasses.replace(INTEL, cuda_gpus=("NVIDIA H100",))
    assert rank(m, "auto", gpu).hardware_class == "cuda"
    assert rank(m, "cpu", gpu).hardware_class == "x86-intel"


def test_reasons_for_skipping(test_plugins, model, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_ORDER, "broken,reference")
    exp = rank(open_model(model("dynamic_mlp")), "cuda", INTEL)
    by_name = {c.backend: c for c in exp.candidates}
    assert "fancyengine" in by_name["broken"].reason and not by_name["broken"].eligible
    assert "cannot run on cuda" in by_name["reference"].reason
    assert exp.chosen is None or exp.chosen.backend != "reference"
    ncnn = rank(open_model(write_ncnn(tmp_path)), "auto", INTEL)
    assert "does not read ncnn" in {c.backend: c for c in ncnn.candidates}["reference"].reason
    if "ncnn" not in unirt.registry.installed_names():
        assert any("pip install ./plugins/ncnn" in c.reason for c in ncnn.candidates)
        assert ncnn.chosen is None and "no backend can run" in str(ncnn)
    else:
        assert ncnn.chosen.backend == "ncnn"
    engine = tmp_path / "model.engine"
    engine.write_bytes(tensorrt_bytes())
    plan = rank(open_model(engine), "auto", INTEL)  # TensorRT plans need a CUDA GPU: none in INTEL
    assert plan.chosen is None and "no backend can run" in str(plan)


def test_explain_is_public_and_printable(test_plugins, model, monkeypatch):
    monkeypatch.setenv(ENV_ORDER, "reference")
    exp = unirt.explain(model("dynamic_mlp"))
    text = str(exp)
    assert "chosen" in text and "reference" in text and "format onnx" in text


def test_session_auto_without_any_capable_backend(test_plugins, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(tensorrt_bytes())
    with pytest.raises(unirt.BackendUnavailableError, match="no installed backend can run this tensorrt model"):
        unirt.Session(engine, device="cpu")


def test_unknown_names_in_the_env_order_are_reported_once(test_plugins, model, monkeypatch, caplog):
    """A typo in UNIRT_BACKEND_ORDER is named (a warning once per value, and in the explanation), not ignored."""
    m = open_model(model("dynamic_mlp"))
    monkeypatch.setenv(ENV_ORDER, "onnxrutime,reference")
    with caplog.at_level("WARNING", logger="unirt.selection"):
        exp = rank(m, "auto", INTEL)
        rank(m, "auto", INTEL)
    warnings = [r.getMessage() for r in caplog.records if ENV_ORDER in r.getMessage()]
    assert len(warnings) == 1 and "onnxrutime" in warnings[0] and "reference" in warnings[0]
    assert "ignored unknown backend(s) in UNIRT_BACKEND_ORDER: onnxrutime" in str(exp)
    assert exp.chosen.backend == "reference" and "onnxrutime" not in names(exp)
    monkeypatch.setenv(ENV_ORDER, "tensorrt,reference")  # this project's backend, installed or not: no warning
    assert "ignored" not in rank(m, "auto", INTEL).order_source


def test_model_io_dtypes_are_read_without_loading(model, tmp_path):
    """io_dtypes scans the ONNX file (weights skipped) and agrees with onnx's own parse of the graph."""
    import onnx

    from unirt.model_dtypes import ONNX_TYPE_NAMES, io_dtypes

    for name in ("dynamic_mlp", "int_ops", "multi_io", "strings"):
        path = model(name)
        graph = onnx.load(path).graph
        expected = {ONNX_TYPE_NAMES[v.type.tensor_type.elem_type] for v in [*graph.input, *graph.output]}
        assert io_dtypes(open_model(path)) == expected, name
        assert io_dtypes(open_model(path.read_bytes())) == expected, name  # a model given as bytes
    assert io_dtypes(open_model(write_ncnn(tmp_path))) is None  # not ONNX: not known before loading


@pytest.mark.skipif("openvino" not in unirt.registry.installed_names(), reason="needs the OpenVINO plugin")
def test_backends_that_cannot_take_the_model_dtypes_are_skipped(model, monkeypatch):
    """OpenVINO (string tensors not taken) is skipped for a string model even when first in the order, and still
    chosen for a numeric one; the Session follows the choice."""
    monkeypatch.setenv(ENV_ORDER, "openvino,onnxruntime")
    strings = rank(open_model(model("strings")), "auto", INTEL)
    by_name = {c.backend: c for c in strings.candidates}
    assert not by_name["openvino"].eligible and "cannot take string tensors" in by_name["openvino"].reason
    assert strings.chosen.backend == "onnxruntime"
    assert rank(open_model(model("dynamic_mlp")), "auto", INTEL).chosen.backend == "openvino"
    with unirt.Session(model("strings")) as sess:
        assert sess.backend == "onnxruntime"
