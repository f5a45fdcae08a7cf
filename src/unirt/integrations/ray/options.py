"""What a Ray Serve replica loads, how it batches, and what Ray reserves for it — checked before Ray sees them.

Nothing here imports Ray (but `deployment_option_names`, lazily): the builder checks the options and opens the
model in the driver, so a mistake is a clear `unirt` error at `serve run` / `build()` time instead of a replica
that fails to start on some node later.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...backend import PRECISIONS
from ...devices import Device
from ...errors import ModelLoadError, UnsupportedOptionError
from ...formats import open_model

__all__ = [
    "ReplicaOptions",
    "DEPLOYMENT_OPTIONS",
    "LIVE_OPTIONS",
    "replica_resources",
    "deployment_options",
    "deployment_option_names",
    "live_options",
    "checked_model",
    "parse_app_args",
]

# Ray Serve's per-deployment settings (`serve.deployment(...)` / `Deployment.options(...)`), passed through as given.
# The installed Ray's own list (`deployment_option_names`) is used where Ray can be imported; this one where not.
DEPLOYMENT_OPTIONS = frozenset(
    {
        "num_replicas",
        "autoscaling_config",
        "max_ongoing_requests",
        "max_queued_requests",
        "ray_actor_options",
        "placement_group_bundles",
        "placement_group_strategy",
        "max_replicas_per_node",
        "user_config",
        "health_check_period_s",
        "health_check_timeout_s",
        "graceful_shutdown_wait_loop_s",
        "graceful_shutdown_timeout_s",
        "logging_config",
        "request_router_config",
    }
)
# Deployment.options parameters that are not settings a caller passes through: unirt sets the name, Ray refuses
# `version` (removed in Ray 2.x; Serve versions deployments itself).
_NOT_PASSED = frozenset({"self", "func_or_class", "name", "version"})
# What a running deployment's `user_config` may retune live (`UnirtDeployment.reconfigure`).
LIVE_OPTIONS = ("max_batch_size", "batch_wait_timeout_s")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")  # what unirt serve accepts as a model name


@dataclass(frozen=True)
class ReplicaOptions:
    """One replica's Session and batching. `threads` is also the CPUs Ray reserves per replica (default 1: scale
    with replicas, not threads); `device="cuda"` reserves one GPU, which Ray assigns (the replica sees it as cuda:0).

    `max_batch_size` requests arriving together are merged by `@serve.batch` (waiting at most
    `batch_wait_timeout_s` for more) into one `Session.run_many`, which packs them into one backend run where the
    model has a batch dim; `batched` as `Session` takes it (True for a dim 0 that is unnamed, as TFLite and
    OpenVINO IR give it, or fixed at N > 1: requests are then packed too); `max_batch` caps the rows of one backend
    run of a dynamic-batch model (and a v2 request's rows; default 1024 there)."""

    model: str
    name: str = ""
    backend: str = "auto"
    device: str = "cpu"
    threads: int = 1
    precision: str = "fp32"
    backend_options: dict[str, Any] = field(default_factory=dict)
    max_batch: int | None = None
    batched: bool | None = None
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.005
    max_request_bytes: int = 128 * 1024 * 1024

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise UnsupportedOptionError(f"model must be the path of a model file, got {self.model!r}")
        name = self.name or _default_name(self.model)
        if not _NAME.fullmatch(name):
            raise UnsupportedOptionError(
                f"name {name!r}: expected 1-128 letters, digits, '_', '-' or '.', not "
                "starting with '.' or '-' (it is the model's name in v2 URLs)"
            )
        object.__setattr__(self, "name", name)
        if not isinstance(self.backend, str) or not self.backend:
            raise UnsupportedOptionError(f"backend must be a backend name or 'auto', got {self.backend!r}")
        device = Device.parse(self.device)
        if device.index is not None:
            raise UnsupportedOptionError(
                f"device {self.device!r}: Ray assigns each replica its GPU (it sees it as "
                f"{device.kind}:0); ask for device={device.kind!r}"
            )
        _positive_int("threads", self.threads)
        if self.precision not in PRECISIONS:
            raise UnsupportedOptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.backend_options, Mapping):
            raise UnsupportedOptionError(f"backend_options must be a dict, got {type(self.backend_options).__name__}")
        object.__setattr__(self, "backend_options", dict(self.backend_options))
        if self.max_batch is not None:
            _positive_int("max_batch", self.max_batch)
        if self.batched is not None and not isinstance(self.batched, bool):
            raise UnsupportedOptionError(
                f"batched must be True, False or None (read from the model), got {self.batched!r}"
            )
        _positive_int("max_batch_size", self.max_batch_size)
        _positive_int("max_request_bytes", self.max_request_bytes)
        _wait_seconds("batch_wait_timeout_s", self.batch_wait_timeout_s)

    @property
    def gpus(self) -> int:
        """GPUs Ray must reserve: one for a CUDA/ROCm device or a backend that needs a GPU (TensorRT); a "gpu"
        device only where the backend's GPU is a Ray "GPU" (OpenVINO's is an Intel GPU): what its plugin declares."""
        from ... import registry

        kind = Device.parse(self.device).kind
        plugin = registry.find_backend(self.backend)
        if (plugin is not None and plugin.needs_gpu) or kind in ("cuda", "rocm"):
            return 1
        return 1 if kind == "gpu" and (plugin is None or plugin.gpu_vendor == "nvidia") else 0

    def session_kwargs(self) -> dict[str, Any]:
        """The `unirt.Session` arguments of a replica."""
        return {
            "backend": self.backend,
            "device": self.device,
            "threads": self.threads,
            "precision": self.precision,
            "backend_options": dict(self.backend_options),
            "max_batch": self.max_batch,
            "batched": self.batched,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as the replica's constructor receives them through Ray."""
        return asdict(self)


def _positive_int(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UnsupportedOptionError(f"{what} must be a positive integer, got {value!r}")


def _wait_seconds(what: str, wait: Any) -> None:
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 60:
        raise UnsupportedOptionError(f"{what} must be a number of seconds in 0..60, got {wait!r}")


def live_options(user_config: Any) -> dict[str, Any]:
    """The batching settings of a deployment's `user_config` (a dict of `LIVE_OPTIONS`), checked: the builder
    checks them in the driver, each replica's `reconfigure` again when Ray hands them over (at start and on
    every update)."""
    if user_config is None:
        return {}
    if not isinstance(user_config, Mapping):
        raise UnsupportedOptionError(
            f"user_config must be a dict of {', '.join(LIVE_OPTIONS)}, got {type(user_config).__name__}"
        )
    unknown = sorted(map(str, set(user_config) - set(LIVE_OPTIONS)))
    if unknown:
        raise UnsupportedOptionError(
            f"user_config: unknown key(s) {', '.join(unknown)}; a running unirt deployment "
            f"can retune {', '.join(LIVE_OPTIONS)} (anything else needs a new deployment)"
        )
    if "max_batch_size" in user_config:
        _positive_int("user_config max_batch_size", user_config["max_batch_size"])
    if "batch_wait_timeout_s" in user_config:
        _wait_seconds("user_config batch_wait_timeout_s", user_config["batch_wait_timeout_s"])
    return dict(user_config)


def checked_model(options: ReplicaOptions, check: bool = True) -> ReplicaOptions:
    """`options` with the model's absolute path, after opening it (format and structure) in the driver, so a
    missing or damaged file is a `ModelLoadError` here rather than replicas failing to start later. `check=False`
    passes the path on unchecked, for clusters where only the worker nodes hold the file."""
    if not check:
        return options
    path = Path(options.model).expanduser()
    if not path.exists():
        where = "" if path.is_absolute() else f" (looked in {os.getcwd()})"
        raise ModelLoadError(
            f"{options.model}: no such model file{where}; every replica loads this path. Where "
            "only the cluster's worker nodes hold the file, pass check_model=False"
        )
    model = open_model(os.path.abspath(path))  # relative to the driver's directory, not each replica's
    return replace(options, model=str(model.path))


@lru_cache(maxsize=1)
def deployment_option_names() -> frozenset[str]:
    """The `Deployment.options` parameters of the installed Ray Serve (`DEPLOYMENT_OPTIONS` without Ray)."""
    try:
        from ray.serve import Deployment
    except ImportError:
        return DEPLOYMENT_OPTIONS
    params = inspect.signature(Deployment.options).parameters
    return frozenset(p for p in params if p not in _NOT_PASSED and not p.startswith("_"))


def _default_name(model: str) -> str:
    stem = Path(model).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip(".-") or "model"


def replica_resources(options: ReplicaOptions) -> dict[str, Any]:
    """Ray actor resources from what the session needs: `num_cpus` = threads, `num_gpus` for a CUDA device."""
    resources: dict[str, Any] = {"num_cpus": options.threads}
    if options.gpus:
        resources["num_gpus"] = options.gpus
    return resources


def deployment_options(options: ReplicaOptions, given: Mapping[str, Any]) -> dict[str, Any]:
    """`Deployment.options(...)` for the replica: Ray's settings as given, with resources and a concurrency limit
    derived from the session where the caller set none (`ray_actor_options` given are merged over the derived)."""
    accepted = deployment_option_names()
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise UnsupportedOptionError(
            f"unknown option(s) {', '.join(unknown)}; the deployment takes unirt's "
            f"{', '.join(_REPLICA_FIELDS)} and Ray Serve's {', '.join(sorted(accepted))}"
        )
    live = live_options(given.get("user_config"))
    out = dict(given)
    actor = given.get("ray_actor_options") or {}
    if not isinstance(actor, Mapping):
        raise UnsupportedOptionError(f"ray_actor_options must be a dict, got {type(actor).__name__}")
    out["ray_actor_options"] = {**replica_resources(options), **actor}
    # A replica must accept a full batch's requests at once, and the next batch's while one runs.
    out.setdefault("max_ongoing_requests", max(2 * live.get("max_batch_size", options.max_batch_size), 5))
    out.setdefault("name", f"unirt-{options.name}")
    return out


_REPLICA_FIELDS = tuple(ReplicaOptions.__dataclass_fields__)
_INTS = {
    "threads",
    "max_batch",
    "max_batch_size",
    "max_request_bytes",
    "max_ongoing_requests",
    "max_queued_requests",
    "max_replicas_per_node",
    "max_constructor_retry_count",
    "max_surge_percent",
}
_FLOATS = {
    "batch_wait_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
}
_JSON = {
    "backend_options",
    "autoscaling_config",
    "ray_actor_options",
    "placement_group_bundles",
    "user_config",
    "logging_config",
    "request_router_config",
    "backpressure_config",
    "placement_group_bundle_label_selector",
    "gang_scheduling_config",
    "deployment_actors",
}
_STRINGS = {"model", "name", "backend", "device", "precision", "placement_group_strategy"}
_OPTIONAL_BOOLS = {"batched"}


def _optional_bool(key: str, text: str) -> bool | None:
    value = {
        "true": True,
        "1": True,
        "yes": True,
        "false": False,
        "0": False,
        "no": False,
        "none": None,
        "null": None,
        "auto": None,
    }.get(text.lower(), ...)
    if value is ...:
        raise UnsupportedOptionError(f"argument {key}={text!r}: expected true, false or none")
    return value


def parse_app_args(args: Mapping[str, Any]) -> tuple[ReplicaOptions, dict[str, Any]]:
    """Options from `serve run unirt.integrations.ray:app key=value ...` (strings) or a Serve config file's `args`
    (typed): numbers as numbers, dicts as JSON, `num_replicas=auto` for autoscaling."""
    if not isinstance(args, Mapping):
        raise UnsupportedOptionError(f"application arguments must be a dict, got {type(args).__name__}")
    if "model" not in args:
        raise UnsupportedOptionError("the unirt application needs model=PATH (the model file every replica loads)")
    replica, ray_options = {}, {}
    accepted = deployment_option_names()
    for key, value in args.items():
        value = _typed(key, value)
        if key in _REPLICA_FIELDS:
            replica[key] = value
        elif key in accepted:
            ray_options[key] = value
        else:
            raise UnsupportedOptionError(
                f"unknown argument {key!r}; the application takes unirt's "
                f"{', '.join(_REPLICA_FIELDS)}, check_model and Ray Serve's "
                f"{', '.join(sorted(accepted))}"
            )
    options = ReplicaOptions(**replica)
    return options, deployment_options(options, ray_options)


def _typed(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if key in _INTS:
            return int(text)
        if key in _FLOATS:
            return float(text)
        if key == "num_replicas":
            return text if text == "auto" else int(text)
        if key in _JSON:
            return json.loads(text)
    except ValueError as exc:
        kind = "an integer" if key in _INTS | {"num_replicas"} else "a number" if key in _FLOATS else "JSON"
        raise UnsupportedOptionError(f"argument {key}={value!r}: expected {kind} ({exc})") from None
    if key in _STRINGS:
        return value
    if key in _OPTIONAL_BOOLS:
        return _optional_bool(key, text)
    try:  # a setting of a newer Ray than the lists above know: a number or JSON where it reads as one
        return json.loads(text)
    except ValueError:
        return value


def app_flag(args: Mapping[str, Any], key: str = "check_model", default: bool = True) -> bool:
    """A yes/no application argument (`check_model=false`), as a bool."""
    value = args.get(key, default)
    if isinstance(value, str):
        value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
            value.strip().lower(), value
        )
    if not isinstance(value, bool):
        raise UnsupportedOptionError(f"argument {key}={value!r}: expected true or false")
    return value
