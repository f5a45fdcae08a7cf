"""`unirt serve`: an inference server that speaks the KServe v2 / Triton protocol over HTTP/REST and gRPC, so
`tritonclient.http` and `tritonclient.grpc` work unchanged, on every unirt backend.

    unirt serve --model-repository models/          # Triton's layout: <model>/config.pbtxt, <model>/1/model.onnx
    unirt serve model.onnx                          # one model, config completed from the model

    from unirt.serve import ServeOptions, ServerThread
    with ServerThread(ServeOptions(model="model.onnx", http_port=0, grpc_port=0, metrics_port=0)) as server:
        print(server.ports)                         # {"http": ..., "grpc": ..., "metrics": ...}

Needs the `serve` extra: `pip install '.[serve]'` from unirt's source checkout (uvicorn, starlette, grpcio, protobuf,
prometheus_client, tritonclient for the v2 protocol's gRPC stubs and the model config schema).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..errors import BackendUnavailableError

__all__ = ["require", "ServeOptions", "InferenceServer", "ServerThread"]

_NEEDS = {
    "uvicorn": "uvicorn",
    "starlette": "starlette",
    "grpc": "grpcio",
    "google.protobuf": "protobuf",
    "prometheus_client": "prometheus_client",
    "tritonclient.grpc.service_pb2_grpc": "tritonclient[grpc]",
}


def require() -> None:
    """Raise a clear error naming the serve extra when the server's dependencies are missing."""
    missing = []
    for module, dist in _NEEDS.items():
        try:
            import_module(module)
        except ImportError as exc:
            missing.append(f"{dist} ({exc})")
    if missing:
        raise BackendUnavailableError(
            "unirt serve needs the serve extra: pip install '.[serve]' (from unirt's source checkout). Missing: "
            + "; ".join(missing)
        )


def __getattr__(name: str) -> Any:
    if name in ("ServeOptions", "InferenceServer", "ServerThread"):
        require()
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
