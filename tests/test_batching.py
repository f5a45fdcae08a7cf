"""Static vs dynamic batch: detection, gather/scatter, padding/splitting and run_many against one-by-one runs on
real ONNX Runtime sessions."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import unirt
import unirt.testing
from unirt import BatchSpec, InputError, TensorInfo, UnsupportedOptionError


def T(name, shape, dtype=np.float32):
    return TensorInfo(name, shape, dtype)


@pytest.mark.parametrize(
    "inputs, outputs, expected",
    [
        ([T("x", (1, 3))], [T("y", (1, 2))], ("static", 1)),  # the usual batch-1 export
        ([T("x", (4, 3))], [T("y", (4, 2))], ("none", None)),  # fixed at N > 1: only with batched=True
        ([T("x", ("N", 3)), T("m", ("N",), np.int64)], [T("y", ("N", 2))], ("dynamic", None)),
        ([T("x", ("N", 3))], [T("y", ("M", 2))], ("none", None)),  # output dim 0 is something else
        ([T("x", ("N", 3))], [T("y", (None, 2))], ("none", None)),  # unnamed here, named there
        ([T("x", (None, 3))], [T("y", (None, 2))], ("none", None)),  # unnamed: only with batched=True
        ([T("x", ("N", "F"))], [T("y", ("F", "N"))], ("none", None)),  # a transpose: N is not dim 0 of y
        ([T("x", (4, 3))], [T("y", (3,))], ("none", None)),  # dim 0 differs
        ([T("x", ("N", 3)), T("s", ())], [T("y", ("N",))], ("none", None)),  # a scalar input
        ([T("x", (4, 3))], [T("y", ("N", 2))], ("none", None)),  # fixed on one side, dynamic on the other
        ([T("s", ("N",), object)], [T("y", ("N",), object)], ("none", None)),
    ],
)
def test_batch_spec_detection(inputs, outputs, expected):
    spec = BatchSpec.detect(inputs, outputs)
    assert (spec.kind, spec.size) == expected
    assert spec.batched == (expected[0] != "none")
    if not spec.batched:
        assert spec.reason


def test_batch_spec_overrides():
    inputs, outputs = [T("x", ("N", 3))], [T("y", (None, 2))]
    assert not BatchSpec.detect(inputs, outputs).batched
    assert BatchSpec.detect(inputs, outputs, batched=True).kind == "dynamic"
    assert BatchSpec.detect([T("x", (None, 3))], [T("y", (None, 2))], batched=True).kind == "dynamic"
    renamed = [T("x", ("input_dynamic_axes_1", 3))], [T("y", ("output_dynamic_axes_1", 2))]  # torch's own names
    assert "batched=True" in BatchSpec.detect(*renamed).reason
    assert (BatchSpec.detect(*renamed, batched=True).kind, BatchSpec.detect(*renamed, batched=True).symbol) == (
        "dynamic",
        None,
    )
    static = BatchSpec.detect([T("x", (4, 3))], [T("y", (4, 2))], batched=True)
    assert (static.kind, static.size) == ("static", 4)
    assert "batched=True" in BatchSpec.detect([T("x", (4, 3))], [T("y", (4, 2))]).reason
    assert BatchSpec.detect([T("x", (4, 3))], [T("y", (4, 2))], batched=False).kind == "none"
    with pytest.raises(UnsupportedOptionError, match="no batch dim"):
        BatchSpec.detect([T("x", ())], [T("y", ())], batched=True)


# -- gather / scatter ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.uint8, np.bool_])
@pytest.mark.parametrize("threads", [1, 4])
def test_gather_matches_concatenate(dtype, threads):
    rng = np.random.default_rng(0)
    parts = [(rng.standard_normal((n, 5, 7)) * 10).astype(dtype) for n in (3, 0, 1, 6)]
    batch = unirt.gather(parts, threads=threads)
    np.testing.assert_array_equal(batch, np.concatenate(parts))
    padded = unirt.gather(parts, rows=13, threads=threads)
    np.testing.assert_array_equal(padded[:10], np.concatenate(parts))
    assert not padded[10:].any()
    pool = unirt.BufferPool()
    pooled = unirt.gather(parts, rows=10, empty=pool.empty_raw, threads=threads)
    assert pool.stats().blocks_live == 1 and np.array_equal(pooled, batch)


def test_gather_takes_non_contiguous_parts_and_large_threaded_copies():
    base = np.arange(4 * 6 * 512, dtype=np.float64).reshape(4, 6, 512)
    parts = [base[:, ::2], base[::-1, 1::2]]
    np.testing.assert_array_equal(unirt.gather(parts), np.concatenate(parts))
    big = [np.random.default_rng(i).standard_normal((64, 128, 128)).astype(np.float32) for i in range(3)]  # 12 MB
    np.testing.assert_array_equal(unirt.gather(big, threads=4), np.concatenate(big))


@pytest.mark.parametrize("threads", [1, 3])
def test_scatter_into_arrays_and_views(threads):
    batch = np.random.default_rng(1).standard_normal((10, 4, 33)).astype(np.float32)
    outs = [np.empty((n, 4, 33), np.float32) for n in (2, 5, 3)]
    assert unirt.scatter(batch, outs, threads=threads) is not None
    np.testing.assert_array_equal(np.concatenate(outs), batch)
    views = unirt.scatter(batch, [4, 6])
    assert views[0].base is batch and np.array_equal(views[1], batch[4:])


def test_gather_scatter_release_the_gil():
    """Large copies in 4 threads finish while another thread runs Python code: the GIL is released."""
    parts = [np.ones((256, 1024, 16), np.float32) for _ in range(4)]  # 64 MB
    out = np.empty((1024, 1024, 16), np.float32)
    ticks = []
    stop = threading.Event()

    def python_loop():
        while not stop.is_set():
            ticks.append(1)

    t = threading.Thread(target=python_loop)
    t.start()
    try:
        for _ in range(5):
            unirt.gather(parts, out=out, threads=4)
    finally:
        stop.set()
        t.join()
    assert out.all() and len(ticks) > 0


def test_gather_scatter_errors_are_clear():
    with pytest.raises(InputError, match=r"parts\[1\] is float32\[2, 4\]"):
        unirt.gather([np.ones((1, 3), np.float32), np.ones((2, 4), np.float32)])
    with pytest.raises(InputError, match="more than rows=2"):
        unirt.gather([np.ones((3, 3), np.float32)], rows=2)
    with pytest.raises(InputError, match="scalar"):
        unirt.gather([np.array(1.0, np.float32)])
    with pytest.raises(InputError, match="dtype"):
        unirt.gather([np.ones((1, 3), np.float64)], out=np.empty((2, 3), np.float32))
    with pytest.raises(InputError, match="do not fit"):
        unirt.scatter(np.ones((3, 2)), [2, 2])
    with pytest.raises(InputError, match=r"got a dict \(a dict of outputs: scatter each output array"):
        unirt.scatter({"y": np.ones((3, 2))}, [1, 2])  # Session.run's result, not one of its arrays
    with pytest.raises(InputError, match="got a 0-d array"):
        unirt.scatter(np.zeros(()), [1])
    with pytest.raises(InputError, match="take 4 rows"):
        unirt.scatter(np.ones((3, 2)), [np.empty((4, 2))])
    with pytest.raises(InputError, match="read-only"):
        ro = np.empty((3, 2))
        ro.flags.writeable = False
        unirt.scatter(np.ones((3, 2)), [ro])


# -- sessions on real models -----------------------------------------------------------------------------------
def requests(rows, seed=0, size=32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, 3, size, size)).astype(np.float32) for n in rows]


@pytest.fixture(scope="module")
def static_conv(conv_model):
    return unirt.Session(conv_model("static"), backend="onnxruntime", threads=1, batched=True)


@pytest.fixture(scope="module")
def dynamic_conv(conv_model):
    return unirt.Session(conv_model("dynamic"), backend="onnxruntime", threads=1)


def assert_same(got, expected):
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].shape == expected[name].shape, name
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_static_model_knows_its_batch(static_conv, dynamic_conv):
    assert static_conv.batch.kind == "static" and static_conv.batch.size == 4
    assert dynamic_conv.batch.kind == "dynamic" and dynamic_conv.batch.symbol == "N"
    assert "static batch of 4" in str(static_conv.batch)


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 8, 11])
def test_static_batch_pads_and_splits_like_the_dynamic_model(static_conv, dynamic_conv, rows):
    x = requests([rows], seed=rows)[0]
    before = static_conv.batch_stats()
    got = static_conv.run(x)
    after = static_conv.batch_stats()
    assert_same(got, dynamic_conv.run(x))  # the same weights, run on exactly `rows` rows
    runs = -(-rows // 4) if rows != 4 else 0  # a request of exactly N rows takes the plain path
    assert after.backend_runs - before.backend_runs == runs
    assert after.padded_rows - before.padded_rows == (runs * 4 - rows if runs else 0)
    # and row by row on the static model itself: each row padded alone
    for i in range(rows):
        row = static_conv.run(x[i : i + 1])
        np.testing.assert_allclose(got["pooled"][i : i + 1], row["pooled"], rtol=1e-5, atol=1e-6)


def test_padding_waste_is_reported(conv_model):
    sess = unirt.Session(conv_model("static"), backend="onnxruntime", batched=True)
    sess.run(requests([1])[0])
    sess.run(requests([6])[0])
    s = sess.batch_stats()
    assert (s.requests, s.backend_runs, s.rows, s.padded_rows, s.split_requests) == (2, 3, 7, 5, 1)
    assert s.padding_waste == pytest.approx(5 / 12)


def test_static_batch_with_out_arrays(static_conv, dynamic_conv):
    x = requests([6], seed=9)[0]
    features = np.empty((6, 16, 32, 32), np.float32)
    got = static_conv.run(x, out={"features": features})
    assert got["features"] is features
    assert_same(got, dynamic_conv.run(x))
    with pytest.raises(InputError, match="expected 6 rows"):
        static_conv.run(x, out={"features": np.empty((4, 16, 32, 32), np.float32)})


@pytest.mark.parametrize("rows", [[1, 2, 3], [4, 4], [5, 1, 7, 2], [0, 3], [9]])
def test_run_many_equals_one_by_one(static_conv, dynamic_conv, rows):
    xs = requests(rows, seed=sum(rows))
    for sess in (static_conv, dynamic_conv):
        before = sess.batch_stats()
        many = sess.run_many(xs)
        after = sess.batch_stats()
        assert len(many) == len(xs)
        for got, x in zip(many, xs):
            assert_same(got, dynamic_conv.run(x))
        limit = -(-sum(rows) // 4) if sess is static_conv else 1
        assert after.backend_runs - before.backend_runs == max(1, limit)


def test_run_many_groups_requests_by_shape(tmp_path):
    any_size = unirt.Session(unirt.testing.batched_cnn(tmp_path / "conv_hw.onnx", size=None), backend="onnxruntime")
    assert any_size.inputs[0].shape == ("N", 3, "H", "W")
    xs = requests([2, 1], seed=4) + requests([3], seed=5, size=16) + requests([1], seed=6)
    many = any_size.run_many(xs)
    assert any_size.batch_stats().backend_runs == 2  # the 32x32 requests together, the 16x16 one apart
    for got, x in zip(many, xs):
        assert_same(got, any_size.run(x))


def test_run_many_results_share_a_pooled_batch(conv_model):
    sess = unirt.Session(conv_model("dynamic"), backend="onnxruntime")
    many = sess.run_many(requests([2, 2, 2]))
    assert many[0]["features"].base is many[2]["features"].base  # views of one batch buffer ...
    assert not np.shares_memory(many[0]["features"], many[2]["features"])  # ... each of its own rows
    blocks = sess.pool.stats().blocks_live
    del many[:2]
    assert sess.pool.stats().blocks_live == blocks  # the last request's view still holds the batch
    many.clear()
    assert sess.pool.stats().blocks_live == 0


def test_run_many_writes_into_out_arrays(static_conv, dynamic_conv):
    xs = requests([3, 2], seed=11)
    outs = [{"pooled": np.empty((n, 16, 1, 1), np.float32)} for n in (3, 2)]
    many = static_conv.run_many(xs, out=[outs[0], outs[1]])
    for got, x, o in zip(many, xs, outs):
        assert got["pooled"] is o["pooled"]
        assert_same(got, dynamic_conv.run(x))
    with pytest.raises(InputError, match="one dict"):
        static_conv.run_many(xs, out=[None])


def test_max_batch_splits_dynamic_requests(dynamic_conv, conv_model):
    sess = unirt.Session(conv_model("dynamic"), backend="onnxruntime", max_batch=3)
    x = requests([8], seed=12)[0]
    assert_same(sess.run(x), dynamic_conv.run(x))
    s = sess.batch_stats()
    assert (s.backend_runs, s.padded_rows, s.split_requests) == (3, 0, 1)
    many = sess.run_many(requests([2, 2, 2], seed=13))
    assert sess.batch_stats().backend_runs == 5  # 6 rows in runs of at most 3
    assert len(many) == 3
    with pytest.raises(UnsupportedOptionError, match="dynamic batch dim"):
        unirt.Session(conv_model("static"), backend="onnxruntime", max_batch=2)
    with pytest.raises(UnsupportedOptionError, match="max_batch must be"):
        unirt.Session(conv_model("dynamic"), backend="onnxruntime", max_batch=0)
    with pytest.raises(UnsupportedOptionError, match="batched must be"):
        unirt.Session(conv_model("dynamic"), backend="onnxruntime", batched=1)


def test_batched_false_keeps_static_dims_strict(conv_model):
    sess = unirt.Session(conv_model("static"), backend="onnxruntime", batched=False)
    with pytest.raises(InputError, match="dim 0 is static"):
        sess.run(requests([3])[0])
    xs = requests([4, 4])
    assert len(sess.run_many(xs)) == 2  # no batch dim: one run per request
    assert sess.batch_stats().requests == 0


def test_run_many_checks_each_request(dynamic_conv, static_conv):
    with pytest.raises(InputError, match=r"request 1: input 'x': expected float32"):
        dynamic_conv.run_many([requests([1])[0], np.ones((1, 3, 32, 32))])
    with pytest.raises(InputError, match="list of requests"):
        dynamic_conv.run_many(requests([1])[0])
    with pytest.raises(InputError, match=r"request 0: input 'x': expected shape"):
        static_conv.run_many([np.ones((2, 3, 16, 16), np.float32)])
    assert dynamic_conv.run_many([]) == []


def test_inputs_must_agree_on_the_batch(test_plugins, tmp_path):
    """A static-batch model with two inputs: both must have the same number of rows."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "add",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    path = tmp_path / "add.onnx"
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    sess = unirt.Session(path, backend="reference", batched=True)  # no run_into: outputs cut from its arrays
    a, b = np.arange(15, dtype=np.float32).reshape(5, 3), np.ones((5, 3), np.float32)
    np.testing.assert_array_equal(sess.run({"a": a, "b": b})["y"], a + b)
    assert sess.batch_stats().backend_runs == 3
    with pytest.raises(InputError, match="disagree on the batch size"):
        sess.run({"a": a, "b": np.ones((2, 3), np.float32)})
    with pytest.raises(InputError, match="disagree on the batch size"):
        sess.run({"a": a, "b": np.ones((4, 3), np.float32)})


def test_an_unnamed_dim_0_that_is_not_a_batch_is_never_cut(tmp_path, caplog):
    """dim 0 unnamed on input and output, but the output's rows are the input's nonzero entries: never cut into
    wrong per-request pieces. run_many never fails where run works: the packed run is refused, and the requests
    run one by one (issue 13 item 7; this used to raise), counted and warned once."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Transpose", ["nz"], ["y"], perm=[1, 0])],
        "nonzero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [None, 2])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(tmp_path / "nonzero.onnx"))
    requests_ = [np.ones((2, 4), np.float32), np.ones((3, 4), np.float32)]
    sess = unirt.Session(tmp_path / "nonzero.onnx", backend="onnxruntime", batched=True)
    assert sess.batch.kind == "dynamic" and sess.batch.symbol is None
    with caplog.at_level("WARNING", logger="unirt.batch_runner"):
        first = sess.run_many(requests_)
        again = sess.run_many(requests_)
    assert [r["y"].shape for r in first] == [r["y"].shape for r in again] == [(8, 2), (12, 2)]
    for request, result in zip(requests_, first):
        np.testing.assert_array_equal(result["y"], sess.run(request)["y"])
    assert sum("does not keep the batch dim" in r.getMessage() for r in caplog.records) == 1
    assert sess.batch_stats().unbatched_requests == 4
    for batched in (None, False):  # unnamed is not taken as a batch dim unless asserted
        plain = unirt.Session(tmp_path / "nonzero.onnx", backend="onnxruntime", batched=batched)
        assert not plain.batch.batched
        assert [r["y"].shape for r in plain.run_many(requests_)] == [(8, 2), (12, 2)]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_every_backend_with_run_into_pools_pads_and_packs(backend, conv_model):
    """The same rules on each installed backend that reads ONNX, against ONNX Runtime's own outputs."""
    if (
        not {b.name: b for b in unirt.backends()}.get(backend, None)
        or not {b.name: b for b in unirt.backends()}[backend].available
    ):
        pytest.skip(f"backend {backend!r} is not available here")
    import onnxruntime as ort

    x = requests([6], seed=21)[0]
    ref = ort.InferenceSession(str(conv_model("dynamic")), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    static = unirt.Session(conv_model("static"), backend=backend, batched=True)
    got = static.run(x)  # 6 rows on a batch of 4: two runs, the second padded
    np.testing.assert_allclose(got["features"], ref[0], rtol=1e-4, atol=1e-5)
    for _ in range(3):
        del got
        got = static.run(x[:4])  # exactly N rows: pooled outputs on the plain path
    before = static.pool.stats()
    for _ in range(5):
        del got
        got = static.run(x[:4])  # noqa: F841 - held over the next run, as a caller holds its result
    assert static.pool.stats().allocations == before.allocations
    # batched=True: dim 0 is the batch dim N (asserted, since OpenVINO's reader may drop the name)
    dynamic = unirt.Session(conv_model("dynamic"), backend=backend, batched=True)
    many = dynamic.run_many([x[:1], x[1:4], x[4:]])
    assert dynamic.batch_stats().backend_runs == 1
    np.testing.assert_allclose(np.concatenate([m["pooled"] for m in many]), ref[1], rtol=1e-4, atol=1e-5)


def _save(tmp_path, name, nodes, inputs, outputs):
    import onnx
    from onnx import helper

    m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(tmp_path / f"{name}.onnx"))
    return tmp_path / f"{name}.onnx"


def test_a_static_dim_0_above_1_is_not_a_batch_unless_asserted(tmp_path):
    """Softmax over dim 0 of a [3, 4] input: padding or splitting rows would change every answer, so a request of
    another size is refused (naming the input, the static dim and batched=True) rather than silently padded."""
    from onnx import TensorProto, helper

    path = _save(
        tmp_path,
        "softmax0",
        [helper.make_node("Softmax", ["x"], ["y"], axis=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    sess = unirt.Session(path, backend="onnxruntime")
    assert not sess.batch.batched and "batched=True" in sess.batch.reason
    np.testing.assert_allclose(sess.run(np.ones((3, 4), np.float32))["y"].sum(axis=0), 1.0, rtol=1e-6)
    for rows in (2, 6):
        with pytest.raises(
            InputError,
            match=r"input 'x': expected shape \(3, 4\) \(dim 0 is static\), got "
            rf"\({rows}, 4\).*batched=True\) \(unirt run --batched\) pads or splits "
            r".*static batch of 3",
        ):
            sess.run(np.ones((rows, 4), np.float32))
        with pytest.raises(InputError, match=r"request 0: input 'x'.*batched=True"):
            sess.run_many([np.ones((rows, 4), np.float32)])
    assert len(sess.run_many([np.ones((3, 4), np.float32)] * 2)) == 2  # one by one
    asserted = unirt.Session(path, backend="onnxruntime", batched=True)  # the caller says rows are independent
    assert (asserted.batch.kind, asserted.batch.size) == ("static", 3)
    assert asserted.run(np.ones((2, 4), np.float32))["y"].shape == (2, 4)
    assert asserted.batch_stats().padded_rows == 1
    strict = unirt.Session(path, backend="onnxruntime", batched=False)
    with pytest.raises(InputError, match="dim 0 is static") as info:
        strict.run(np.ones((2, 4), np.float32))
    assert "batched=True" not in str(info.value)


def test_a_static_batch_of_1_splits_into_runs_equal_to_one_by_one(tmp_path):
    from onnx import TensorProto, helper

    path = _save(
        tmp_path,
        "softmax1",
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
    )
    sess = unirt.Session(path, backend="onnxruntime")
    assert (sess.batch.kind, sess.batch.size) == ("static", 1)
    x = np.random.default_rng(7).standard_normal((4, 5)).astype(np.float32)
    one_by_one = np.concatenate([sess.run(x[i : i + 1])["y"] for i in range(4)])
    np.testing.assert_array_equal(sess.run(x)["y"], one_by_one)
    many = sess.run_many([x[:3], x[3:]])
    np.testing.assert_array_equal(np.concatenate([m["y"] for m in many]), one_by_one)
    assert sess.batch_stats().padded_rows == 0


@pytest.mark.parametrize("dims", [(None, None), ("N", "F")])
def test_run_many_on_a_transpose_is_not_batched(tmp_path, dims):
    """y = x.T with dim 0 unnamed (or x[N,F] -> y[F,N]): dim 0 is no batch dim, so run_many runs one by one and
    each request gets its own transpose, not rows cut from the transpose of the stacked requests."""
    from onnx import TensorProto, helper

    path = _save(
        tmp_path,
        "transpose",
        [helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims[::-1]))],
    )
    backends = [b.name for b in unirt.backends() if b.available and b.name in ("onnxruntime", "openvino", "mnn")]
    x1 = np.arange(8, dtype=np.float32).reshape(2, 4)
    x2 = -np.arange(8, dtype=np.float32).reshape(2, 4)
    for backend in backends:
        sess = unirt.Session(path, backend=backend)
        assert not sess.batch.batched, backend
        many = sess.run_many([x1, x2])
        for got, x in zip(many, (x1, x2)):
            np.testing.assert_array_equal(got["y"], x.T, err_msg=backend)


def test_max_batch_reaches_the_backend_and_an_engines_own_limit_splits(test_plugins, model):
    """Session(max_batch=N) goes to the backend in LoadOptions (TensorRT builds its profile for it); a backend
    whose engine takes a bounded batch (runner.max_batch) gets larger requests split even with no max_batch."""
    path = model("dynamic_mlp")
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    expected = unirt.Session(path, backend="onnxruntime").run(x)["probs"]
    sess = unirt.Session(path, backend="reference", max_batch=2)
    assert sess.options.max_batch == 2 and sess._runner.max_batch == 2
    np.testing.assert_allclose(sess.run(x)["probs"], expected, rtol=1e-5)
    assert sess._runner.batches == [2, 2, 1]
    bounded = unirt.Session(path, backend="reference", backend_options={"max_batch": 3})
    assert bounded.options.max_batch is None
    np.testing.assert_allclose(bounded.run(x)["probs"], expected, rtol=1e-5)
    assert bounded._runner.batches == [3, 2] and bounded.batch_stats().backend_runs == 2
    np.testing.assert_allclose(bounded.run_many([x[:2], x[2:]])[1]["probs"], expected[2:], rtol=1e-5)
    assert max(bounded._runner.batches) == 3


def test_run_many_when_declared_output_dims_do_not_hold(tmp_path):
    """y = x[:, :2] declared as y[N, M] (M named after x's dim 1, which it is not): plain runs fall back to the
    engine's own outputs when it refuses memory sized from that declaration, and so does run_many (it raised
    RunError: its batch buffers were sized from the declaration on every call)."""
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("st", [0]), ("en", [2]), ("ax", [1]))]
    path = _save(
        tmp_path,
        "slice_misdeclared",
        [helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])],
    )
    import onnx

    m = onnx.load(str(path))
    m.graph.initializer.extend(consts)
    onnx.save(m, str(path))
    x = np.arange(20, dtype=np.float32).reshape(4, 5)
    backends = [b.name for b in unirt.backends() if b.available and b.name in ("onnxruntime", "openvino")]
    for backend in backends:
        for kwargs in ({}, {"pooled_outputs": True}, {"arena": unirt.Arena()}):
            sess = unirt.Session(path, backend=backend, **kwargs)
            assert sess.batch.kind == "dynamic"
            for _ in range(2):  # before and after the session learnt that the declaration does not hold
                many = sess.run_many([x, x[:3] * 2])
                np.testing.assert_array_equal(many[0]["y"], x[:, :2], err_msg=f"{backend} {kwargs}")
                np.testing.assert_array_equal(many[1]["y"], x[:3, :2] * 2, err_msg=f"{backend} {kwargs}")
                np.testing.assert_array_equal(sess.run(x)["y"], x[:, :2], err_msg=f"{backend} {kwargs}")


@pytest.mark.parametrize("dims", [(None, None, None), ("a_rows", "b_rows", "y_rows")])
def test_an_asserted_batch_dim_that_no_name_ties_needs_inputs_that_agree(tmp_path, dims):
    """a + b with dim 0 unnamed (or named differently on each tensor, as torch's dynamic_axes lists and tf2onnx
    name them) under batched=True: run_many packs and equals one-by-one runs, on every backend that reads ONNX.
    A request whose b has 1 row (broadcast by the engine) cannot be packed: it was silently stacked as if it had
    a's rows (wrong answers for it and its batch-mates); it is an InputError now, before the engine runs.
    Named differently, batched=True was refused with 'pass batched=True if it is one'."""
    from onnx import TensorProto, helper

    path = _save(
        tmp_path,
        "add",
        [helper.make_node("Add", ["a", "b"], ["y"])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [dims[0], 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [dims[1], 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[2], 3])],
    )
    rng = np.random.default_rng(4)
    rows = [2, 1, 3]
    reqs = [
        {"a": rng.standard_normal((r, 3)).astype(np.float32), "b": rng.standard_normal((r, 3)).astype(np.float32)}
        for r in rows
    ]
    broadcast = {"a": np.ones((2, 3), np.float32), "b": np.full((1, 3), 5, np.float32)}
    backends = [b.name for b in unirt.backends() if b.available and b.name in ("onnxruntime", "openvino")]
    for backend in backends:
        plain = unirt.Session(path, backend=backend)
        assert not plain.batch.batched and "batched=True" in plain.batch.reason, backend
        np.testing.assert_array_equal(plain.run_many([broadcast])[0]["y"], np.full((2, 3), 6, np.float32))
        sess = unirt.Session(path, backend=backend, batched=True)
        assert (sess.batch.kind, sess.batch.symbol) == ("dynamic", None), backend
        many = sess.run_many(reqs)
        assert sess.batch_stats().backend_runs == 1, backend
        for got, req in zip(many, reqs):
            np.testing.assert_allclose(got["y"], req["a"] + req["b"], rtol=1e-6, err_msg=backend)
        for call in (lambda s=sess: s.run(broadcast), lambda s=sess: s.run_many([reqs[0], broadcast])):
            with pytest.raises(
                InputError,
                match=r"disagree on the batch size \(dim 0, a batch dim by batched=True\): "
                r"2 rows in 'a', 1 in 'b'",
            ):
                call()
        assert sess.batch_stats().backend_runs == 1, backend  # refused before any run
