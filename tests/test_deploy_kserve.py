"""`unirt deploy kserve`: manifests validated against KServe's own CRD schemas, the model repository it lays out
served by a real `unirt serve`, and the image definition checked against the package's extras and plugins.

No cluster and no Docker engine exist here: the manifests are checked against the CRDs' OpenAPI schemas
(tests/data/kserve, vendored by scripts/vendor_kserve_schemas.py; source commit inside), strictly — an unknown
field is an error, as with `kubectl apply --validate=strict` — and the Dockerfile's install steps are checked
against pyproject.toml and plugins/.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tomllib

jsonschema = pytest.importorskip("jsonschema")
yaml = pytest.importorskip("yaml")

import formats_samples

from unirt.cli import main
from unirt.deploy.image import EXTRAS, image_contents, plugins
from unirt.deploy.kserve import plan
from unirt.errors import UnsupportedOptionError
from unirt.formats import ModelFormat
from unirt.testing import models

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = Path(__file__).resolve().parent / "data" / "kserve"


def _strict(schema):
    """Kubernetes' strict field validation: objects with declared properties take no others (unless the CRD says
    x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _validator(kind: str):
    schema = _strict(json.loads((SCHEMAS / f"{kind}.schema.json").read_text()))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema), schema["x-kserve"]


def validate(doc: dict) -> None:
    kind = doc["kind"].lower()
    validator, meta = _validator(kind)
    assert doc["apiVersion"] == f"{meta['group']}/{meta['apiVersion']}" and doc["kind"] == meta["kind"]
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return models.dynamic_mlp(tmp_path_factory.mktemp("kserve") / "classifier.onnx", features=8, classes=3)


def test_manifests_validate_against_kserves_crds(onnx_model, tmp_path):
    d = plan(onnx_model, "classifier", cpus=2, memory="1Gi", namespace="models")
    validate(d.runtime)
    validate(d.service)
    container = d.runtime["spec"]["containers"][0]
    assert container["args"][:2] == ["serve", "--model-repository=/mnt/models"] and "--threads=2" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert [f["name"] for f in d.runtime["spec"]["supportedModelFormats"]] == ["onnx"]
    model = d.service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "onnx", "version": "1"} and model["runtime"] == "unirt"
    assert model["storageUri"] == "pvc://unirt-models/classifier"
    assert d.contents.backends == ("onnxruntime",) and d.contents.extras == ("serve",)
    assert d.service["metadata"]["namespace"] == d.runtime["metadata"]["namespace"] == "models"


def test_the_validation_is_not_vacuous(onnx_model):
    d = plan(onnx_model, "classifier")
    typo = copy.deepcopy(d.runtime)
    typo["spec"]["supportedModelFormat"] = typo["spec"].pop("supportedModelFormats")
    port = copy.deepcopy(d.runtime)
    port["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    probe = copy.deepcopy(d.runtime)
    probe["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    storage = copy.deepcopy(d.service)
    storage["spec"]["predictor"]["model"]["storageUri"] = ["s3://x"]
    for doc, where in (
        (typo, "supportedModelFormat"),
        (port, "containerPort"),
        (probe, "paht"),
        (storage, "storageUri"),
    ):
        with pytest.raises(AssertionError, match=where):
            validate(doc)


def test_the_laid_out_repository_is_served_under_the_services_name(onnx_model, tmp_path):
    pytest.importorskip("tritonclient.http")
    from unirt.serve import ServeOptions, ServerThread

    written = plan(onnx_model, "clf-a").write(tmp_path)
    assert [p.name for p in written] == ["servingruntime.yaml", "inferenceservice.yaml", "model-repository"]
    for path in written[:2]:
        validate(yaml.safe_load(path.read_text()))
    repo = tmp_path / "model-repository"
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()) == ["clf-a/1/model.onnx"]
    import tritonclient.http as tc

    with ServerThread(ServeOptions(model_repository=repo, http_port=0, grpc_port=None, metrics_port=None)) as server:
        client = tc.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        x = np.ones((1, 8), np.float32)
        tensor = tc.InferInput("x", [1, 8], "FP32")
        tensor.set_data_from_numpy(x)
        assert client.infer("clf-a", [tensor]).as_numpy("probs").shape == (1, 3)
        client.close()


def test_a_repository_with_several_formats_gets_every_backend_it_needs(onnx_model, tmp_path):
    from unirt.testing.tflite import dynamic_mlp as tflite_mlp

    repo = tmp_path / "repo"
    (repo / "a_onnx" / "1").mkdir(parents=True)
    shutil.copy(onnx_model, repo / "a_onnx" / "1" / "model.onnx")
    (repo / "b_tflite" / "3").mkdir(parents=True)
    tflite_mlp(repo / "b_tflite" / "3" / "model.tflite")
    d = plan(repo, "mixed", storage_uri="s3://bucket/repo")
    validate(d.runtime)
    validate(d.service)
    assert d.contents.backends == ("onnxruntime", "tflite") and not d.repository_files
    assert [f["name"] for f in d.runtime["spec"]["supportedModelFormats"]] == ["onnx", "tflite"]
    assert d.service["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/repo"
    d = plan(repo, "mixed", extras=["openvino"])  # OpenVINO reads both: no other backend is added
    assert d.contents.backends == ("openvino",)
    assert [f["name"] for f in d.runtime["spec"]["supportedModelFormats"]] == ["openvino", "onnx", "tflite"]


def test_a_repository_is_read_as_unirt_serve_reads_it(onnx_model, tmp_path):
    """default_model_filename and version_policy pick the file, as when the server loads the model."""
    pytest.importorskip("tritonclient.grpc")
    from unirt.errors import ModelLoadError
    from unirt.testing.tflite import dynamic_mlp as tflite_mlp

    repo = tmp_path / "repo"
    (repo / "clf" / "1").mkdir(parents=True)
    shutil.copy(onnx_model, repo / "clf" / "1" / "resnet.onnx")
    (repo / "clf" / "config.pbtxt").write_text('backend: "onnxruntime"\ndefault_model_filename: "resnet.onnx"\n')
    (repo / "pinned" / "1").mkdir(parents=True)
    tflite_mlp(repo / "pinned" / "1" / "model.tflite")
    (repo / "pinned" / "2").mkdir(parents=True)
    shutil.copy(onnx_model, repo / "pinned" / "2" / "model.onnx")
    (repo / "pinned" / "config.pbtxt").write_text("version_policy: { specific: { versions: [1] } }\n")
    d = plan(repo, "mixed")
    assert [f["name"] for f in d.runtime["spec"]["supportedModelFormats"]] == ["onnx", "tflite"]
    assert d.contents.backends == ("onnxruntime", "tflite")
    (repo / "clf" / "config.pbtxt").write_text('default_model_filename: "gone.onnx"\n')
    with pytest.raises(ModelLoadError, match=r"no gone\.onnx in .*clf.1 \(found: resnet\.onnx\)"):
        plan(repo, "mixed")


def test_weights_files_travel_and_tensorrt_plans_get_a_gpu(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    xml = formats_samples.write_openvino(src)
    d = plan(xml, "ir")
    assert [rel for _, rel in d.repository_files] == ["ir/1/model.xml", "ir/1/model.bin"]
    assert d.contents.backends == ("openvino",)
    engine = src / "yolo.engine"
    engine.write_bytes(formats_samples.tensorrt_bytes())
    d = plan(engine, "trt")
    validate(d.service)
    assert d.service["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert d.contents.backends == ("tensorrt",) and "convert" in d.contents.extras
    assert [rel for _, rel in d.repository_files] == ["trt/1/model.plan"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "Bad_Name"}, "DNS-1035"),
        ({"name": "x" * 64}, "DNS-1035"),
        ({"name": "ok", "extras": ["openvino", "pytorch"]}, "'pytorch' is neither a backend"),
        ({"name": "ok", "memory": "2GB"}, "Kubernetes quantity"),
        ({"name": "ok", "cpus": 0}, "--cpus must be a positive number"),
        ({"name": "ok", "gpus": -1}, "--gpus must be"),
    ],
)
def test_bad_options_are_clear_errors(onnx_model, kwargs, message):
    with pytest.raises(UnsupportedOptionError, match=message):
        plan(onnx_model, **kwargs)


def test_cli(onnx_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "deploy",
                "kserve",
                str(onnx_model),
                "--name",
                "clf",
                "--extras",
                "openvino,tools",
                "--cpus",
                "0.5",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert (
        'docker build -f deploy/kserve/Dockerfile --build-arg UNIRT_EXTRAS="serve,tools" '
        '--build-arg UNIRT_BACKENDS="openvino"' in text
    )
    runtime = yaml.safe_load((out / "servingruntime.yaml").read_text())
    validate(runtime)
    assert runtime["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "500m"
    assert "--threads=1" in runtime["spec"]["containers"][0]["args"]
    assert main(["deploy", "kserve", str(tmp_path / "missing.onnx"), "--name", "clf"]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["deploy", "kserve", str(onnx_model), "--name", "CLF"]) == 2
    assert "DNS-1035" in capsys.readouterr().err
    empty = tmp_path / "empty_repo"
    empty.mkdir()
    assert main(["deploy", "kserve", str(empty), "--name", "clf"]) == 2
    assert "no models found" in capsys.readouterr().err


def test_shipped_manifests_are_what_the_command_writes(tmp_path):
    """deploy/kserve/*.yaml: regenerated with the command in deploy/kserve/README.md."""
    readme = (ROOT / "deploy" / "kserve" / "README.md").read_text()
    command = re.search(r"unirt deploy kserve (.+?) -o out/", readme.replace("\\\n", " "), re.S).group(1).split()
    args = [str(ROOT / command[0])] + command[1:]
    assert main(["deploy", "kserve", *args, "-o", str(tmp_path)]) == 0
    for name in ("servingruntime.yaml", "inferenceservice.yaml"):
        shipped = (ROOT / "deploy" / "kserve" / name).read_text()
        assert shipped == (tmp_path / name).read_text(), f"deploy/kserve/{name} is stale: rerun the README's command"
        validate(yaml.safe_load(shipped))
    formats = [
        f["name"]
        for f in yaml.safe_load((tmp_path / "servingruntime.yaml").read_text())["spec"]["supportedModelFormats"]
    ]
    assert sorted(formats) == sorted(["onnx", "openvino", "tflite", "ncnn", "mnn", "tensorrt"])


# -- the image definition ------------------------------------------------------------------------------------------
def _dockerfile() -> str:
    return (ROOT / "deploy" / "kserve" / "Dockerfile").read_text()


def _arg_defaults(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in re.findall(r"^ARG (\w+)=(\S+)$", text, re.M):
        out.setdefault(name, []).append(value)
    return out


def test_the_images_install_line_matches_the_packages_extras():
    text = _dockerfile()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    defaults = _arg_defaults(text)
    assert set(defaults["UNIRT_EXTRAS"]) == {"serve"} and set(defaults["UNIRT_BACKENDS"]) == {"onnxruntime"}
    # unirt is installed from the wheel built here, with the extras asked for
    assert '"$(ls /wheels/unirt_runtime-[0-9]*.whl)[${UNIRT_EXTRAS}]"' in text
    assert "pip install --no-cache-dir ${specs}" in text
    for extra in EXTRAS:  # every extra `unirt deploy kserve --extras` may put in UNIRT_EXTRAS is the package's
        assert extra in extras, f"{extra!r} is not an extra in pyproject.toml"
    # each backend's plugin is built from plugins/<backend> and installed as the wheel of unirt-<backend>
    assert "./plugins/%s " in text and "/wheels/unirt_${b}-[0-9]*.whl" in text
    for backend, plugin in plugins().items():
        project = tomllib.loads((ROOT / "plugins" / backend / "pyproject.toml").read_text())["project"]
        assert project["name"] == plugin.distribution
        assert re.sub(r"[-.]+", "_", project["name"]) == f"unirt_{backend}"  # the wheel's file name
        if plugin.extra:
            assert plugin.extra in project["optional-dependencies"]
            assert f'if [ "$b" = {backend} ]; then wheel="${{wheel}}[{plugin.extra}]"' in text
    # the files the build copies exist
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for part in source.split():
            assert (ROOT / part).exists(), f"Dockerfile copies {part}, which is not in the tree"


def test_the_images_default_command_matches_the_runtime(onnx_model):
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", _dockerfile(), re.M).group(1))
    container = plan(onnx_model, "x").runtime["spec"]["containers"][0]
    assert container["command"] == json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", _dockerfile(), re.M).group(1))
    assert cmd == [a for a in container["args"] if not a.startswith("--threads")]
    assert re.search(r"^USER 1000$", _dockerfile(), re.M) and container["securityContext"]["runAsUser"] == 1000


def test_plugin_formats_match_the_installed_plugins():
    from unirt import registry

    checked = 0
    for name in registry.installed_names():
        if name in plugins():
            backend = registry.get_backend(name)
            # a format converted through another plugin (ONNX Runtime's torch.export, with the torch plugin's
            # exporter) needs that plugin beside it: not served by this plugin's image on its own
            assert set(plugins()[name].formats) == (set(backend.formats) | set(backend.converts_from)) - set(
                backend.converts_through
            ), name
            checked += 1
    assert checked >= 1
    assert image_contents([], [ModelFormat.NCNN]).extras == ("serve", "convert")  # ncnn converts ONNX on load


def test_onnx_external_data_travels_under_its_own_name(onnx_model, tmp_path):
    """The graph names its external data file: the repository keeps that name (and folder) next to model.onnx."""
    import unirt

    path = models.with_external_data(onnx_model, tmp_path / "src" / "big.onnx", location="weights/big.onnx.data")
    d = plan(path, "clf-ext")
    assert [rel for _, rel in d.repository_files] == ["clf-ext/1/model.onnx", "clf-ext/1/weights/big.onnx.data"]
    d.write(tmp_path / "out")
    laid_out = tmp_path / "out" / "model-repository" / "clf-ext" / "1" / "model.onnx"
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    with unirt.Session(laid_out, backend="onnxruntime") as served, unirt.Session(onnx_model) as original:
        assert served.model.files == (laid_out, laid_out.parent / "weights" / "big.onnx.data")
        np.testing.assert_allclose(served.run(x)["probs"], original.run(x)["probs"], rtol=1e-6)
