"""The Ray deployment's options, checked in the driver before Ray sees them (no Ray instance needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from unirt.errors import ModelLoadError, UnsupportedOptionError
from unirt.integrations.ray.options import (
    DEPLOYMENT_OPTIONS,
    ReplicaOptions,
    checked_model,
    deployment_option_names,
    deployment_options,
    live_options,
    parse_app_args,
    replica_resources,
)
from unirt.testing import models


def test_resources_follow_the_session():
    assert replica_resources(ReplicaOptions("m.onnx")) == {"num_cpus": 1}
    assert replica_resources(ReplicaOptions("m.onnx", threads=4)) == {"num_cpus": 4}
    assert replica_resources(ReplicaOptions("m.onnx", device="cuda", threads=2)) == {"num_cpus": 2, "num_gpus": 1}
    assert replica_resources(ReplicaOptions("m.plan", backend="tensorrt", device="auto"))["num_gpus"] == 1
    assert "num_gpus" not in replica_resources(ReplicaOptions("m.xml", backend="openvino", device="gpu"))  # Intel GPU


def test_deployment_options_pass_through_and_merge():
    opts = ReplicaOptions("models/resnet.onnx", threads=2, max_batch_size=16)
    out = deployment_options(
        opts,
        {
            "num_replicas": "auto",
            "autoscaling_config": {"min_replicas": 1},
            "ray_actor_options": {"num_cpus": 0.5, "memory": 2**30},
        },
    )
    assert out["num_replicas"] == "auto" and out["autoscaling_config"] == {"min_replicas": 1}
    assert out["ray_actor_options"] == {"num_cpus": 0.5, "memory": 2**30}  # the caller's word wins
    assert out["max_ongoing_requests"] == 32  # room for a full batch while the previous one runs
    assert out["name"] == "unirt-resnet"
    assert deployment_options(opts, {"max_ongoing_requests": 3})["max_ongoing_requests"] == 3
    with pytest.raises(UnsupportedOptionError, match="unknown option.*num_replica\\b"):
        deployment_options(opts, {"num_replica": 2})


def test_cli_arguments_are_typed():
    opts, ray_options = parse_app_args(
        {
            "model": "m.onnx",
            "threads": "2",
            "precision": "fp16",
            "backend_options": '{"graph_optimization_level": 1}',
            "batch_wait_timeout_s": "0.01",
            "num_replicas": "3",
            "ray_actor_options": '{"num_cpus": 1}',
            "name": "clf",
        }
    )
    assert (opts.threads, opts.precision, opts.backend_options) == (2, "fp16", {"graph_optimization_level": 1})
    assert opts.batch_wait_timeout_s == 0.01 and opts.name == "clf"
    assert ray_options["num_replicas"] == 3 and ray_options["ray_actor_options"] == {"num_cpus": 1}
    assert parse_app_args({"model": "m.onnx", "num_replicas": "auto"})[1]["num_replicas"] == "auto"
    assert parse_app_args({"model": "m.onnx", "threads": 3})[0].threads == 3  # a config file's typed args


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, "needs model=PATH"),
        ({"model": "m.onnx", "threads": "two"}, "threads='two': expected an integer"),
        ({"model": "m.onnx", "threads": "0"}, "threads must be a positive integer"),
        ({"model": "m.onnx", "backend_options": "{bad"}, "backend_options.*expected JSON"),
        ({"model": "m.onnx", "precision": "fp8"}, "precision must be one of"),
        ({"model": "m.onnx", "device": "cuda:1"}, "Ray assigns each replica its GPU"),
        ({"model": "m.onnx", "device": "tpu"}, "device 'tpu' is not known"),
        ({"model": "m.onnx", "name": "../x"}, "name '../x'"),
        ({"model": "m.onnx", "batch_wait_timeout_s": "-1"}, "batch_wait_timeout_s must be"),
        ({"model": "m.onnx", "replicas": "2"}, "unknown argument 'replicas'"),
        ({"model": "m.onnx", "batched": "maybe"}, "batched='maybe': expected true, false or none"),
        ({"model": "m.onnx", "batched": 1}, "batched must be True, False or None"),
    ],
)
def test_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(UnsupportedOptionError, match=message):
        parse_app_args(args)


def test_the_model_is_opened_in_the_driver_and_its_absolute_path_sent(tmp_path, monkeypatch):
    models.dynamic_mlp(tmp_path / "mlp.onnx", features=4, classes=2)
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
    monkeypatch.chdir(tmp_path)
    checked = checked_model(ReplicaOptions("mlp.onnx", threads=2))
    assert checked.model == str(tmp_path / "mlp.onnx") and (checked.name, checked.threads) == ("mlp", 2)
    with pytest.raises(ModelLoadError, match=r"bad\.onnx: detected format onnx, but not a valid ONNX protobuf"):
        checked_model(ReplicaOptions("bad.onnx"))
    with pytest.raises(ModelLoadError, match=r"missing\.onnx: no such model file .*check_model=False"):
        checked_model(ReplicaOptions("missing.onnx"))
    assert checked_model(ReplicaOptions("missing.onnx"), check=False).model == "missing.onnx"  # the workers' path


def test_build_and_app_refuse_a_bad_model_before_ray_sees_it(tmp_path, monkeypatch):
    pytest.importorskip("ray.serve", reason="the ray extra is not installed (pip install '.[ray]')")
    from ray.serve import Application

    from unirt.integrations.ray import app, build

    models.dynamic_mlp(tmp_path / "mlp.onnx", features=4, classes=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="missing.onnx: no such model file"):
        build("missing.onnx")
    with pytest.raises(ModelLoadError, match="missing.onnx: no such model file"):
        app({"model": "missing.onnx", "num_replicas": "2"})
    assert isinstance(build("mlp.onnx"), Application)
    assert isinstance(build("missing.onnx", check_model=False), Application)
    assert isinstance(app({"model": "missing.onnx", "check_model": "false"}), Application)
    with pytest.raises(UnsupportedOptionError, match="check_model='maybe': expected true or false"):
        app({"model": "mlp.onnx", "check_model": "maybe"})


def test_user_config_is_checked_in_the_driver():
    opts = ReplicaOptions("m.onnx", max_batch_size=4)
    out = deployment_options(opts, {"user_config": {"max_batch_size": 32, "batch_wait_timeout_s": 0.02}})
    assert out["user_config"] == {"max_batch_size": 32, "batch_wait_timeout_s": 0.02}
    assert out["max_ongoing_requests"] == 64  # room for the batch size the replicas will run with
    assert live_options(None) == {}
    for config, message in [
        (
            {"threads": 2},
            "unknown key.*threads; a running unirt deployment can retune max_batch_size, batch_wait_timeout_s",
        ),
        ({"max_batch_size": 0}, "user_config max_batch_size must be a positive integer"),
        ({"batch_wait_timeout_s": "fast"}, "user_config batch_wait_timeout_s must be"),
        ([1, 2], "user_config must be a dict"),
    ]:
        with pytest.raises(UnsupportedOptionError, match=message):
            deployment_options(opts, {"user_config": config})


def test_the_installed_rays_deployment_options_pass_through():
    pytest.importorskip("ray.serve", reason="the ray extra is not installed (pip install '.[ray]')")
    import inspect

    from ray.serve import Deployment

    names = deployment_option_names()
    assert DEPLOYMENT_OPTIONS <= names and "name" not in names and "func_or_class" not in names
    assert names == {
        p
        for p in inspect.signature(Deployment.options).parameters
        if p not in ("self", "func_or_class", "name", "version") and not p.startswith("_")
    }
    opts = ReplicaOptions("m.onnx")
    newer = sorted(names - DEPLOYMENT_OPTIONS)  # e.g. max_constructor_retry_count in Ray 2.5x
    for key in newer:
        assert key in deployment_options(opts, {key: None})
    if "max_constructor_retry_count" in names:
        assert (
            parse_app_args({"model": "m.onnx", "max_constructor_retry_count": "5"})[1]["max_constructor_retry_count"]
            == 5
        )


def test_default_name_is_the_file_stem():
    assert ReplicaOptions("/srv/models/yolo v8.int8.onnx").name == "yolo_v8"


def test_import_unirt_does_not_import_ray(tmp_path):
    code = "import sys, unirt, unirt.integrations; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)  # cwd: the installed unirt, not ./unirt


def test_missing_ray_names_the_extra(tmp_path):
    # A Python where `import ray` fails (a None entry in sys.modules blocks the import), as without the extra.
    code = (
        "import sys; sys.modules['ray'] = None; sys.modules['ray.serve'] = None\n"
        "import unirt.integrations.ray as r\n"
        "try:\n    r.build\nexcept unirt.BackendUnavailableError as e:\n    print(e)\n"
    )
    code = "import unirt\n" + code
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert "pip install '.[ray]'" in out and "ray[serve]" in out


def test_batched_reaches_the_replicas_session_and_its_v2_spec(tmp_path):
    """A model whose dim 0 is unnamed (as TFLite and OpenVINO IR give it) is no batch to a Session unless
    batched=True says so: merged requests then ran one by one with no way to ask for packing. `batched` goes to
    the replica's Session (one backend run for the merged requests) and its v2 spec (requests carry the batch
    dim), from build() and from `serve run` key=value arguments alike."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import unirt
    from unirt.integrations.ray.replica import Replica

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "unnamed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = str(tmp_path / "unnamed.onnx")
    onnx.save(model, path)
    assert parse_app_args({"model": path, "batched": "true"})[0].batched is True
    assert parse_app_args({"model": path, "batched": "none"})[0].batched is None
    rng = np.random.default_rng(0)
    requests = [rng.standard_normal((n, 3)).astype(np.float32) for n in (1, 2, 1)]
    expected = [r @ np.arange(6, dtype=np.float32).reshape(3, 2) for r in requests]
    # packed runs (a session without a batch dim runs each request by itself, outside its batching figures)
    for batched, runs, max_batch_size, dims in ((None, 0, 0, [-1, 3]), (True, 1, 1024, [3]), (False, 0, 0, [-1, 3])):
        replica = Replica(ReplicaOptions(path, backend="onnxruntime", batched=batched))
        try:
            assert replica.session.batch.batched == bool(batched)
            for got, want in zip(replica.run_batch(requests), expected):
                np.testing.assert_allclose(got["y"], want, rtol=1e-6)
            assert replica.stats()["session"]["backend_runs"] == runs
            assert (replica.spec.max_batch_size, list(replica.spec.inputs[0].dims)) == (max_batch_size, dims)
        finally:
            replica.close()
    static = tmp_path / "static4.onnx"
    models.batched_cnn(static, batch=4, channels=2, size=4)
    replica = Replica(ReplicaOptions(str(static), backend="onnxruntime", batched=True))
    try:
        assert replica.spec.max_batch_size == 4 and replica.spec.static_batch == 4  # 1..4 rows, padded to 4
        assert unirt.Session(static, backend="onnxruntime").batch.batched is False
    finally:
        replica.close()
