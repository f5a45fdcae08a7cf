"""unirt on Ray Serve: one Session per replica, concurrent requests merged into `Session.run_many` by
`@serve.batch`, answered to Python handles (numpy in and out) and to HTTP with the KServe v2 protocol.

    serve run unirt.integrations.ray:app model=model.onnx threads=2 num_replicas=2     # Ray's CLI

    from ray import serve
    from unirt.integrations.ray import build, RetryingHandle
    handle = serve.run(build("model.onnx", threads=2, num_replicas=2), name="classifier")
    outputs = handle.remote(x).result()                       # {"probs": ndarray, ...}
    outputs = RetryingHandle(handle).infer(x)                 # re-sent if its replica dies meanwhile

Needs the ray extra: `pip install '.[ray]'` from unirt's source checkout (ray[serve], and unirt serve's v2 codec
dependencies).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ...errors import BackendUnavailableError

__all__ = ["require", "build", "app", "UnirtDeployment", "RetryingHandle", "ReplicaOptions", "replica_resources"]

_NEEDS = {
    "ray.serve": "ray[serve]",
    "starlette": "starlette",
    "google.protobuf": "protobuf",
    "tritonclient.grpc.model_config_pb2": "tritonclient[grpc]",
}
_LAZY = {"build": "deployment", "app": "deployment", "UnirtDeployment": "deployment", "RetryingHandle": "client"}
_PLAIN = {"ReplicaOptions": "options", "replica_resources": "options"}


def require() -> None:
    """Raise a clear error naming the ray extra when Ray Serve or the v2 codec's dependencies are
    missing."""
    missing = []
    for module, dist in _NEEDS.items():
        try:
            import_module(module)
        except ImportError as exc:
            missing.append(f"{dist} ({exc})")
    if missing:
        raise BackendUnavailableError(
            "unirt's Ray Serve integration needs the ray extra: pip install '.[ray]' (from unirt's source checkout). "
            "Missing: " + "; ".join(missing)
        )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        require()
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    if name in _PLAIN:
        return getattr(import_module(f".{_PLAIN[name]}", __name__), name)
    raise AttributeError(name)
