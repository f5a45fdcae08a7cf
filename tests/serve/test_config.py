"""config.pbtxt: parsed with protobuf's text format, checked against the real model, completed from it."""

from __future__ import annotations

import pytest

import unirt
from unirt.serve.config import (
    ConfigError,
    backend_for,
    build_spec,
    config_to_dict,
    instance_devices,
    parse_config_json,
    parse_config_text,
    select_versions,
)
from unirt.serve.errors import BadRequest, NotFound
from unirt.serve.repository import DirectoryRepository, SingleModelRepository, check_model_name, parse_version


@pytest.fixture(scope="module")
def mlp(model):
    with unirt.Session(model("dynamic_mlp"), backend="onnxruntime") as sess:
        yield sess.inputs, sess.outputs


@pytest.fixture(scope="module")
def static(model):
    with unirt.Session(model("matmul_relu"), backend="onnxruntime") as sess:  # x float32[64, 64]
        yield sess.inputs, sess.outputs


def spec(text, io, name="m", **kw):
    return build_spec(parse_config_text(text), name, *io, "onnxruntime", **kw)


def test_autocomplete_from_the_model(mlp):
    s = spec("", mlp)
    assert s.max_batch_size == 4 and s.batching is not None and s.static_batch is None
    assert [(t.name, t.datatype, t.dims) for t in s.inputs] == [("x", "FP32", (8,))]
    assert [t.name for t in s.outputs] == ["logits", "probs"]
    assert s.config.platform == "onnxruntime_onnx" and s.config.backend == "onnxruntime"
    assert spec("", mlp, default_max_batch_size=0).max_batch_size == 0  # batching off: dims keep the batch dim
    assert spec("", mlp, default_max_batch_size=0).inputs[0].dims == (-1, 8)


def test_given_fields_are_kept_and_checked(mlp):
    s = spec(
        "max_batch_size: 16 dynamic_batching { preferred_batch_size: [2, 8] max_queue_delay_microseconds: 500 "
        'default_queue_policy { max_queue_size: 10 } } parameters { key: "threads" value { string_value: "2" } }',
        mlp,
    )
    assert s.max_batch_size == 16 and s.batching.preferred_sizes == (2, 8)
    assert s.batching.max_queue_delay_s == pytest.approx(0.0005) and s.batching.max_queue_size == 10
    assert s.options == {"threads": 2}


@pytest.mark.parametrize(
    "text,field",
    [
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 7 ] } ] max_batch_size: 2', r"input\[0\].dims\[0\] is 7"),
        (
            'input [ { name: "x" data_type: TYPE_INT32 dims: [ 8 ] } ] max_batch_size: 2',
            r"input\[0\].data_type: TYPE_INT32",
        ),
        (
            'input [ { name: "y" data_type: TYPE_FP32 dims: [ 8 ] } ] max_batch_size: 2',
            r"input\[0\].name: the model has no",
        ),
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 8 ] } ]', r"input\[0\].dims: \[8\] has rank 1"),
        (
            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 0 ] } ] max_batch_size: 1',
            r"input\[0\].dims: dims must be",
        ),
        ('input [ { name: "x" dims: [ 8 ] } ] max_batch_size: 1', r"input\[0\].data_type is missing"),
        (
            'output [ { name: "probs" data_type: TYPE_FP32 dims: [ 4 ] } ] max_batch_size: 1',
            r"output\[0\].dims\[0\] is 4",
        ),
        (
            'max_batch_size: 4 input [ { name: "x" data_type: TYPE_FP32 dims: [ 2, 4 ] reshape { shape: [ 9 ] } } ]',
            r"input\[0\].reshape.shape \[9\] has a different element count",
        ),
        (
            'max_batch_size: 0 input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 8 ] '
            "reshape { shape: [ -1, -1, 4 ] } } ]",
            r"input\[0\].reshape.shape \[-1, -1, 4\]: at most one -1",
        ),
        ("max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 8 ] }", r"preferred_batch_size: \[8\] outside"),
        ('name: "other"', "name: 'other' does not match"),
        ("max_batch_size: -1", "max_batch_size must be >= 0"),
        ("sequence_batching { }", "sequence_batching: not supported"),
        ('parameters { key: "precision" value { string_value: "fp8" } }', r"parameters\[precision\]"),
        (
            'max_batch_size: 2 input [ { name: "x" data_type: TYPE_FP32 dims: [ 8 ] is_shape_tensor: true } ]',
            "is_shape_tensor",
        ),
    ],
)
def test_bad_configs_name_the_field(mlp, text, field):
    with pytest.raises(ConfigError, match=field):
        spec(text, mlp)


def test_static_batch_dim(static):
    s = spec('max_batch_size: 32 input [ { name: "x" data_type: TYPE_FP32 dims: [ 64 ] } ]', static)
    assert s.static_batch == 64
    with pytest.raises(ConfigError, match="larger than the model's fixed batch dim 64"):
        spec("max_batch_size: 65", static)
    assert spec("", static).max_batch_size == 0  # a fixed first dim is not auto-batched (Triton's rule)


def test_parse_errors_and_json_override():
    with pytest.raises(ConfigError, match=r"config.pbtxt: 1:\d+ : .*no field named \"max_batch\""):
        parse_config_text("max_batch: 3")
    with pytest.raises(ConfigError, match="config override"):
        parse_config_json('{"max_batch_size": "x"}')
    assert parse_config_json('{"max_batch_size": 3, "input": [{"name": "x", "dims": [8]}]}').input[0].dims == [8]


def test_platform_backend_mapping():
    def cfg(text):
        return backend_for(parse_config_text(text))

    assert cfg('platform: "onnxruntime_onnx"') == "onnxruntime"
    assert cfg('backend: "onnxruntime"') == "onnxruntime"
    assert cfg('platform: "tensorrt_plan"') == "tensorrt"
    assert cfg('backend: "openvino"') == "openvino"
    assert cfg('backend: "ncnn"') == cfg('platform: "ncnn"') == "ncnn"
    assert cfg('backend: "mnn"') == "mnn" and cfg('backend: "tflite"') == cfg('backend: "litert"') == "tflite"
    assert cfg("") == cfg('backend: "unirt"') == "auto"
    with pytest.raises(ConfigError, match="platform: 'tensorflow_savedmodel' is not served by unirt"):
        cfg('platform: "tensorflow_savedmodel"')
    with pytest.raises(ConfigError, match="disagrees"):
        cfg('platform: "tensorrt_plan" backend: "onnxruntime"')


def test_version_policy_and_instances():
    assert select_versions(parse_config_text(""), [1, 3, 2]) == [3]
    assert select_versions(parse_config_text("version_policy { latest { num_versions: 2 } }"), [1, 3, 2]) == [2, 3]
    assert select_versions(parse_config_text("version_policy { all { } }"), [2, 1]) == [1, 2]
    assert select_versions(parse_config_text("version_policy { specific { versions: [1] } }"), [1, 2]) == [1]
    with pytest.raises(ConfigError, match=r"specific.versions: version\(s\) \[4\] not found"):
        select_versions(parse_config_text("version_policy { specific { versions: [4] } }"), [1])
    assert instance_devices(parse_config_text("")) == ["auto"]
    assert instance_devices(
        parse_config_text("instance_group [ { count: 2 kind: KIND_CPU }, { kind: KIND_GPU gpus: [0, 1] } ]")
    ) == ["cpu", "cpu", "cuda:0", "cuda:1"]


def test_config_json_has_numbers_not_strings(mlp):
    data = config_to_dict(spec("", mlp).config)
    assert data["input"][0]["dims"] == [8] and data["max_batch_size"] == 4
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == 0


def test_repository_names_and_versions(tmp_path, model):
    for bad in ("..", ".hidden", "a/b", "", "x" * 200, "-rf", "a\\b"):
        with pytest.raises(BadRequest, match="invalid model name"):
            check_model_name(bad)
    assert parse_version("") is None and parse_version("12") == 12
    for bad in ("0", "-1", "1.5", "x"):
        with pytest.raises(BadRequest, match="invalid model version"):
            parse_version(bad)
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "notaversion").mkdir()
    repo = DirectoryRepository(tmp_path)
    source = repo.source("m")
    assert list(source.versions) == [1] and source.config_path is None
    with pytest.raises(NotFound, match=r"no model.onnx( or model.pt2)? in .* \(found: nothing\)"):
        source.model_file(1, "onnxruntime")
    with pytest.raises(BadRequest, match="default_model_filename"):
        source.model_file(1, "onnxruntime", "../../m.onnx")
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"")
    assert source.model_file(1, "onnxruntime").name == "model.onnx"
    with pytest.raises(NotFound, match=r"no model.tflite in .* \(found: model.onnx\)"):
        source.model_file(1, "tflite")  # LiteRT cannot convert ONNX
    for backend in ("ncnn", "mnn", "openvino"):  # they convert ONNX on load
        if unirt.registry.availability(backend).available:
            assert source.model_file(1, backend).name == "model.onnx"
    (tmp_path / "m" / "1" / "model.param").write_bytes(b"")
    assert source.model_file(1, "ncnn").name == "model.param"  # its own format first
    with pytest.raises(NotFound):
        repo.source("other")
    single = SingleModelRepository(model("dynamic_mlp"))
    assert single.names() == ["dynamic_mlp"] and single.source("dynamic_mlp").model_file(1, "auto").is_file()
