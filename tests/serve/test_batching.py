"""Dynamic batching: gather/scatter on a real Session, the scheduler's merging rules, and the server merging
concurrent tritonclient requests into fewer executions."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as httpclient

import unirt
from unirt.serve.batching import batch_key, run_batch
from unirt.serve.config import BatchingPolicy
from unirt.serve.scheduler import BatchCosts, Scheduler
from unirt.serve.stats import ModelStats


@pytest.fixture(scope="module")
def mlp(model):
    with unirt.Session(model("dynamic_mlp"), backend="onnxruntime") as sess:
        yield sess


def _run(sess):
    return lambda feeds, names: sess.run(feeds, names)


def test_run_batch_merges_and_splits(mlp):
    rng = np.random.default_rng(0)
    parts = [{"x": rng.standard_normal((n, 8)).astype(np.float32)} for n in (1, 3, 2)]
    result = run_batch(_run(mlp), parts, [1, 3, 2], ["probs", "logits"])
    assert len(result.outputs) == 3 and result.infer_ns > 0
    for feeds, out in zip(parts, result.outputs):
        expected = mlp.run(feeds)
        np.testing.assert_allclose(out["probs"], expected["probs"], rtol=1e-6)
        np.testing.assert_allclose(out["logits"], expected["logits"], rtol=1e-6)


def test_run_batch_pads_only_a_fixed_batch_dim(model):
    with unirt.Session(model("matmul_relu"), backend="onnxruntime") as sess:  # x float32[64, 64]
        rows = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
        seen = []

        def run(feeds, names):
            seen.append(feeds["x"].shape)
            return sess.run(feeds, names)

        result = run_batch(run, [{"x": rows[:1]}, {"x": rows[1:]}], [1, 2], ["y"], static_batch=64)
        assert seen == [(64, 64)]
        full = np.concatenate([rows, np.zeros((61, 64), np.float32)])
        expected = sess.run({"x": full})["y"]
        np.testing.assert_allclose(np.concatenate([o["y"] for o in result.outputs]), expected[:3], rtol=1e-6)


def test_batch_key_separates_shapes_and_dtypes():
    a = {"x": np.zeros((2, 8), np.float32)}
    assert batch_key(a) == batch_key({"x": np.zeros((5, 8), np.float32)})
    assert batch_key(a) != batch_key({"x": np.zeros((2, 9), np.float32)})
    assert batch_key(a) != batch_key({"x": np.zeros((2, 8), np.float64)})


def test_scheduler_merges_queued_requests_up_to_the_limits(mlp):
    stats = ModelStats()
    calls = []
    gate, entered = threading.Event(), threading.Event()

    def run(feeds, names):
        entered.set()
        gate.wait(10)
        calls.append(feeds["x"].shape[0])
        return mlp.run(feeds, names)

    sched = Scheduler(
        "t", [run], ["probs"], stats, max_batch_size=8, batching=BatchingPolicy((4,), max_queue_delay_s=0.05)
    )
    try:
        rng = np.random.default_rng(2)
        first = sched.submit({"x": rng.standard_normal((1, 8)).astype(np.float32)}, 1)
        assert entered.wait(10)  # the worker took the first request alone and waits at the gate
        feeds = [{"x": rng.standard_normal((n, 8)).astype(np.float32)} for n in (2, 2, 3, 1)]
        futures = [sched.submit(f, f["x"].shape[0]) for f in feeds]
        odd = sched.submit({"x": np.zeros((1, 8), np.float64)}, 1)  # cannot join a float32 batch
        gate.set()
        results = [f.result(10) for f in futures]
        first.result(10)
        with pytest.raises(unirt.InputError):
            odd.result(10)
    finally:
        sched.stop(10)
    # preferred size 4: the 2+2 requests go together, then 3+1 (also 4); none are split or padded
    assert calls[0] == 1 and calls[1:3] == [4, 4]
    for f, r in zip(feeds, results):
        np.testing.assert_allclose(r.outputs["probs"], mlp.run(f)["probs"], rtol=1e-6)
        assert r.batch_size == 4 and r.queue_ns > 0
    snap = stats.snapshot()
    assert snap["inference_count"] == 9 and snap["execution_count"] == 3 and snap["pending"] == 0


def test_scheduler_stop_drains_the_queue(mlp):
    stats = ModelStats()
    sched = Scheduler(
        "t", [_run(mlp)], ["probs"], stats, max_batch_size=4, batching=BatchingPolicy((), max_queue_delay_s=0.2)
    )
    futures = [sched.submit({"x": np.ones((1, 8), np.float32)}, 1) for _ in range(3)]
    sched.stop(10)  # finishes what is queued, then refuses more
    assert all(f.result(0).outputs["probs"].shape == (1, 3) for f in futures)
    with pytest.raises(unirt.UnirtError, match="being unloaded"):
        sched.submit({"x": np.ones((1, 8), np.float32)}, 1)


def test_cheap_model_runs_inline_once_measured_and_only_when_idle(mlp):
    """Without batching, a sub-millisecond model runs on the caller's thread once its runs are measured, on an idle
    instance and an empty queue only; its worker takes no request while its runner is lent."""
    threads = []

    def run(feeds, names):
        threads.append(threading.current_thread())
        return mlp.run(feeds, names)

    stats = ModelStats()
    sched = Scheduler("t", [run], ["probs"], stats, inline=True)
    x = np.random.default_rng(3).standard_normal((1, 8)).astype(np.float32)
    try:
        assert sched.run_inline({"x": x}, 1) is None  # not measured yet: queued as usual
        for _ in range(20):
            sched.submit({"x": x}, 1).result(10)
        assert threads[-1] is not threading.current_thread()
        for _ in range(200):  # once the worker is back waiting for a request (it answered before getting there)
            done = sched.run_inline({"x": x}, 1)
            if done is not None:
                break
            time.sleep(0.01)
        assert done is not None and threads[-1] is threading.current_thread()
        np.testing.assert_allclose(done.outputs["probs"], mlp.run({"x": x})["probs"], rtol=1e-6)
        assert stats.execution_count == 21
        # an instance busy with a queued request: the next one queues behind it
        gate, entered = threading.Event(), threading.Event()
        threads.clear()
        slow = Scheduler(
            "slow", [lambda f, n: (entered.set(), gate.wait(10), run(f, n))[2]], ["probs"], ModelStats(), inline=True
        )
        slow._run_ns = 1000  # measured cheap (the gate holds this one run only)
        pending = slow.submit({"x": x}, 1)
        assert entered.wait(10)  # the instance is busy with it
        assert slow.run_inline({"x": x}, 1) is None
        gate.set()
        pending.result(10)
        slow.stop(10)
    finally:
        sched.stop(10)


def test_batched_answers_reach_the_loop(mlp):
    """submit_async: a merged batch's answers come back to the awaiting event loop (one wake-up per batch)."""

    async def main():
        sched = Scheduler(
            "t",
            [_run(mlp)],
            ["probs"],
            ModelStats(),
            max_batch_size=8,
            batching=BatchingPolicy((), max_queue_delay_s=0.05),
            inline=True,
        )
        try:
            assert sched.run_inline({"x": np.ones((1, 8), np.float32)}, 1) is None  # batching: never inline
            pairs = [sched.submit_async({"x": np.full((1, 8), i, np.float32)}, 1) for i in range(4)]
            done = await asyncio.gather(*(waiter for _, waiter in pairs))
            assert {d.batch_size for d in done} == {4}
            for i, d in enumerate(done):
                np.testing.assert_allclose(
                    d.outputs["probs"], mlp.run({"x": np.full((1, 8), i, np.float32)})["probs"], rtol=1e-6
                )
        finally:
            sched.stop(10)

    asyncio.run(main())


def test_max_queue_size_rejects(mlp):
    gate, entered = threading.Event(), threading.Event()
    sched = Scheduler(
        "t",
        [lambda f, n: (entered.set(), gate.wait(10), mlp.run(f, n))[2]],
        ["probs"],
        ModelStats(),
        max_batch_size=1,
        batching=BatchingPolicy((), 0.0, max_queue_size=1),
    )
    try:
        sched.submit({"x": np.ones((1, 8), np.float32)}, 1)
        assert entered.wait(10)  # the worker holds the first: the next one waits in the queue
        sched.submit({"x": np.ones((1, 8), np.float32)}, 1)
        with pytest.raises(unirt.UnirtError, match="maximum queue size"):
            sched.submit({"x": np.ones((1, 8), np.float32)}, 1)
    finally:
        gate.set()
        sched.stop(10)


def test_server_batches_concurrent_clients(server, repository):
    port = server.ports["http"]
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, 8)).astype(np.float32) for _ in range(8)]
    results: dict[int, np.ndarray] = {}

    def client(i):
        c = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=30)
        try:
            tensor = httpclient.InferInput("x", [1, 8], "FP32")
            tensor.set_data_from_numpy(xs[i])
            results[i] = c.infer("batched", [tensor], model_version="1").as_numpy("probs")
        finally:
            c.close()

    stats_client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    before = stats_client.get_inference_statistics("batched", "1")["model_stats"][0]
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    after = stats_client.get_inference_statistics("batched", "1")["model_stats"][0]
    stats_client.close()
    with unirt.Session(repository / "batched" / "1" / "model.onnx") as sess:
        for i, x in enumerate(xs):
            np.testing.assert_allclose(results[i], sess.run({"x": x})["probs"], rtol=1e-6)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 8 and executions < 8  # merged: max_queue_delay 200 ms, preferred sizes 4 and 8
    assert {b["batch_size"] for b in after["batch_stats"]} & {2, 3, 4, 5, 6, 7, 8}


def _onnx_model(path, nodes, inputs, outputs, inits=()):
    import onnx
    from onnx import TensorProto, helper

    def info(n, s):
        return helper.make_tensor_value_info(n, TensorProto.FLOAT, s)

    graph = helper.make_graph(nodes, path.stem, [info(*i) for i in inputs], [info(*o) for o in outputs], list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def first_dim_models(tmp_path_factory):
    from onnx import helper, numpy_helper

    d = tmp_path_factory.mktemp("first_dims")
    two = numpy_helper.from_array(np.array(2, np.float32), "two")
    return {
        # y[N + M] = concat(a[N], b[M]): dim 0 is not a per-row batch; merging requests would break it
        "concat": _onnx_model(
            d / "concat.onnx",
            [helper.make_node("Concat", ["a", "b"], ["y"], axis=0)],
            [("a", ["N", 4]), ("b", ["M", 4])],
            [("y", ["NM", 4])],
        ),
        "unnamed": _onnx_model(
            d / "unnamed.onnx",
            [helper.make_node("Mul", ["x", "two"], ["y"])],
            [("x", [None, 4])],
            [("y", [None, 4])],
            [two],
        ),
        "renamed": _onnx_model(
            d / "renamed.onnx",
            [helper.make_node("Mul", ["x", "two"], ["y"])],
            [("x", ["N", 4])],
            [("y", ["rows", 4])],
            [two],
        ),
        "named": _onnx_model(
            d / "named.onnx",
            [helper.make_node("Mul", ["x", "two"], ["y"])],
            [("x", ["batch", 4])],
            [("y", ["batch", 4])],
            [two],
        ),
    }


@pytest.mark.parametrize("name,batched", [("concat", False), ("unnamed", False), ("renamed", False), ("named", True)])
def test_autocomplete_batches_only_a_shared_named_first_dim(first_dim_models, name, batched):
    """Auto-complete turns on batching (max_batch_size and the dynamic batcher) only when every input and output
    has the same named first dim; a dynamic first dim alone does not say the rows are independent."""
    from unirt.serve.config import ModelConfig, build_spec

    with unirt.Session(first_dim_models[name], backend="onnxruntime") as sess:
        spec = build_spec(ModelConfig(), name, sess.inputs, sess.outputs, "onnxruntime")
    assert (spec.max_batch_size, spec.batching is not None) == ((4, True) if batched else (0, False))
    assert [list(t.dims) for t in spec.inputs][0] == ([4] if batched else [-1, 4])


def test_concurrent_requests_to_a_concat_model_are_not_merged(tmp_path, first_dim_models):
    """The audit's case: a[N, 4], b[M, 4] -> y[N + M, 4] under concurrent clients. Merged along dim 0 it failed
    (outputs of N + M rows cannot be split back); served unbatched every request gets its own answer."""
    import tritonclient.grpc as grpcclient

    from unirt.serve import ServeOptions, ServerThread

    options = ServeOptions(model=first_dim_models["concat"], http_port=None, grpc_port=0, metrics_port=None)
    with ServerThread(options) as server:
        url = f"127.0.0.1:{server.ports['grpc']}"
        local = threading.local()

        def infer(i):
            if not hasattr(local, "client"):
                local.client = grpcclient.InferenceServerClient(url)
            a, b = np.full((1 + i % 2, 4), i, np.float32), np.full((2, 4), -i, np.float32)
            inputs = [grpcclient.InferInput("a", list(a.shape), "FP32"), grpcclient.InferInput("b", [2, 4], "FP32")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            return np.array_equal(local.client.infer("concat", inputs).as_numpy("y"), np.concatenate([a, b]))

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(infer, range(40)))
        client = grpcclient.InferenceServerClient(url)
        assert client.get_model_config("concat").config.max_batch_size == 0
        client.close()


def test_warmup_of_a_fixed_batch_dim_is_padded_like_requests(tmp_path):
    """A model fixed at 4 rows served with max_batch_size: 4 takes requests of 1..4 rows (padded to 4 by the
    batcher). Its warm-up of 2 rows was run on the Session unpadded and refused (dim 0 fixed at N > 1 is no batch
    dim to a Session), so the model failed to load."""
    from unirt.serve.config import parse_config_text
    from unirt.serve.model import LoadedModel
    from unirt.serve.repository import DirectoryRepository
    from unirt.testing import models

    (tmp_path / "static" / "1").mkdir(parents=True)
    path = models.matmul_relu(tmp_path / "static" / "1" / "model.onnx", n=4)
    config = parse_config_text("""
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
model_warmup [ { name: "w" batch_size: 2 count: 2
                 inputs { key: "x" value { data_type: TYPE_FP32 dims: [ 4 ] random_data: true } } } ]
""")
    loaded = LoadedModel.load(DirectoryRepository(tmp_path).source("static"), 1, config)
    try:
        assert loaded.spec.static_batch == 4
        x = np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)
        got = loaded.submit({"x": x}, 2).result(30).outputs["y"]
        with unirt.Session(path, backend="onnxruntime") as sess:
            expected = sess.run({"x": np.concatenate([x, np.zeros((2, 4), np.float32)])})["y"][:2]
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    finally:
        loaded.close()


# -- adaptive batch size, batching on the event loop ------------------------------------------------------------------
def test_batch_costs_cap_where_the_per_row_time_stops_falling():
    """The cap is the top of the cheapest size class per row; a first run per size is not counted; the classes
    above are tried again every `explore_every` runs."""
    rising = BatchCosts(32, explore_every=1000)
    for rows, per_row in [(1, 50.0), (1, 5.0), (1, 5.0), (2, 6.0), (2, 6.0), (3, 7.0), (3, 7.0)]:
        rising.record(rows, per_row * rows)
    assert rising.per_row[:2] == [5.0, 6.0]  # the first runs of 1, 2 and 3 rows were not counted
    assert rising.cap == 1  # larger batches cost more per row: one request at a time

    falling = BatchCosts(32, explore_every=1000)
    for rows, per_row in [(1, 9.0), (1, 9.0), (2, 6.0), (2, 6.0), (4, 4.0), (4, 4.0)]:
        falling.record(rows, per_row * rows)
    assert falling.cap == 15  # cheapest so far: 4-7 rows; 8-15 not measured yet, so tried
    for rows, per_row in [(8, 4.1), (8, 4.1)]:
        falling.record(rows, per_row * rows)
    assert falling.cap == 7  # 8 rows are no cheaper per row than 4: capped at the 4-7 class

    # CPU time decides where the engine computes on the running thread; wall time where it does not (a GPU)
    on_thread, elsewhere = BatchCosts(32, explore_every=1000), BatchCosts(32, explore_every=1000)
    for rows, wall, cpu in [(1, 9.0, 5.0), (1, 9.0, 5.0), (2, 5.0, 6.0), (2, 5.0, 6.0)]:  # per row
        on_thread.record(rows, wall * rows, cpu * rows)
        elsewhere.record(rows, wall * rows, cpu * rows / 100)
    assert on_thread.by_cpu and on_thread.cap == 1  # the pair's wall time looked cheaper: waits, not work
    assert not elsewhere.by_cpu and elsewhere.cap == 7  # pairs take less time per row: grow

    explored = BatchCosts(32, explore_every=10)
    caps = []
    for _ in range(30):
        explored.record(1, 5.0)
        explored.record(2, 12.0)  # 6 per row: never pays
        caps.append(explored.cap)
    assert caps.count(1) > len(caps) / 2 and max(caps) > 1  # mostly one at a time; larger tried now and then


def test_batches_that_do_not_pay_run_one_at_a_time_without_the_queue_delay(mlp):
    """With a cap of 1 (per-row cost rising with the batch) a worker takes each request at once, not after
    max_queue_delay (an hour here) while it waits for a batch to fill."""
    stats = ModelStats()
    gate, entered = threading.Event(), threading.Event()
    calls = []

    def run(feeds, names):
        entered.set()
        gate.wait(10)
        calls.append(feeds["x"].shape[0])
        return mlp.run(feeds, names)

    sched = Scheduler("t", [run], ["probs"], stats, max_batch_size=8, batching=BatchingPolicy((), 3600.0))
    assert sched.costs is not None
    for rows, per_row in [(1, 1.0), (1, 1.0), (2, 1e9), (2, 1e9)]:  # ns: a second per row in pairs
        sched.costs.record(rows, per_row * rows)
    assert sched.batch_cap == 1
    x = np.random.default_rng(4).standard_normal((1, 8)).astype(np.float32)
    try:
        first = sched.submit({"x": x}, 1)
        assert entered.wait(10)
        rest = [sched.submit({"x": x}, 1) for _ in range(3)]
        gate.set()
        for f in [first, *rest]:
            np.testing.assert_allclose(f.result(10).outputs["probs"], mlp.run({"x": x})["probs"], rtol=1e-6)
    finally:
        sched.stop(10)
    assert calls == [1, 1, 1, 1]


def _measured_loop_scheduler(mlp, runs, **kwargs):
    """A scheduler whose cheap model has run once (measured, so it may batch on the loop), its worker idle."""

    def run(feeds, names):
        runs.append((threading.current_thread(), feeds["x"].shape[0]))
        return mlp.run(feeds, names)

    kwargs.setdefault("batching", BatchingPolicy((), 3600.0))
    sched = Scheduler("t", [run], ["probs"], ModelStats(), max_batch_size=8, inline=True, **kwargs)
    sched.submit({"x": np.zeros((8, 8), np.float32)}, 8).result(10)  # a full batch at once: the model is measured
    for _ in range(1000):  # the worker answered before it went back to waiting for a request
        if sched._free:
            break
        time.sleep(0.005)
    return sched


def test_cheap_model_batches_one_loop_turn_on_the_loop(mlp):
    """Requests submitted within one loop turn run as one batch on the loop's thread, answered without waiting
    max_queue_delay (an hour here)."""
    runs = []
    sched = _measured_loop_scheduler(mlp, runs)
    xs = [np.full((1, 8), i, np.float32) for i in range(4)]

    async def main():
        pairs = [sched.submit_async({"x": x}, 1) for x in xs]
        return await asyncio.wait_for(asyncio.gather(*(w for _, w in pairs)), 10)

    try:
        done = asyncio.run(main())
    finally:
        sched.stop(10)
    assert runs[1:] == [(threading.current_thread(), 4)]
    for x, d in zip(xs, done):
        assert d.batch_size == 4
        np.testing.assert_allclose(d.outputs["probs"], mlp.run({"x": x})["probs"], rtol=1e-6)


def test_loop_batches_keep_the_queue_bound_cancellation_and_stop(mlp):
    runs = []
    sched = _measured_loop_scheduler(mlp, runs, batching=BatchingPolicy((), 3600.0, max_queue_size=3))
    x = np.ones((1, 8), np.float32)

    async def main():
        pairs = [sched.submit_async({"x": x}, 1) for _ in range(3)]
        with pytest.raises(unirt.UnirtError, match="maximum queue size"):  # collected requests count as queued
            sched.submit_async({"x": x}, 1)
        assert pairs[0][0].cancel()  # its client went away before the turn ended: it never runs
        await asyncio.wait_for(asyncio.gather(pairs[1][1], pairs[2][1]), 10)
        assert pairs[0][1].cancelled()
        assert runs[1:] == [(threading.current_thread(), 2)]
        late = sched.submit_async({"x": x}, 1)
        sched.stop(10)  # unloaded before the turn ended: refused, not left hanging
        with pytest.raises(unirt.UnirtError, match="unloaded"):
            await asyncio.wait_for(late[1], 10)

    try:
        asyncio.run(main())
    finally:
        sched.stop(10)
    assert len(runs) == 2


def test_small_and_large_merges_agree(mlp, monkeypatch):
    """Small batches are merged with numpy, large ones with the C++ gather: the same batch."""
    import unirt.serve.batching as batching

    rng = np.random.default_rng(5)
    parts = [{"x": rng.standard_normal((n, 8)).astype(np.float32)} for n in (1, 2, 1)]
    small = run_batch(_run(mlp), parts, [1, 2, 1], ["probs"])
    monkeypatch.setattr(batching, "NUMPY_MERGE_BYTES", 0)
    large = run_batch(_run(mlp), parts, [1, 2, 1], ["probs"])
    for a, b in zip(small.outputs, large.outputs):
        np.testing.assert_array_equal(a["probs"], b["probs"])


def test_cheap_model_with_batching_runs_inline_where_batches_do_not_form(mlp):
    """One request at a time (low load): batches never form, so a model with dynamic batching runs its requests
    inline like one without, after a short try of pairs, and the pairs' try ends without waiting for them."""
    sched = Scheduler(
        "t", [_run(mlp)], ["probs"], ModelStats(), max_batch_size=8, batching=BatchingPolicy((), 0.001), inline=True
    )
    x = np.random.default_rng(6).standard_normal((1, 8)).astype(np.float32)
    inline = 0
    try:
        for _ in range(200):
            done = sched.run_inline({"x": x}, 1)
            if done is None:
                done = sched.submit({"x": x}, 1).result(10)
            else:
                inline += 1
            np.testing.assert_allclose(done.outputs["probs"], mlp.run({"x": x})["probs"], rtol=1e-6)
    finally:
        sched.stop(10)
    assert inline > 150 and sched.batch_cap == 1
