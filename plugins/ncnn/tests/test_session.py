"""unirt.Session on the real ncnn, with models converted from ONNX by pnnx (through unirt.convert)."""

from __future__ import annotations

import shutil

import ncnn
import numpy as np
import onnxruntime as ort
import pytest

import unirt
from unirt import InputError, ModelLoadError, UnsupportedOptionError
from unirt.testing.threads import run_concurrently


def ort_run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


@pytest.mark.slow
def test_converted_squeezenet_matches_the_conformance_outputs(converted, squeezenet):
    conv = converted("squeezenet")
    sess = unirt.Session(conv, backend="ncnn", device="cpu")
    assert [(i.name, i.shape) for i in sess.inputs] == [("data_0", (1, 3, 224, 224))]
    assert sess.outputs[0].name == "softmaxout_1" and sess.precision == "fp32"
    got = sess.run(squeezenet.inputs[0])["softmaxout_1"]
    np.testing.assert_allclose(got, squeezenet.outputs[0], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3, 17, 0])
def test_batch_n_runs_sample_by_sample(converted, model, batch):
    sess = unirt.Session(converted("dynamic_mlp"), backend="ncnn")
    assert sess.inputs[0].shape == ("N", 8)
    x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
    got = sess.run(x)
    logits, probs = ort_run(model("dynamic_mlp"), {"x": x})
    assert got["logits"].shape == (batch, 3) and got["probs"].shape == (batch, 3)
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["probs"], probs, rtol=1e-5, atol=1e-6)


def test_fp16_is_off_unless_asked_for(converted):
    """fp16 is ncnn's arithmetic only on ARM CPUs with asimdhp; elsewhere it is storage only: refused with the
    measurement unless backend_options allow_storage_only_precision=True (intentional change, issue 18)."""
    path = converted("squeezenet").path
    sess = unirt.Session(path, backend="ncnn")
    opt = sess._runner._net.opt
    assert not (opt.use_fp16_storage or opt.use_fp16_arithmetic or opt.use_fp16_packed or opt.use_bf16_storage)
    assert sess.precision == "fp32" and sess.precision_info.startswith("fp32 (ncnn")
    native = ncnn.cpu_support_arm_asimdhp()
    if not native:
        with pytest.raises(
            UnsupportedOptionError,
            match=r"fp16 only on ARM CPUs with asimdhp.*measured: [0-9.-]+x "
            r"the fp32 time.*allow_storage_only_precision",
        ):
            unirt.Session(path, backend="ncnn", precision="fp16")
    fast = unirt.Session(
        path, backend="ncnn", precision="fp16", backend_options={} if native else {"allow_storage_only_precision": True}
    )
    opt = fast._runner._net.opt
    assert opt.use_fp16_storage and opt.use_fp16_arithmetic and fast.precision == "fp16"
    assert ("storage only" in fast.precision_info) != native
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    assert rel_l2(fast.run(x)["softmaxout_1"], sess.run(x)["softmaxout_1"]) < 1e-2
    with pytest.raises(UnsupportedOptionError, match="int8' needs a model quantized with ncnn2int8"):
        unirt.Session(path, backend="ncnn", precision="int8")


def test_temporary_inputs_give_the_same_answers(converted, model):
    """ncnn.Mat(ndarray) wraps memory that a temporary frees before extract reads it (rel-L2 0.26 measured);
    unirt copies inputs into Mats ncnn owns, so temporaries and garbage between runs change nothing."""
    sess = unirt.Session(converted("dynamic_mlp"), backend="ncnn")
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(20)]
    for x in xs:
        got = sess.run(x.copy())["logits"]  # the only reference to the copy is the feed
        _ = [np.full((4, 8), 1e6, np.float32) for _ in range(10)]  # reuse freed memory
        np.testing.assert_allclose(got, ort_run(model("dynamic_mlp"), {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_strided_views_and_float64(converted):
    sess = unirt.Session(converted("dynamic_mlp"), backend="ncnn")
    base = np.random.default_rng(2).standard_normal((8, 16)).astype(np.float32)
    view = base[::2, ::2]
    np.testing.assert_array_equal(sess.run(view)["logits"], sess.run(np.ascontiguousarray(view))["logits"])
    with pytest.raises(InputError, match="expected float32, got float64"):
        sess.run(view.astype(np.float64))


def test_tiny_channels_need_aligned_mats(converted, model):
    """A 3x1x1 sample wrapped by ncnn.Mat(ndarray) has an unaligned channel step and crashes ncnn's packed
    kernels (SIGSEGV); unirt's own Mats are aligned."""
    conv = converted("unknown_dims", input_shapes={"x": [1, 3, 1, 1]})
    sess = unirt.Session(conv, backend="ncnn")
    x = np.arange(6, dtype=np.float32).reshape(2, 3, 1, 1)
    np.testing.assert_array_equal(sess.run(x)["y"], x * 2)


def test_outputs_are_not_overwritten_by_the_next_run(converted):
    sess = unirt.Session(converted("dynamic_mlp"), backend="ncnn")
    first = sess.run(np.ones((2, 8), np.float32))["probs"]
    kept = first.copy()
    sess.run(np.full((2, 8), 5, np.float32))
    np.testing.assert_array_equal(first, kept)


def test_a_plain_ncnn_model_without_the_conversion_sidecar(converted, squeezenet, tmp_path):
    conv = converted("squeezenet")
    shutil.copy(conv.path, tmp_path / "sq.param")
    shutil.copy(conv.path.with_suffix(".bin"), tmp_path / "sq.bin")
    sess = unirt.Session(tmp_path / "sq.param", backend="ncnn")
    # pnnx writes no input shape: the channels come from the first Convolution's weights, H and W stay open (and
    # untied: no made-up names); the .param records no output shapes, so their rank is unknown until a run
    assert [(i.name, i.shape) for i in sess.inputs] == [("in0", ("N", 3, None, None))]
    assert [(o.name, o.rank) for o in sess.outputs] == [("out0", None)]
    sized = unirt.Session(
        tmp_path / "sq.param", backend="ncnn", backend_options={"input_shapes": {"in0": [3, 224, 224]}}
    )
    assert sized.inputs[0].shape == ("N", 3, 224, 224)
    x = np.concatenate([squeezenet.inputs[0]] * 2)
    got = sized.run(x)["out0"]
    assert sized.outputs[0].shape == got.shape  # recorded by the run
    np.testing.assert_allclose(
        got.reshape(2, -1), np.concatenate([squeezenet.outputs[0]] * 2).reshape(2, -1), rtol=1e-3, atol=1e-5
    )


def test_damaged_models_are_refused_before_ncnn_sees_them(converted, tmp_path):
    conv = converted("dynamic_mlp")
    param = conv.path.read_text()
    weights = conv.path.with_suffix(".bin").read_bytes()

    def write(name, text, bin_bytes=weights):
        (tmp_path / f"{name}.param").write_text(text)
        if bin_bytes is not None:
            (tmp_path / f"{name}.bin").write_bytes(bin_bytes)
        return tmp_path / f"{name}.param"

    with pytest.raises(ModelLoadError, match=r"weights file .*nobin\.bin is missing"):
        unirt.Session(write("nobin", param, None), backend="ncnn")
    with pytest.raises(ModelLoadError, match="could not read the weights"):
        unirt.Session(write("short", param, weights[: len(weights) // 2]), backend="ncnn")
    with pytest.raises(ModelLoadError, match="unknown layer type 'NoSuchLayer'"):
        unirt.Session(write("unknown", param.replace("InnerProduct", "NoSuchLayer")), backend="ncnn")
    lines = param.splitlines()
    with pytest.raises(ModelLoadError, match="declares .* layers but the file has"):
        unirt.Session(write("cut", "\n".join(lines[:-1])), backend="ncnn")
    swapped = "\n".join(lines[:2] + [lines[3], lines[2]] + lines[4:])
    with pytest.raises(ModelLoadError, match="which no earlier layer writes"):
        unirt.Session(write("order", swapped), backend="ncnn")


def test_options(converted):
    path = converted("dynamic_mlp").path
    sess = unirt.Session(path, backend="ncnn", threads=2, backend_options={"use_winograd_convolution": False})
    assert sess._runner._net.opt.num_threads == 2 and sess._runner._net.opt.use_winograd_convolution is False
    with pytest.raises(UnsupportedOptionError, match="unknown backend option"):
        unirt.Session(path, backend="ncnn", backend_options={"nope": 1})
    # The Vulkan device is device="gpu:N"; a "vulkan_device" option was once accepted and silently ignored.
    with pytest.raises(UnsupportedOptionError, match="unknown backend option.*vulkan_device"):
        unirt.Session(path, backend="ncnn", backend_options={"vulkan_device": 1})
    with pytest.raises(UnsupportedOptionError, match="cannot run on cuda"):
        unirt.Session(path, backend="ncnn", device="cuda")


def test_concurrent_runs(converted):
    sess = unirt.Session(converted("dynamic_mlp"), backend="ncnn")
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(4)]
    expected = [sess.run(x)["probs"] for x in xs]

    def worker(i):
        for _ in range(30):
            np.testing.assert_array_equal(sess.run(xs[i])["probs"], expected[i])

    run_concurrently(worker, 4)


def _in_a_child(code, *args):
    """Run `code` in a fresh interpreter: a use-after-free in ncnn aborts or segfaults the process."""
    import subprocess
    import sys
    import tempfile

    # cwd away from the checkout: `-c` puts the cwd first on sys.path, and the source tree has no compiled core
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )


# An Extractor and the Mats it made hold memory of the net's allocators; freeing the net first makes ncnn print
# "pool allocator destroyed too early" and crash when they go.
_FAILED_RUN_THEN_CLOSE = """
import gc, sys
import numpy as np
import unirt
sess = unirt.Session(sys.argv[1], backend="ncnn")
try:
    sess.run(np.ones((1, 16, 1, 1), np.float32))
except unirt.RunError as exc:
    error = exc  # its traceback keeps the failed run's frames
print(error)
sess.close()
del sess, error
gc.collect()
print("survived")
"""


def test_a_failed_run_then_close_does_not_crash(tmp_path):
    """out0 is extracted, then out1 fails (a Reshape whose expression ncnn cannot evaluate): the RunError's
    traceback must not keep the extractor and out0's Mat alive past the net."""
    (tmp_path / "fails.param").write_text(
        "7767517\n4 5\n"
        "Input in0 0 1 in0 0=1 1=1 2=16\n"
        "Split split0 1 2 in0 a b\n"
        "BinaryOp mul0 1 1 a out0 0=2 1=1 2=2.0\n"
        'Reshape reshape0 1 1 b out1 12=0 13=0 6="1,1,//(32,0n),0n"\n'
    )
    (tmp_path / "fails.bin").write_bytes(b"")
    done = _in_a_child(_FAILED_RUN_THEN_CLOSE, tmp_path / "fails.param")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "extracting 'out1' (blob 'out1') failed" in done.stdout and "survived" in done.stdout


_CLOSE_WHILE_RUNNING = """
import sys, threading, time
import numpy as np
import unirt
sess = unirt.Session(sys.argv[1], backend="ncnn")
x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
expected = sess.run(x)["probs"]
outcomes, started = [], threading.Barrier(9)

def work():
    started.wait()
    while True:
        try:
            got = sess.run(x)["probs"]
        except unirt.SessionClosedError:
            outcomes.append("closed")
            return
        except Exception as exc:
            outcomes.append(repr(exc))
            return
        if not np.array_equal(got, expected):
            outcomes.append("wrong result")
            return

threads = [threading.Thread(target=work, daemon=True) for _ in range(8)]
for t in threads:
    t.start()
started.wait()
time.sleep(0.1)
sess.close()
for t in threads:
    t.join(60)
print(sorted(outcomes), sum(t.is_alive() for t in threads))
"""


def test_close_while_other_threads_run(converted):
    """close() used to clear the net under the other threads' extractors (abort, then SIGSEGV)."""
    done = _in_a_child(_CLOSE_WHILE_RUNNING, converted("dynamic_mlp").path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == f"{['closed'] * 8} 0"


def _elementwise_first(path, op):
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"])],
        op.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 5])],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Exp"])
def test_in_place_first_layers_get_a_copy(tmp_path, converted, op):
    """A Mat wrapping the caller's array has no reference count, and ncnn dereferences it (SIGSEGV) before an
    in-place layer (ReLU, Sigmoid, ...) works on an input blob: such inputs are copied; a convolution's are not."""
    source = _elementwise_first(tmp_path / f"{op}.onnx", op)
    sess = unirt.Session(source, backend="ncnn")
    assert sess._runner._wrap == {"in0": False}
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    kept = x.copy()
    np.testing.assert_allclose(sess.run(x)["y"], ort_run(source, {"x": x})[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x, kept)  # not written in place either
    assert unirt.Session(converted("squeezenet"), backend="ncnn")._runner._wrap == {"in0": True}


def test_a_static_batch_of_two_runs_sample_by_sample():
    """pnnx drops a batch axis it can prove (a convolution's), whatever its size; it records that in its script and
    unirt keeps it in the conversion's sidecar, so a static batch of 2 runs as two samples (it used to be handed
    to ncnn whole: wrong shapes, or a SIGSEGV in a depthwise convolution)."""
    from unirt import testing
    from unirt.conversion.signature import read_sidecar

    for name in ("pytorch-converted/test_Conv2d", "pytorch-converted/test_Conv2d_depthwise"):
        case = next(c for c in testing.conformance_cases(("pytorch-converted",)) if c.name == name)
        sess = unirt.Session(case.model, backend="ncnn")
        assert read_sidecar(sess.conversion.path)["batch_axes"] == {"in0": 0, "out0": 0}
        assert sess.inputs[0].shape[0] == 2
        got = sess.run(case.inputs[0])
        np.testing.assert_allclose(list(got.values())[0], case.outputs[0], rtol=1e-4, atol=1e-5)


def test_batched_inputs_must_agree_on_the_batch_size(tmp_path):
    """ncnn runs a batch sample by sample: inputs a[N, 4] and b[M, 4] with different batch sizes used to run with
    the first one's (b's extra rows ignored, a batch of 1 not broadcast, an IndexError past its end)."""
    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["a", "W"], ["am"]),
        helper.make_node("MatMul", ["b", "W"], ["bm"]),
        helper.make_node("Add", ["am", "bm"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["M", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    path = tmp_path / "two.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    sess = unirt.Session(path, backend="ncnn")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        sess.run({"a": a, "b": b})["y"], ort_run(path, {"a": a, "b": b})[0], rtol=1e-5, atol=1e-5
    )
    for na, nb in [(1, 2), (2, 3), (2, 1)]:
        with pytest.raises(InputError, match=f"same batch size: 'a' has {na}, 'b' has {nb}"):
            sess.run({"a": a[:na], "b": b[:nb]})
