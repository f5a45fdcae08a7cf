"""TensorRT on this machine: installed as a plugin, unavailable with the exact reason, and every entry point
fails with that reason instead of crashing. Where TensorRT and a GPU are present, a real build-and-run check."""

from __future__ import annotations

import importlib.util
import py_compile
from pathlib import Path

import numpy as np
import pytest

import unirt
from unirt import hardware, testing
from unirt_tensorrt.backend import TensorRTBackend, unavailable_reason

REASON, _ = unavailable_reason()
needs_gpu = pytest.mark.skipif(REASON is not None, reason=f"TensorRT cannot run here: {REASON}")


def test_registered_with_its_formats():
    info = {b.name: b for b in unirt.backends()}["tensorrt"]
    assert info.installed and info.distribution == "unirt-tensorrt"
    assert set(info.formats) == {"onnx", "tensorrt"}


@pytest.mark.skipif(REASON is None, reason="TensorRT is usable here")
def test_unavailable_with_the_exact_reason(tmp_path):
    avail = TensorRTBackend().probe()
    assert not avail.available and avail.reason == REASON
    if importlib.util.find_spec("tensorrt") is None:
        assert "cannot import tensorrt: ModuleNotFoundError: No module named 'tensorrt'" in avail.reason
        assert "pip install './plugins/tensorrt[engine]'" in avail.reason
    if not hardware().cuda_gpus:
        assert "no CUDA GPU" in avail.reason
    path = testing.build("dynamic_mlp", tmp_path)
    with pytest.raises(
        unirt.BackendUnavailableError, match="backend 'tensorrt' cannot run here: .*" + avail.reason.split(":")[0]
    ):
        unirt.Session(path, backend="tensorrt")
    with pytest.raises(unirt.ConversionError, match="tensorrt cannot build engines here"):
        TensorRTBackend().convert(unirt.open_model(path), tmp_path, unirt.LoadOptions())
    # auto-selection skips it and says why
    skipped = {c.backend: c for c in unirt.explain(path).candidates}["tensorrt"]
    assert not skipped.eligible and ("no CUDA GPU" in skipped.reason or "cannot import" in skipped.reason)


def test_gpu_modules_compile():
    """The runner, builder and CUDA glue import tensorrt/cuda-python at module level; compile them at least."""
    import unirt_tensorrt

    for name in ("session.py", "builder.py", "cuda.py"):
        py_compile.compile(str(Path(unirt_tensorrt.__file__).parent / name), doraise=True)


@needs_gpu
def test_builds_and_runs_an_onnx_model_against_onnxruntime(tmp_path, monkeypatch):
    from unirt.testing.conformance import reference_outputs, sample_feeds

    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    path = testing.build("dynamic_mlp", tmp_path)
    sess = unirt.Session(path, backend="tensorrt", backend_options={"max_batch": 8})
    assert sess.device.startswith("cuda") and sess.precision == "fp32"
    for batch in (1, 8, 3):
        feeds = sample_feeds("dynamic_mlp", seed=batch, batch=batch)
        ref = reference_outputs(path, feeds)
        np.testing.assert_allclose(sess.run(feeds)["probs"], ref["probs"], rtol=1e-4, atol=1e-5)
    assert list((tmp_path / "cache" / "tensorrt" / "engines").glob("*.engine"))
    feeds = sample_feeds("dynamic_mlp", seed=9, batch=9)  # above the engine's max: the Session splits it
    np.testing.assert_allclose(sess.run(feeds)["probs"], reference_outputs(path, feeds)["probs"], rtol=1e-4, atol=1e-5)
    assert sess.batch_stats().split_requests == 1
    unsplit = unirt.Session(path, backend="tensorrt", backend_options={"max_batch": 8}, batched=False)
    with pytest.raises(unirt.InputError, match="outside the TensorRT engine's profile"):
        unsplit.run(np.ones((9, 8), np.float32))


@needs_gpu
def test_fp16_builds_on_this_tensorrt_version_and_agrees_with_onnxruntime(tmp_path, monkeypatch):
    """fp16 on 10: BuilderFlag.FP16; on 11: the fp16 ONNX conversion (verified, cached) in a strongly typed network.
    Either way the engine's outputs agree with ONNX Runtime's fp32 ones within the fp16 tolerance."""
    import tensorrt as trt

    from unirt.conversion import TOLERANCES
    from unirt_tensorrt.plan import parse_version

    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    path = testing.batched_cnn(tmp_path / "cnn.onnx")
    sess = unirt.Session(path, backend="tensorrt", precision="fp16", backend_options={"max_batch": 4})
    eleven = parse_version(trt.__version__)[0] >= 11
    assert ("strongly typed" in sess.precision_info) == eleven, sess.precision_info
    assert ("BuilderFlag FP16" in sess.precision_info) == (not eleven), sess.precision_info
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    ref = unirt.Session(path, backend="onnxruntime").run({"x": x})
    got = sess.run({"x": x})
    for name, r in ref.items():
        assert np.linalg.norm(got[name] - r) / np.linalg.norm(r) < TOLERANCES["fp16"], name
    if eleven:  # the conversion it was built from is in the conversion cache
        assert list((tmp_path / "cache" / "conversions").glob("*/model.onnx"))
