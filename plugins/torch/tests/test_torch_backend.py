"""What the conformance suite does not cover: the PyTorch formats (detected by content, pickles refused), TorchScript
and AOTInductor packages, symbols shared between inputs, threads, honest precision, and the CUDA paths (TF32 off,
device tensors in and out) where a GPU is present."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import unirt
from unirt.precision import cpu_arithmetic
from unirt.testing.conformance import TOLERANCES, compare, reference_outputs, sample_feeds
from unirt.testing.models import build

NO_CUDA = "no CUDA device here (torch.cuda.is_available() is False): the CUDA checks run in scripts/gpu_check.sh"


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


# -- formats -------------------------------------------------------------------------------------------------------
def test_pickled_objects_are_refused_saying_how_to_export(tmp_path):
    module = _Mlp()
    saved = {"state_dict.pt": module.state_dict(), "module.pt": module}
    for name, obj in saved.items():
        torch.save(obj, tmp_path / name)
    torch.save(module.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in (*saved, "legacy.pt"):
        with pytest.raises(unirt.ModelFormatError) as err:
            unirt.Session(tmp_path / name)
        text = str(err.value)
        assert "pickle" in text and "torch.export.save(torch.export.export(" in text and "torch.jit.script" in text


def test_formats_are_told_apart_by_content_not_suffix(tmp_path, torch_model):
    exported = torch_model("dynamic_mlp")
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(exported.read_bytes())
    assert unirt.open_model(renamed).format is unirt.ModelFormat.TORCH_EXPORT
    assert unirt.open_model(exported.read_bytes()).format is unirt.ModelFormat.TORCH_EXPORT
    torch.jit.script(_Mlp()).save(str(tmp_path / "scripted.model"))
    assert unirt.open_model(tmp_path / "scripted.model").format is unirt.ModelFormat.TORCHSCRIPT
    with unirt.Session(renamed) as sess:  # auto: the torch plugin reads its own formats
        assert sess.backend == "torch"


def test_exported_program_from_bytes_matches_the_file(torch_model, tmp_path):
    path = torch_model("dynamic_mlp")
    feeds = sample_feeds("dynamic_mlp", seed=3, batch=5)
    with unirt.Session(path.read_bytes(), backend="torch") as sess:
        got = sess.run(feeds)
    expected = reference_outputs(build("dynamic_mlp", tmp_path), feeds)
    assert compare(got["probs"], expected["probs"], TOLERANCES["fp32"], "probs") is None


# -- dims ----------------------------------------------------------------------------------------------------------
def test_a_symbol_shared_by_two_inputs_must_agree(torch_model):
    with unirt.Session(torch_model("multi_io"), backend="torch") as sess:
        a, b = sess.inputs[0], sess.inputs[1]
        assert isinstance(a.shape[0], str) and a.shape[0] == b.shape[0]  # torch's symbol, e.g. "s52"
        assert sess.inputs[2].shape[0] != a.shape[0]  # idx has its own
        feeds = sample_feeds("multi_io", seed=1, batch=3)
        feeds["b"] = np.ones((4, 4), np.float32)
        with pytest.raises(unirt.InputError, match=f"dim '{a.shape[0]}' must be the same size everywhere"):
            sess.run(feeds)


def test_an_output_that_is_an_input_is_not_the_callers_array(tmp_path):
    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / "identity.pt2"
    torch.export.save(torch.export.export(Identity(), (torch.ones(2, 3),)), str(path))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with unirt.Session(path, backend="torch") as sess:
        y = next(iter(sess.run(x).values()))
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, x)


# -- TorchScript ---------------------------------------------------------------------------------------------------
def test_torchscript_runs_with_ranks_learned_from_runs(tmp_path):
    module = _Mlp().eval()
    path = tmp_path / "mlp.pt"
    torch.jit.script(module).save(str(path))
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with unirt.Session(path, backend="torch") as sess:
        assert [i.name for i in sess.inputs] == ["x"] and sess.inputs[0].shape is None
        assert sess.outputs[0].shape is None
        y = sess.run(x)["output_0"]
        with torch.no_grad():
            np.testing.assert_allclose(y, module(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-6)
        assert sess.outputs[0].shape == (4, 3)
        sess.run(x[:2])
        assert sess.outputs[0].shape == (None, 3)  # a dim that varied is dynamic


def test_torchscript_integer_inputs_are_declared(tmp_path):
    class Embed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.emb(tokens).sum(1)

    path = tmp_path / "embed.pt"
    torch.jit.script(Embed().eval()).save(str(path))
    tokens = np.array([[1, 2, 3]], np.int64)
    with unirt.Session(path, backend="torch") as sess:  # a TorchScript Tensor argument says no dtype: float32
        with pytest.raises(unirt.InputError, match="expected float32, got int64"):
            sess.run(tokens)
    with unirt.Session(path, backend="torch", backend_options={"input_dtypes": {"tokens": "int64"}}) as sess:
        assert sess.run(tokens)["output_0"].shape == (1, 4)
    with pytest.raises(unirt.UnsupportedOptionError, match="unknown input 'nope'"):
        unirt.Session(path, backend="torch", backend_options={"input_dtypes": {"nope": "int64"}})


# -- AOTInductor ---------------------------------------------------------------------------------------------------
AOTI_TIMEOUT = float(os.environ.get("UNIRT_TEST_AOTI_TIMEOUT", "240"))


@pytest.fixture(scope="module")
def aoti_package():
    """One tiny AOTInductor package per torch version and machine, compiled in a child process (a C++ compile:
    30-120 s) and kept in unirt's cache; skipped with the reason when no compiler or too slow."""
    folder = unirt.cache_dir("torch-test-models")
    path = folder / f"aoti-mlp-{torch.__version__}.pt2"
    if not path.exists():
        script = textwrap.dedent(f"""
            import torch
            torch.manual_seed(0)
            m = torch.nn.Sequential(torch.nn.Linear(8, 3), torch.nn.ReLU()).eval()
            torch.save(m.state_dict(), {str(path) + ".weights"!r})
            ep = torch.export.export(m, (torch.randn(2, 8),), dynamic_shapes=({{0: torch.export.Dim("N", max=64)}},))
            torch._inductor.aoti_compile_and_package(ep, package_path={str(path) + ".tmp.pt2"!r})
        """)
        try:
            done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=AOTI_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.skip(
                f"compiling an AOTInductor package took over {AOTI_TIMEOUT:.0f} s here (UNIRT_TEST_AOTI_TIMEOUT)"
            )
        if done.returncode != 0:
            pytest.skip(f"cannot compile an AOTInductor package here: {done.stderr.strip()[-400:]}")
        os.replace(str(path) + ".tmp.pt2", path)
    return path


def test_aoti_package_runs_and_keeps_its_precision(aoti_package):
    module = torch.nn.Sequential(torch.nn.Linear(8, 3), torch.nn.ReLU()).eval()
    module.load_state_dict(torch.load(str(aoti_package) + ".weights"))
    assert unirt.open_model(aoti_package).format is unirt.ModelFormat.TORCH_AOTI
    with unirt.Session(aoti_package, backend="torch") as sess:
        assert [i.name for i in sess.inputs] == ["input_0"]
        for rows in (5, 1):
            x = np.random.default_rng(rows).standard_normal((rows, 8)).astype(np.float32)
            with torch.no_grad():
                expected = module(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(sess.run(x)["output_0"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(unirt.UnsupportedOptionError, match="compiled at"):
        unirt.Session(aoti_package, backend="torch", precision="fp16")


# -- threads and precision -----------------------------------------------------------------------------------------
def test_threads_are_process_wide_and_said_so(torch_model, caplog):
    before = torch.get_num_threads()
    path = torch_model("dynamic_mlp")
    try:
        with unirt.Session(path, backend="torch", threads=1) as one:
            assert torch.get_num_threads() == 1
            with caplog.at_level(logging.WARNING, logger="unirt_torch.session"):
                with unirt.Session(path, backend="torch", threads=2) as two:
                    assert torch.get_num_threads() == 2
                    assert "process-wide" in two.precision_info and "process-wide" in caplog.text
            assert "process-wide" not in one.precision_info
    finally:
        torch.set_num_threads(before)


def test_fp32_runs_at_highest_matmul_precision_and_restores_the_setting(torch_model, tmp_path):
    feeds = sample_feeds("byte_transformer", seed=2, batch=3)
    expected = reference_outputs(build("byte_transformer", tmp_path), feeds)["logits"]
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # lets oneDNN / cuBLAS use bf16 / TF32 for fp32 matmuls
    try:
        with unirt.Session(torch_model("byte_transformer"), backend="torch") as sess:
            assert sess.precision == "fp32" and "highest" in sess.precision_info
            got = sess.run(feeds)["logits"]
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    assert compare(got, expected, TOLERANCES["fp32"], "logits") is None


def test_reduced_precisions_are_real_or_refused(torch_model, tmp_path):
    path = torch_model("byte_transformer")
    with pytest.raises(unirt.UnsupportedOptionError, match="int8"):
        unirt.Session(path, backend="torch", precision="int8")
    feeds = sample_feeds("byte_transformer", seed=4, batch=2)
    expected = reference_outputs(build("byte_transformer", tmp_path), feeds)["logits"]
    native, why = cpu_arithmetic("bf16")
    if not native:
        with pytest.raises(unirt.UnsupportedOptionError, match="allow_storage_only_precision"):
            unirt.Session(path, backend="torch", precision="bf16")
    options = {} if native else {"allow_storage_only_precision": True}
    with unirt.Session(path, backend="torch", precision="bf16", backend_options=options) as sess:
        assert sess.precision == "bf16" and "autocast cpu bf16" in sess.precision_info
        got = sess.run(feeds)["logits"]
    assert got.dtype == np.float32
    assert compare(got, expected, TOLERANCES["bf16"], "logits") is None
    assert compare(got, expected, TOLERANCES["fp32"], "logits") is not None  # bf16 really computed


def test_device_outputs_need_a_gpu(torch_model):
    with pytest.raises(unirt.UnsupportedOptionError, match="device_outputs"):
        unirt.Session(torch_model("dynamic_mlp"), backend="torch", device="cpu", device_outputs=True)


# -- CUDA (skipped without a GPU) ----------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_fp32_on_cuda_is_not_tf32(tmp_path):
    """A 1024-deep fp32 matmul: TF32 (10-bit mantissa) misses the float64 answer by ~1e-3 relative; fp32 does not."""

    class MatMul(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a @ b

    path = tmp_path / "matmul.pt2"
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((256, 1024)).astype(np.float32), rng.standard_normal((1024, 256)).astype(np.float32))
    torch.export.save(torch.export.export(MatMul(), (torch.from_numpy(a), torch.from_numpy(b))), str(path))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    was = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        tf32 = (torch.from_numpy(a).cuda() @ torch.from_numpy(b).cuda()).cpu().numpy()
        with unirt.Session(path, backend="torch", device="cuda") as sess:
            got = next(iter(sess.run({"a": a, "b": b}).values()))
        assert torch.backends.cuda.matmul.allow_tf32  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32 = was
    err = lambda y: float(np.abs(y - exact).max() / np.abs(exact).max())  # noqa: E731
    assert err(got) < 1e-5 < err(tf32) or err(tf32) < 1e-5, (err(got), err(tf32))  # a GPU without TF32: both fp32
    assert err(got) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_tensors_in_and_out_without_a_host_copy(torch_model):
    with unirt.Session(torch_model("dynamic_mlp"), backend="torch", device="cuda", device_outputs=True) as sess:
        x = torch.randn(4, 8, device="cuda")
        seen = []
        handle = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda m, args: seen.extend(a.data_ptr() for a in args if isinstance(a, torch.Tensor))
        )
        try:
            out = sess.run({"x": x})
        finally:
            handle.remove()
        assert x.data_ptr() in seen
        assert out["probs"].is_cuda and out["probs"].shape == (4, 3)
        host = unirt.Session(torch_model("dynamic_mlp"), backend="torch", device="cpu").run(x.cpu().numpy())
        np.testing.assert_allclose(out["probs"].cpu().numpy(), host["probs"], rtol=1e-5, atol=1e-6)


# -- conversion to ONNX --------------------------------------------------------------------------------------------
def test_onnx_backends_run_an_exported_program_verified_against_torch(torch_model):
    pytest.importorskip("onnxscript", reason="torch's dynamo ONNX exporter needs onnxscript")
    path = torch_model("multi_io")
    with unirt.Session(
        path, backend="onnxruntime", input_shapes={"a": (3, 4), "b": (3, 4), "idx": (4,), "scale": ()}
    ) as sess:
        record = sess.conversion
        assert record is not None and "verified against torch" in str(record), str(record)
        assert [i.name for i in sess.inputs] == ["a", "b", "idx", "scale"]
        assert [o.name for o in sess.outputs] == ["sum", "picked", "count", "mask"]
        feeds = sample_feeds("multi_io", seed=5, batch=3)
        got = sess.run(feeds)
    with unirt.Session(path, backend="torch") as ref:
        expected = ref.run(feeds)
    for name in expected:
        assert compare(got[name], expected[name], TOLERANCES["fp32"], name) is None


def test_formats_without_an_exported_program_do_not_convert(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(_Mlp()).save(str(path))
    with pytest.raises(unirt.ModelFormatError, match="does not read torchscript"):
        unirt.Session(path, backend="onnxruntime")
