"""ONNX -> MNN through unirt.convert: the converter's known bugs fixed up or avoided, every result verified."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import unirt
from unirt import LoadOptions, open_model
from unirt.testing import batchnorm_default_epsilon, byte_transformer, softmax_coerced
from unirt_mnn.backend import MnnBackend


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


def raw_conversion_error(source, tmp_path, x, name="x", **convert_options):
    """Convert with the plugin's converter alone (no unirt fixups) and measure it against onnxruntime."""
    out = tmp_path / "raw"
    out.mkdir(exist_ok=True)
    opts = LoadOptions(backend_options=convert_options)
    converted = MnnBackend().convert(open_model(source), out, opts)
    (ref,) = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {name: x})
    sess = unirt.Session(converted, backend="mnn", backend_options={"input_shapes": {name: list(x.shape)}})
    got = sess.run(x.astype(sess.inputs[0].dtype))  # a plain .mnn says int32 where the ONNX model says int64
    return rel_l2(next(iter(got.values())), ref)


def test_batchnorm_default_epsilon_is_fixed_up(tmp_path):
    source = batchnorm_default_epsilon(tmp_path / "bn.onnx")
    x = np.random.default_rng(0).standard_normal((1, 8, 4, 4)).astype(np.float32)
    assert raw_conversion_error(source, tmp_path, x) > 0.1  # MNN drops ONNX's default epsilon
    conv = unirt.convert(source, to="mnn")
    assert any("epsilon" in f for f in conv.fixups) and conv.max_error < 1e-5


def test_softmax_without_axis_is_fixed_up(tmp_path):
    source = softmax_coerced(tmp_path / "softmax.onnx")
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 5)).astype(np.float32)
    assert raw_conversion_error(source, tmp_path, x) > 0.1
    conv = unirt.convert(source, to="mnn")
    assert any("Softmax" in f for f in conv.fixups) and conv.max_error < 1e-5


def test_transformer_gelu_is_kept_exact(tmp_path):
    """The transformer disagreement: MNN's converter fuses the Erf GELU into its tanh approximation by default.
    One block already shows rel-L2 ~1e-4 with it; unirt asks for the exact GELU (--useGeluApproximation 0)."""
    source = byte_transformer(tmp_path / "bt.onnx", seq=32, dim=64, heads=4)
    tokens = np.random.default_rng(2).integers(0, 256, size=(1, 32))
    approx = raw_conversion_error(
        source, tmp_path, tokens, name="tokens", mnnconvert_args=["--useGeluApproximation", "1"]
    )
    assert approx > 2e-5
    conv = unirt.convert(source, to="mnn")
    assert conv.max_error < 2e-6 < approx


def test_fp32_weights_unless_fp16_is_asked_for(converted):
    fp32, fp16 = converted("matmul_relu"), converted("matmul_relu", precision="fp16")
    assert fp16.path.stat().st_size < fp32.path.stat().st_size
    assert fp32.max_error < 1e-6 and fp16.max_error < 1e-2


def test_the_converter_is_called_without_telemetry(tmp_path):
    """The `mnnconvert` console script also reports usage (MNN.tools.utils.log); the plugin calls the bundled
    converter module directly."""
    code = (
        "import sys; from unirt import open_model, LoadOptions; from unirt_mnn.backend import MnnBackend; "
        "from pathlib import Path; "
        f"MnnBackend().convert(open_model({str(tmp_path / 'm.onnx')!r}), Path({str(tmp_path)!r}), LoadOptions()); "
        "print('telemetry' if 'MNN.tools.utils.log' in sys.modules or 'MNN.tools' in sys.modules else 'quiet')"
    )
    from unirt.testing import dynamic_mlp

    dynamic_mlp(tmp_path / "m.onnx")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "quiet", proc.stderr


def test_conversion_on_load_and_cli(model, tmp_path, capsys):
    source = model("dynamic_mlp")
    sess = unirt.Session(source, backend="mnn")
    assert sess.conversion is not None and sess.conversion.verified
    assert "converter mnnconvert from MNN " in sess.conversion.converter  # in the cache key too
    from unirt.cli import main

    out = tmp_path / "mlp.mnn"
    assert main(["convert", str(source), "--to", "mnn", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cached"] and out.is_file() and (tmp_path / "mlp.unirt.json").is_file()


def test_unconvertible_models_are_conversion_errors(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["y"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["N"])],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "s.onnx"))
    with pytest.raises(unirt.ConversionError):
        unirt.convert(tmp_path / "s.onnx", to="mnn")


def test_backends_lists_onnx_as_converted(capsys):
    from unirt.cli import main

    info = unirt.backends(names=["mnn"])[0]
    assert info.formats == ("mnn",) and info.converts_from == ("onnx",)
    assert main(["backends"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("mnn "))
    assert row.split()[-4:] == ["mnn,", "onnx", "(converted)", "onnx"]
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["backends"]}
    assert rows["mnn"]["converts_from"] == ["onnx"]


def test_a_model_onnxruntime_cannot_load_still_converts(tmp_path):
    """ONNX Runtime has no PRelu-6 kernel; MNN converts the model exactly. verify=False reads the signature from
    the ONNX file (it used to load the source in ONNX Runtime anyway: a ModelLoadError); verify=True takes the
    next installed backend that loads it as the reference, or says that verify=False accepts it unverified."""
    from unirt import testing

    case = next(
        c
        for c in testing.conformance_cases(("pytorch-converted",))
        if c.name == "pytorch-converted/test_PReLU_3d_multiparam"
    )
    with pytest.raises(unirt.ModelLoadError):
        unirt.Session(case.model, backend="onnxruntime")
    conv = unirt.convert(case.model, to="mnn", verify=False, out=tmp_path / "prelu.mnn")
    assert not conv.verified and conv.reference is None
    got = unirt.Session(conv, backend="mnn").run(case.inputs[0])
    np.testing.assert_allclose(next(iter(got.values())), case.outputs[0], rtol=1e-5, atol=1e-6)
    if any(b.available for b in unirt.backends(names=["openvino"])):
        checked = unirt.convert(case.model, to="mnn", cache=False)
        assert checked.verified and checked.reference == "openvino" and checked.within_tolerance


def test_a_model_no_reference_loads_needs_verify_false(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="com.example")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    onnx.save(
        helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
        str(tmp_path / "custom.onnx"),
    )
    with pytest.raises(
        unirt.ConversionError,
        match=r"cannot be verified: no reference backend loads the source "
        r"model \(onnxruntime: ModelLoadError.*verify=False",
    ):
        unirt.convert(tmp_path / "custom.onnx", to="mnn")


def _fcn(path, flatten_to=None):
    """x[N, 3, H, W] -> a 3x3 convolution (-> Reshape to [N, flatten_to] when given: fixes H and W)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes, inits = [helper.make_node("Conv", ["x", "w"], ["y" if flatten_to is None else "c"])], [w]
    if flatten_to is not None:
        inits.append(numpy_helper.from_array(np.array([0, flatten_to], np.int64), "s"))
        nodes.append(helper.make_node("Reshape", ["c", "s"], ["y"]))
    g = helper.make_graph(
        nodes,
        "fcn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_dynamic_image_dims_convert(tmp_path):
    """Dynamic H and W used to be converted at 1x1, which a 3x3 convolution refuses; they get an image size, and
    where the model takes no such size, the error names the shapes chosen and how to give others."""
    source = _fcn(tmp_path / "fcn.onnx")
    conv = unirt.convert(source, to="mnn")
    assert conv.verified and conv.within_tolerance
    sess = unirt.Session(conv, backend="mnn")
    assert sess.inputs[0].shape == ("N", 3, "H", "W")  # MNN resizes: the ONNX dims stay dynamic
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 40)).astype(np.float32)
    (ref,) = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert rel_l2(sess.run(x)["y"], ref) < 1e-5
    fixed = _fcn(tmp_path / "fixed.onnx", flatten_to=8 * 30 * 30)  # takes 32x32 images only
    with pytest.raises(
        unirt.ConversionError,
        match=r"at the shapes unirt chose for its dynamic dims "
        r"\(x=\[1, 3, 224, 224\]\).*input_shapes=\{'x': \[\.\.\.\]\}.*"
        r"--shape x:1x3x224x224",
    ):
        unirt.convert(fixed, to="mnn")
    assert unirt.convert(fixed, to="mnn", input_shapes={"x": [1, 3, 32, 32]}).within_tolerance


def test_a_damaged_cache_entry_is_converted_again(model):
    """A truncated model.mnn in the conversion cache used to fail every load (ModelLoadError) until the user
    cleared the cache: the entry's recorded sizes and hashes no longer match, so it is converted again."""
    source = model("dynamic_mlp")
    first = unirt.convert(source, to="mnn")
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])
    sess = unirt.Session(source, backend="mnn")
    assert not sess.conversion.cached and sess.conversion.path == first.path
    assert first.path.stat().st_size > len(data) // 2  # written whole again
    assert sess.run(np.ones((2, 8), np.float32))["probs"].shape == (2, 3)
