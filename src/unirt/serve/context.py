"""What both protocol layers share: the models, the shared-memory registry, limits, and the v2 documents
(server and model metadata, statistics) they answer with, built here once so HTTP and gRPC agree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from .config import ModelSpec
from .inference import InferenceService
from .manager import ModelManager
from .shm import SharedMemoryRegistry

__all__ = ["ServerContext", "EXTENSIONS", "model_metadata"]

EXTENSIONS = [
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
]


@dataclass
class ServerContext:
    manager: ModelManager
    shm: SharedMemoryRegistry = field(default_factory=SharedMemoryRegistry)
    max_request_bytes: int = 128 * 1024 * 1024
    live: bool = True
    ready: bool = False
    service: InferenceService = field(init=False)

    def __post_init__(self) -> None:
        self.service = InferenceService(self.manager, self.shm)

    def is_ready(self) -> bool:
        """Ready when started, not shutting down, and no model whose load was attempted failed (Triton's
        strict readiness)."""
        return self.ready and not self.manager.failed()

    @staticmethod
    def server_metadata() -> dict[str, Any]:
        return {"name": "unirt", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        spec = self.manager.get(name, version).spec
        return model_metadata(spec, [str(m.version) for m in self.manager.loaded() if m.name == name])

    def model_config(self, name: str, version: str = "") -> Any:
        return self.manager.get(name, version).spec.config

    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        if name:
            if version:
                models = [self.manager.get(name, version)]
            else:
                self.manager.get(name)  # raises for an unknown or unloaded model
                models = [m for m in self.manager.loaded() if m.name == name]
        else:
            models = self.manager.loaded()
        models.sort(key=lambda m: (m.name, m.version))
        return {"model_stats": [m.stats.to_v2(m.name, m.version) for m in models]}

    def shm_status(self, name: str = "") -> list[dict[str, Any]]:
        return [
            {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
            for r in self.shm.status(name or None)
        ]


def model_metadata(spec: ModelSpec, versions: list[str]) -> dict[str, Any]:
    """The v2 model metadata document of a model's spec (shared with the Ray Serve deployment)."""
    batch = [-1] if spec.max_batch_size > 0 else []
    return {
        "name": spec.name,
        "versions": sorted(versions, key=int),
        "platform": spec.config.platform or spec.backend,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": batch + list(t.dims)} for t in spec.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": batch + list(t.dims)} for t in spec.outputs],
    }
