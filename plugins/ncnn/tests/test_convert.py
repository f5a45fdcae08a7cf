"""ONNX -> ncnn through unirt.convert: pnnx's known bugs fixed up, every result verified, crashes contained."""

from __future__ import annotations

import json
import logging
import os
import stat

import numpy as np
import onnxruntime as ort
import pytest

import unirt
from unirt import ConversionError
from unirt_ncnn.pnnx import run_pnnx


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


def test_softmax_without_axis_is_fixed_up(model, tmp_path):
    """Opset 11 Softmax with the default axis (1) on a 4-D tensor: pnnx applies it on the last axis."""
    from unirt.testing import softmax_coerced

    source = softmax_coerced(tmp_path / "softmax.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 5)).astype(np.float32)
    (ref,) = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    # pnnx as is: runs, but answers something else
    run_pnnx(source, tmp_path / "raw.param", tmp_path / "raw.bin", {"x": [1, 3, 4, 5]}, {}, fp16=False)
    raw = unirt.Session(
        tmp_path / "raw.param", backend="ncnn", backend_options={"input_shapes": {"in0": [3, 4, 5]}}
    ).run(x)["out0"]
    assert rel_l2(raw.reshape(ref.shape), ref) > 0.1
    conv = unirt.convert(source, to="ncnn")
    assert any("coerces to 2-D at axis 1" in f for f in conv.fixups)
    assert conv.within_tolerance and conv.max_error < 1e-5
    np.testing.assert_allclose(unirt.Session(conv, backend="ncnn").run(x)["y"], ref, rtol=1e-5, atol=1e-6)


def test_ir3_initializers_as_inputs_are_fixed_up(squeezenet, tmp_path):
    with pytest.raises(ConversionError, match="pnnx failed"):
        run_pnnx(
            squeezenet.model, tmp_path / "raw.param", tmp_path / "raw.bin", {"data_0": [1, 3, 224, 224]}, {}, fp16=False
        )
    conv = unirt.convert(squeezenet.model, to="ncnn", out=tmp_path / "sq.param")
    assert any("initializers listed as graph inputs" in f for f in conv.fixups)
    assert conv.verified and conv.max_error < 1e-5 and conv.reference == "onnxruntime"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("sq.")) == [
        "sq.bin",
        "sq.param",
        "sq.unirt.json",
    ]


@pytest.mark.parametrize("name", ["pytorch-converted/test_AvgPool2d", "pytorch-converted/test_PReLU_2d_multiparam"])
def test_opset6_models_are_upgraded_for_pnnx(name, tmp_path):
    """pnnx loads a model with its bundled ONNX Runtime, which has no opset-6 AveragePool or PRelu: it crashed
    after "ort CreateSession failed". Upgraded to opset 7 first, they convert and answer like the onnx wheel's
    outputs (the conversion verified against OpenVINO, as ONNX Runtime cannot load the source)."""
    from unirt import testing

    case = next(c for c in testing.conformance_cases(("pytorch-converted",)) if c.name == name)
    shape = {"0": list(case.inputs[0].shape)}
    with pytest.raises(ConversionError, match=r"(?s)pnnx failed.*ort CreateSession failed"):
        run_pnnx(case.model, tmp_path / "raw.param", tmp_path / "raw.bin", shape, {}, fp16=False)
    conv = unirt.convert(case.model, to="ncnn", out=tmp_path / "m.param")
    assert any(f.startswith("upgraded opset 6 to 7") for f in conv.fixups)
    assert conv.verified and conv.within_tolerance and conv.reference == "openvino"
    with unirt.Session(conv, backend="ncnn") as sess:
        got = sess.run(case.inputs[0])
    np.testing.assert_allclose(got[sess.outputs[0].name], case.outputs[0], rtol=1e-4, atol=1e-5)


def test_fp32_weights_unless_fp16_is_asked_for(model, converted):
    fp32 = converted("matmul_relu")
    fp16 = converted("matmul_relu", precision="fp16")
    size32 = fp32.path.with_suffix(".bin").stat().st_size
    size16 = fp16.path.with_suffix(".bin").stat().st_size
    assert size32 >= 64 * 64 * 4 and size16 < size32 * 0.6
    assert fp32.max_error < 1e-6 < fp16.max_error < 1e-2


def test_cache_hit_and_conversion_on_load(model, caplog):
    source = model("dynamic_mlp")
    first = unirt.convert(source, to="ncnn")
    again = unirt.convert(source, to="ncnn")
    assert again.cached and again.path == first.path
    assert unirt.convert(source, to="ncnn", precision="fp16").path != first.path
    with caplog.at_level(logging.INFO, logger="unirt"):
        sess = unirt.Session(source, backend="ncnn")
    assert sess.backend == "ncnn" and sess.conversion is not None and sess.conversion.cached
    assert "ncnn" in caplog.text and "cache hit" in caplog.text
    x = np.ones((2, 8), np.float32)
    np.testing.assert_allclose(
        sess.run(x)["probs"], unirt.Session(source, backend="onnxruntime").run(x)["probs"], rtol=1e-5
    )


def test_auto_selection_and_explain_say_what_is_converted(model, monkeypatch):
    source = model("dynamic_mlp")
    text = str(unirt.explain(source))
    assert "ncnn" in text and "converts onnx to ncnn with its own converter on first load" in text
    monkeypatch.setenv("UNIRT_BACKEND_ORDER", "ncnn")
    sess = unirt.Session(source)
    assert sess.backend == "ncnn" and sess.conversion is not None
    assert "converts onnx to ncnn" in sess.selection.chosen.reason


def test_a_disagreeing_conversion_is_refused_with_the_measured_error(model):
    source = model("matmul_relu")
    with pytest.raises(
        ConversionError,
        match=r"disagrees with onnxruntime beyond the fp16 tolerance .* y: rel-L2 "
        r"[0-9.e-]+, max abs",
    ):
        unirt.convert(source, to="ncnn", precision="fp16", tolerance=1e-9)
    kept = unirt.convert(source, to="ncnn", precision="fp16", tolerance=1e-9, accept=True)
    assert kept.verified and not kept.within_tolerance and kept.max_error > 1e-9
    with pytest.raises(ConversionError, match="disagrees"):
        unirt.Session(source, backend="ncnn", precision="fp16", backend_options={"conversion": {"tolerance": 1e-9}})
    sess = unirt.Session(
        source,
        backend="ncnn",
        precision="fp16",
        backend_options={"conversion": {"tolerance": 1e-9, "accept": True}, "allow_storage_only_precision": True},
    )
    assert sess.conversion.max_error == kept.max_error


def test_a_crashing_converter_is_a_conversion_error(model, tmp_path, monkeypatch):
    crash = tmp_path / "pnnx"
    crash.write_text("#!/bin/sh\necho 'pnnx: about to fail' >&2\nkill -SEGV $$\n")
    crash.chmod(crash.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("UNIRT_PNNX", str(crash))
    with pytest.raises(ConversionError, match=r"(?s)pnnx failed \(killed by signal 11\).*pnnx: about to fail"):
        unirt.convert(model("dynamic_mlp"), to="ncnn", cache=False)


def test_what_ncnn_cannot_run_is_refused_clearly(model, tmp_path):
    """Before pnnx runs: inputs ncnn cannot take. After: ops pnnx could not lower to ncnn layers, named (not a
    "damaged .param" when the session loads them)."""
    with pytest.raises(ConversionError, match=r"input 'tokens' is int64 \(ncnn takes float32 inputs only\)"):
        unirt.convert(model("byte_transformer"), to="ncnn")
    with pytest.raises(
        ConversionError,
        match=r"input 'idx' is int64 .*input 'scale' is a scalar \(pnnx cannot take "
        r"rank-0 inputs\)",
    ):
        unirt.convert(model("multi_io"), to="ncnn")
    from onnx import TensorProto, helper, numpy_helper, save

    reps = numpy_helper.from_array(np.array([1, 2], np.int64), "reps")
    graph = helper.make_graph(
        [helper.make_node("Tile", ["x", "reps"], ["y"])],
        "tile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 8])],
        [reps],
    )
    save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(tmp_path / "tile.onnx")
    )
    with pytest.raises(
        ConversionError,
        match=r"pnnx left operators that ncnn \S+ has no layer for: torch.tile "
        r"\(line \d+\)",
    ):
        unirt.convert(tmp_path / "tile.onnx", to="ncnn")


def test_cli_convert(model, tmp_path, capsys):
    from unirt.cli import main

    out = tmp_path / "cli" / "mlp.param"
    assert main(["convert", str(model("dynamic_mlp")), "--to", "ncnn", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["path"] == str(out) and out.is_file()
    assert os.path.isfile(out.with_suffix(".bin"))
    assert all(e["rel_l2"] < 1e-5 for e in report["errors"])


def test_bf16_runs_from_fp32_weights_and_int8_is_refused(model):
    """bf16 storage is offered plainly only on CPUs with bf16 instructions (measured faster there); elsewhere it is
    refused unless allow_storage_only_precision=True (intentional change, issue 18)."""
    from unirt.precision import cpu_arithmetic

    source = model("dynamic_mlp")
    native = cpu_arithmetic("bf16")[0]
    if not native:
        with pytest.raises(unirt.UnsupportedOptionError, match="would only store weights/activations in bf16"):
            unirt.Session(source, backend="ncnn", precision="bf16")
    sess = unirt.Session(
        source,
        backend="ncnn",
        precision="bf16",
        backend_options={} if native else {"allow_storage_only_precision": True},
    )
    assert sess.precision == "bf16" and sess._runner._net.opt.use_bf16_storage
    assert ("storage only" in sess.precision_info) != native
    assert sess.conversion.within_tolerance
    with pytest.raises(unirt.UnsupportedOptionError, match="int8 needs a model quantized with ncnn2table/ncnn2int8"):
        unirt.convert(source, to="ncnn", precision="int8")


def test_a_missing_pnnx_says_what_to_install(model, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_PNNX", str(tmp_path / "no-such-pnnx"))
    with pytest.raises(unirt.BackendUnavailableError, match="pip install --no-deps pnnx"):
        unirt.convert(model("dynamic_mlp"), to="ncnn", cache=False)


def test_backends_lists_onnx_as_converted(capsys):
    from unirt.cli import main

    info = unirt.backends(names=["ncnn"])[0]
    assert info.formats == ("ncnn",) and info.converts_from == ("onnx",)
    assert main(["backends"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ncnn "))
    assert row.split()[-4:] == ["ncnn,", "onnx", "(converted)", "onnx"]
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["backends"]}
    assert rows["ncnn"]["converts_from"] == ["onnx"]


def test_another_pnnx_converts_afresh(model, tmp_path, monkeypatch):
    """The conversion cache key names the pnnx that converts (the wheel's version, the binary's path, size and
    mtime): a binary from UNIRT_PNNX does not reuse what the wheel's pnnx converted."""
    from unirt_ncnn.pnnx import find_pnnx, pnnx_version

    source = model("dynamic_mlp")
    wheel = unirt.convert(source, to="ncnn")
    assert f"converter pnnx {pnnx_version()} at {find_pnnx()}" in wheel.converter
    other = tmp_path / "pnnx"
    other.symlink_to(find_pnnx())
    monkeypatch.setenv("UNIRT_PNNX", str(other))
    swapped = unirt.convert(source, to="ncnn")
    assert not swapped.cached and swapped.path != wheel.path
    assert f"converter pnnx (not the pnnx wheel's) at {other}" in swapped.converter
    assert unirt.convert(source, to="ncnn").cached  # the same binary again: a cache hit


@pytest.mark.slow
def test_dynamic_image_dims_convert_at_the_shapes_run(tmp_path):
    """Dynamic H and W are never converted at a guess (they used to be 224x224, refusing other sizes): a Session
    given no shapes converts at its first run's shapes, and pnnx keeps H and W dynamic (inputshape2), verified at
    two sizes, so another size runs on the same conversion. Shapes given (input_shapes, or the conversion
    settings kept for compatibility) convert at load."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "fcn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    source = tmp_path / "fcn.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(source))
    sess = unirt.Session(source, backend="ncnn")
    assert sess.conversion is None and sess.inputs[0].shape == ("N", 3, "H", "W")  # nothing converted yet
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    (ref,) = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert rel_l2(sess.run(x)["y"], ref) < 1e-5
    # converted at batch 1 (the batch dim is free), verified on the run's batch of 2 too
    assert sess.conversion.verified and sess.conversion.shapes == {"x": (1, 3, 224, 224)}
    assert sess.conversion.dynamic_axes == {"x": (2, 3)}
    assert sess.conversion.verified_on.startswith("the first run's inputs (x: 2x3x224x224)")
    small = x[:, :, :32, :40].copy()
    (ref,) = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": small})
    assert rel_l2(sess.run(small)["y"], ref) < 1e-5 and len(sess._lazy.conversions) == 1  # no reconversion
    for given in (
        {"input_shapes": {"x": [1, 3, 32, 40]}},
        {"backend_options": {"conversion": {"input_shapes": {"x": [1, 3, 32, 40]}}}},
    ):
        with unirt.Session(source, backend="ncnn", **given) as other:
            assert other.conversion.shapes == {"x": (1, 3, 32, 40)}
            assert other.inputs[0].shape == ("N", 3, "H", "W") and rel_l2(other.run(small)["y"], ref) < 1e-5
