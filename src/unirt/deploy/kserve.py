"""KServe manifests for `unirt serve`: a `ServingRuntime` running the unirt image, and an `InferenceService` for
a model or a model repository.

KServe downloads the service's `storageUri` into /mnt/models and starts the runtime's container on it; `unirt
serve --model-repository=/mnt/models` then answers the v2 protocol (HTTP on 8080, gRPC on 9000) that KServe routes
to, with Prometheus metrics on 8002. A single model file is laid out as a Triton repository
(`<name>/1/model.<ext>`), so its v2 name is the service's name.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, registry
from ..errors import ModelLoadError, UnsupportedOptionError
from ..formats import Format, ModelFile, ModelFormat, open_model
from .image import ImageContents, image_contents, plugin

__all__ = [
    "KServeDeployment",
    "plan",
    "serving_runtime",
    "inference_service",
    "kserve_format",
    "HTTP_PORT",
    "GRPC_PORT",
    "METRICS_PORT",
]

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8080, 9000, 8002  # KServe's defaults for v2 runtimes (Triton's too)
# KServe's model format names and the served file names are what the plugin owning each format declares
# (`unirt.Backend.format_facts`, read through `unirt.registry.format_facts`).
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


@dataclass
class KServeDeployment:
    """Everything `unirt deploy kserve` writes: the two manifests, the image they run, and the files of the model
    repository to upload when a single model file was given."""

    name: str
    runtime: dict[str, Any]
    service: dict[str, Any]
    image: str
    contents: ImageContents
    storage_uri: str
    repository_files: list[tuple[Path, str]] = field(default_factory=list)  # (source, path in the repository)

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write servingruntime.yaml, inferenceservice.yaml and (for a model file) model-repository/."""
        yaml = _yaml()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        header = f"# Written by `unirt deploy kserve` (unirt {__version__}).\n"
        written = []
        for file_name, doc in (("servingruntime.yaml", self.runtime), ("inferenceservice.yaml", self.service)):
            path = out / file_name
            path.write_text(header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
            written.append(path)
        if self.repository_files:
            repo = out / "model-repository"
            target = repo / self.name
            if target.exists():
                shutil.rmtree(target)
            for source, relative in self.repository_files:
                dest = repo / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            written.append(repo)
        return written


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise UnsupportedOptionError(
            f"writing KServe manifests needs PyYAML: pip install '.[deploy]' from unirt's source checkout ({exc})"
        ) from None
    return yaml


def plan(
    model_or_repo: str | Path,
    name: str,
    *,
    extras: Sequence[str] = (),
    image: str | None = None,
    runtime_name: str = "unirt",
    storage_uri: str | None = None,
    cpus: float = 1,
    memory: str = "2Gi",
    gpus: int | None = None,
    namespace: str | None = None,
) -> KServeDeployment:
    """The manifests for serving `model_or_repo` (a model file, or a Triton model repository directory) as
    InferenceService `name` on a ServingRuntime `runtime_name` whose image holds the `extras` (backends or unirt
    extras; the backends the models' formats need are added)."""
    _check_dns("--name", name)
    _check_dns("--runtime-name", runtime_name)
    if namespace is not None:
        _check_dns("--namespace", namespace)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0:
        raise UnsupportedOptionError(f"--cpus must be a positive number, got {cpus!r}")
    if not isinstance(memory, str) or not _QUANTITY.fullmatch(memory):
        raise UnsupportedOptionError(f"--memory must be a Kubernetes quantity such as 2Gi or 512Mi, got {memory!r}")
    source = Path(model_or_repo)
    if source.is_dir():
        formats: list[Format] = _repository_formats(source)
        files: list[tuple[Path, str]] = []
    else:
        model = open_model(source)
        formats = [model.format]
        files = _repository_layout(model, name)
    contents = image_contents(extras, formats)
    if gpus is None:  # a format only a GPU engine serves, or an image of GPU engines only
        gpu = [plugin(b).gpu for b in contents.backends]
        gpus = 1 if any(plugin(_server_of(f, contents)).gpu for f in formats) or (gpu and all(gpu)) else 0
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise UnsupportedOptionError(f"--gpus must be a non-negative integer, got {gpus!r}")
    image = image or f"unirt-serve:{__version__}-{'-'.join(contents.backends)}"
    storage_uri = storage_uri or f"pvc://unirt-models/{name}"
    threads = max(1, int(cpus))
    runtime = serving_runtime(
        runtime_name, image, contents.formats, cpus=cpus, memory=memory, threads=threads, namespace=namespace
    )
    service = inference_service(
        name, runtime_name, formats[0], storage_uri, cpus=cpus, memory=memory, gpus=gpus, namespace=namespace
    )
    return KServeDeployment(name, runtime, service, image, contents, storage_uri, files)


def kserve_format(fmt: Format) -> dict[str, str]:
    """KServe's modelFormat for `fmt` ({"name": ..., "version": ...}), as the plugin that owns it declares."""
    facts = registry.format_facts(fmt)
    return {"name": facts.kserve_name, **({"version": facts.kserve_version} if facts.kserve_version else {})}


def _server_of(fmt: Format, contents: ImageContents) -> str:
    """The image's backend that serves `fmt`: the first that reads it as it is, else the first that converts it."""
    return next((b for b in contents.backends if fmt in plugin(b).formats), contents.backends[0])


def _check_dns(what: str, value: str) -> None:
    if not isinstance(value, str) or len(value) > 63 or not _DNS_1035.fullmatch(value):
        raise UnsupportedOptionError(
            f"{what} {value!r}: KServe names are DNS-1035 labels: at most 63 lower-case "
            "letters, digits and '-', starting with a letter and not ending with '-'"
        )


def _repository_layout(model: ModelFile, name: str) -> list[tuple[Path, str]]:
    """A model file (and its weights file) as version 1 of model `name` in a Triton repository. An ONNX model's
    external data files keep their names (relative to the model's folder): the graph refers to them by name."""
    assert model.path is not None
    main = registry.format_facts(model.format).model_files[0]
    if model.format is ModelFormat.NCNN and model.path.suffix != ".param":
        raise ModelLoadError(f"{model.path}: a binary ncnn .param must be converted to a text .param to be served")
    out = [(model.path, f"{name}/1/{main}")]
    external = set(model.details.get("external_data", ()))
    for extra in model.files[1:]:
        relative = extra.relative_to(model.path.parent).as_posix() if extra in external else f"model{extra.suffix}"
        if relative == main:
            raise ModelLoadError(
                f"{model.path}: its external data file {extra.name} would overwrite the served "
                f"{main}; rename the data file (and re-save the model) to deploy it"
            )
        out.append((extra, f"{name}/1/{relative}"))
    return out


def _repository_formats(root: Path) -> list[Format]:
    """The formats of the models in a Triton repository (the newest version `unirt serve` loads), in model-name
    order. Each model file is found as the server finds it: config.pbtxt's default_model_filename, or the usual
    name for its backend."""
    from ..serve.repository import DirectoryRepository

    repo = DirectoryRepository(root)
    formats = []
    for model_name in repo.names():
        source = repo.source(model_name)
        if not source.versions:
            continue
        formats.append(open_model(_served_file(source)).format)
    if not formats:
        raise ModelLoadError(f"{root}: no models found; a Triton repository holds <model>/<version>/model.<ext>")
    return formats


def _served_file(source: Any) -> Path:
    """The model file `unirt serve` loads for `source`'s newest selected version (see `LoadedModel.load`)."""
    from ..serve.errors import ServeError

    version, backend, file_name = max(source.versions), "auto", ""
    if source.config_path is not None:  # reading config.pbtxt needs the serve extra's protobuf and tritonclient
        try:
            from ..serve.config import backend_for, read_config, select_versions
        except ImportError as exc:
            raise UnsupportedOptionError(
                f"{source.config_path}: reading a model's config.pbtxt needs unirt serve's "
                f"dependencies: pip install '.[serve]' from unirt's source checkout "
                f"({exc})"
            ) from None
        config = read_config(source.config_path)
        version = max(select_versions(config, list(source.versions)), default=version)
        backend, file_name = backend_for(config), config.default_model_filename
    try:
        return source.model_file(version, backend, file_name)
    except ServeError as exc:
        raise ModelLoadError(str(exc)) from None


def _quantity(cpus: float) -> str:
    return str(int(cpus)) if float(cpus).is_integer() else f"{int(round(cpus * 1000))}m"


def _resources(cpus: float, memory: str, gpus: int = 0) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": _quantity(cpus), "memory": memory}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HTTP_PORT},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def serving_runtime(
    name: str,
    image: str,
    formats: Sequence[Format],
    *,
    cpus: float = 1,
    memory: str = "2Gi",
    threads: int = 1,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A `ServingRuntime` running `unirt serve` on the model repository KServe mounts at /mnt/models."""
    metadata: dict[str, Any] = {"name": name, "annotations": {"serving.kserve.io/server-type": "unirt"}}
    if namespace:
        metadata["namespace"] = namespace
    container = {
        "name": "kserve-container",
        "image": image,
        "command": ["unirt"],
        "args": [
            "serve",
            "--model-repository=/mnt/models",
            "--host=0.0.0.0",
            f"--http-port={HTTP_PORT}",
            f"--grpc-port={GRPC_PORT}",
            f"--metrics-port={METRICS_PORT}",
            f"--threads={threads}",
        ],
        "env": [{"name": "UNIRT_CACHE_DIR", "value": "/tmp/unirt-cache"}],  # conversions and engines, writable
        "ports": [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        # Loading may convert a model or build a TensorRT engine: up to 10 minutes before the first readiness.
        "startupProbe": _probe("/v2/health/ready", 10, 60),
        "readinessProbe": _probe("/v2/health/ready", 10, 3),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "resources": _resources(cpus, memory),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    supported = [{**kserve_format(f), "autoSelect": True, "priority": 1} for f in formats]
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": metadata,
        "spec": {
            "annotations": {"prometheus.kserve.io/port": str(METRICS_PORT), "prometheus.kserve.io/path": "/metrics"},
            "supportedModelFormats": supported,
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [container],
        },
    }


def inference_service(
    name: str,
    runtime: str,
    model_format: Format,
    storage_uri: str,
    *,
    cpus: float = 1,
    memory: str = "2Gi",
    gpus: int = 0,
    namespace: str | None = None,
) -> dict[str, Any]:
    """An `InferenceService` serving the repository at `storage_uri` on the unirt runtime."""
    metadata: dict[str, Any] = {"name": name, "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": kserve_format(model_format),
                    "runtime": runtime,
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                    "resources": _resources(cpus, memory, gpus),
                }
            }
        },
    }
