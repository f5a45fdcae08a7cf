"""unirt.precision: CPU arithmetic detection, the storage-only opt-in, the probe cache; Session.precision_info."""

from __future__ import annotations

import json

import numpy as np
import pytest

import unirt
from unirt.errors import UnsupportedOptionError
from unirt.hardware import hardware
from unirt.precision import cached_probe, cpu_arithmetic, storage_only_allowed, storage_only_refusal


def test_cpu_arithmetic_names_the_features_that_decide():
    assert cpu_arithmetic("bf16", "x86_64", frozenset({"avx2", "avx512f", "avx512_bf16"})) == (
        True,
        "CPU has avx512_bf16",
    )
    assert cpu_arithmetic("bf16", "x86_64", frozenset({"amx_bf16", "avx512_bf16"})) == (
        True,
        "CPU has avx512_bf16/amx_bf16",
    )
    native, why = cpu_arithmetic("fp16", "x86_64", frozenset({"avx", "avx2", "f16c", "sse2"}))
    assert not native and why == "CPU lacks avx512_fp16/amx_fp16 (it has avx, avx2, f16c)"
    assert cpu_arithmetic("fp16", "aarch64", frozenset({"neon", "fp16"})) == (True, "CPU has fp16")
    assert cpu_arithmetic("bf16", "aarch64", frozenset({"neon", "fp16"}))[0] is False
    # this machine: the answer follows the features unirt.hardware reads (CPUID / HWCAP)
    hw = hardware()
    assert cpu_arithmetic("bf16")[0] == bool(hw.cpu_features & {"avx512_bf16", "amx_bf16", "bf16"})


def test_the_storage_only_opt_in_is_a_checked_bool():
    assert storage_only_allowed("ncnn", {}) is False
    assert storage_only_allowed("ncnn", {"allow_storage_only_precision": True}) is True
    with pytest.raises(UnsupportedOptionError, match="ncnn: allow_storage_only_precision must be True or False"):
        storage_only_allowed("ncnn", {"allow_storage_only_precision": "true"})
    err = storage_only_refusal("mnn", "fp16", "no fp16 kernels", "1.2x the fp32 time")
    assert isinstance(err, UnsupportedOptionError)
    assert "measured: 1.2x the fp32 time" in str(err) and "{'allow_storage_only_precision': True}" in str(err)


def test_a_probe_runs_once_per_engine_version_and_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path))
    calls = []

    def probe():
        calls.append(1)
        return {"fp16": float(len(calls))}

    assert cached_probe("eng", "1.0", "modes", probe) == {"fp16": 1.0}
    assert cached_probe("eng", "1.0", "modes", probe) == {"fp16": 1.0} and len(calls) == 1
    assert cached_probe("eng", "2.0", "modes", probe) == {"fp16": 2.0} and len(calls) == 2
    files = sorted((tmp_path / "precision-probes").iterdir())
    assert len(files) == 2 and all(hardware().arch in f.name for f in files)
    assert json.loads(files[0].read_text()) == {"fp16": 1.0}
    files[0].write_text("{damaged")
    assert cached_probe("eng", "1.0", "modes", probe) == {"fp16": 3.0}  # unreadable: measured again


def test_session_precision_info_and_explain_say_how_the_precision_was_determined(tmp_path):
    from unirt.testing.models import build

    path = build("matmul_relu", tmp_path)
    sess = unirt.Session(path, backend="openvino")
    assert sess.precision == "fp32"
    assert sess.precision_info.startswith("fp32 (OpenVINO INFERENCE_PRECISION_HINT=f32")
    auto = unirt.Session(path)
    assert auto.precision_info.startswith("fp32 (") and auto.precision_info in str(auto.selection)
    with pytest.raises(UnsupportedOptionError, match="onnxruntime has no bf16 mode"):
        unirt.Session(path, backend="onnxruntime", precision="bf16")
    x = np.ones((64, 64), np.float32)
    np.testing.assert_allclose(sess.run(x)["y"], auto.run(x)["y"], rtol=1e-5, atol=1e-5)


def test_realsize_models_have_the_real_networks_shapes(tmp_path):
    from unirt.testing.realsize import build_realsize

    shapes = {}
    for name in ("resnet_like_224", "mobilenet_like_224", "detector_like_320", "transformer_like_128"):
        sess = unirt.Session(build_realsize(name, tmp_path), backend="onnxruntime")
        shapes[name] = (sess.inputs[0].shape, [o.shape for o in sess.outputs])
    assert shapes["resnet_like_224"] == ((1, 3, 224, 224), [(1, 1000)])
    assert shapes["mobilenet_like_224"] == ((1, 3, 224, 224), [(1, 1000)])
    assert shapes["detector_like_320"] == ((1, 3, 320, 320), [(1, 255, 40, 40), (1, 255, 20, 20), (1, 255, 10, 10)])
    assert shapes["transformer_like_128"] == ((1, 128, 256), [(1, 100)])


def test_explain_without_loading_says_what_the_cpu_offers_for_a_reduced_precision(tmp_path):
    from unirt.testing.models import build

    text = str(unirt.explain(build("matmul_relu", tmp_path), precision="bf16"))
    assert f"precision requested: bf16 ({cpu_arithmetic('bf16')[1]}; the backend confirms at load" in text
    assert "precision requested: fp32\n" in str(unirt.explain(build("matmul_relu", tmp_path)))


def test_an_isolated_session_reports_the_childs_precision_info(tmp_path):
    from unirt.testing.models import build

    path = build("matmul_relu", tmp_path)
    with unirt.Session(path, backend="openvino", isolate=True) as sess:
        assert sess.precision == "fp32"
        assert sess.precision_info == unirt.Session(path, backend="openvino").precision_info
        assert sess.precision_info.startswith("fp32 (OpenVINO INFERENCE_PRECISION_HINT=f32")
    # a refusal decided in the child crosses the process boundary with its reason
    with pytest.raises(UnsupportedOptionError, match="onnxruntime has no bf16 mode"):
        unirt.Session(path, backend="onnxruntime", precision="bf16", isolate=True)
