"""The model manager: which models and versions are loaded, their states, loading and unloading.

Loads are serialized; a (re)load builds the new versions first and swaps them in only when all succeed, so a
failed reload leaves the old versions serving. Unloading drains in-flight requests before closing Sessions.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import UnirtError
from .config import ConfigError, parse_config_json, read_config, select_versions
from .errors import LoadFailed, NotFound, ServeError, Unavailable, Unsupported
from .model import ISOLATE_MODES, LoadedModel
from .repository import Repository, check_model_name, parse_version

__all__ = ["ModelManager", "VersionState"]
log = logging.getLogger(__name__)


@dataclass
class VersionState:
    state: str  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str = ""


@dataclass
class _Entry:
    versions: dict[int, LoadedModel] = field(default_factory=dict)
    states: dict[int, VersionState] = field(default_factory=dict)
    reason: str = ""  # why the model as a whole is not loaded


class ModelManager:
    """Models of one repository. `explicit`: load/unload requests are allowed (Triton's explicit control mode)."""

    def __init__(
        self,
        repository: Repository,
        *,
        explicit: bool = False,
        default_max_batch_size: int = 4,
        drain_timeout: float = 30.0,
        default_threads: int | None = None,
        isolate: str = "auto",
        max_queue_size: int | None = None,
    ) -> None:
        if isolate not in ISOLATE_MODES:
            raise Unsupported(f"isolate must be one of {', '.join(ISOLATE_MODES)}, got {isolate!r}")
        if max_queue_size is not None and max_queue_size < 0:
            raise Unsupported(f"max_queue_size must be >= 0 (0: unbounded), got {max_queue_size}")
        self.isolate = isolate
        self.max_queue_size = max_queue_size
        self.repository = repository
        self.explicit = explicit
        self.default_max_batch_size = default_max_batch_size
        self.default_threads = default_threads
        self.drain_timeout = drain_timeout
        self._entries: dict[str, _Entry] = {}
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()

    # -- lookups (hot path: no load lock) ----------------------------------------------------------------------
    def get(self, name: str, version: str | int | None = None) -> LoadedModel:
        """The loaded model to run: `version` or, by default, the highest loaded version."""
        entry = self._entries.get(name)
        if entry is None or not entry.versions:
            check_model_name(name)
            if entry is not None and entry.states:
                reason = entry.reason or "not loaded"
                raise Unavailable(f"model {name!r} is not ready: {reason}")
            raise NotFound(
                f"unknown model {name!r}"
                + (f"; loaded models: {', '.join(self.ready_names())}" if self.ready_names() else "")
            )
        wanted = parse_version(version)
        versions = entry.versions
        if wanted is None:
            return versions[max(versions)]
        model = versions.get(wanted)
        if model is None:
            state = entry.states.get(wanted)
            if state is not None and state.state != "READY":
                raise Unavailable(
                    f"model {name!r} version {wanted} is not ready: {state.state.lower()}"
                    f"{': ' + state.reason if state.reason else ''}"
                )
            raise NotFound(
                f"model {name!r} has no version {wanted}; loaded versions: {', '.join(map(str, sorted(versions)))}"
            )
        return model

    def is_ready(self, name: str, version: str | int | None = None) -> bool:
        try:
            return self.get(name, version).ready
        except UnirtError:
            return False

    def check_ready(self, name: str, version: str | int | None = None) -> None:
        """Raise why the model is not ready (unknown: NotFound; not loaded, or every instance restarting after a
        crash: Unavailable)."""
        model = self.get(name, version)
        if not model.ready:
            raise Unavailable(f"model {name!r} version {model.version} is not ready: {model.not_ready_reason}")

    def ready_names(self) -> list[str]:
        return sorted(n for n, e in self._entries.items() if e.versions)

    def failed(self) -> list[str]:
        """Models whose last load failed (and which serve no version)."""
        return sorted(n for n, e in self._entries.items() if not e.versions and e.reason and e.reason != "unloaded")

    def loaded(self) -> list[LoadedModel]:
        return [m for e in list(self._entries.values()) for m in list(e.versions.values())]

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """The repository index: every model in the repository and every version it has a state for."""
        rows = []
        names = sorted(set(self.repository.names()) | set(self._entries))
        for name in names:
            entry = self._entries.get(name)
            if entry is None or not entry.states:
                if not ready_only:
                    row = {"name": name}
                    if entry is not None and entry.reason:
                        row.update(state="UNAVAILABLE", reason=entry.reason)
                    rows.append(row)
                continue
            for version, st in sorted(entry.states.items()):
                if ready_only and st.state != "READY":
                    continue
                row = {"name": name, "version": str(version), "state": st.state}
                if st.reason:
                    row["reason"] = st.reason
                rows.append(row)
        return rows

    # -- control ---------------------------------------------------------------------------------------------
    def load_all(self, names: list[str] | None = None) -> None:
        """Load every model in the repository (or `names`); a model that fails is logged and left unavailable."""
        for name in self.repository.names() if names is None else names:
            try:
                self._load(name)
            except UnirtError as exc:
                log.error("model %r failed to load: %s", name, exc)

    def load(self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None) -> None:
        """The repository `load` request: (re)load `name`, optionally with an override config (JSON). A model
        that fails to load (bad config, bad model file, a backend that refuses it) raises `LoadFailed` (400)."""
        if not self.explicit:
            raise Unsupported(
                "explicit model load / unload is not allowed: start the server with --model-control-mode=explicit"
            )
        if files:
            raise Unsupported("loading a model from files sent with the request is not supported by unirt serve")
        check_model_name(name)
        try:
            config = parse_config_json(config_json, f"model {name!r}: config override") if config_json else None
            self._load(name, config)
        except ServeError:
            raise
        except UnirtError as exc:  # a model that fails to load is the request's failure (Triton: 400)
            text = str(exc)
            raise LoadFailed(text if text.startswith(f"model {name!r}") else f"model {name!r}: {text}") from exc

    def _load(self, name: str, config: Any = None) -> None:
        with self._load_lock:
            source = self.repository.source(name)  # an unknown name leaves no entry behind (NotFound)
            entry = self._entries.setdefault(name, _Entry())
            try:
                if config is None:
                    config = read_config(source.config_path)
                versions = select_versions(config, list(source.versions))
                if not versions:
                    raise ConfigError(
                        f"model {name!r}: no version directories (positive integers) in {source.directory}"
                    )
            except UnirtError as exc:
                entry.reason = str(exc)
                raise
            fresh: dict[int, LoadedModel] = {}
            for v in versions:
                entry.states[v] = VersionState("LOADING")
            try:
                for v in versions:
                    fresh[v] = LoadedModel.load(
                        source,
                        v,
                        config,
                        default_max_batch_size=self.default_max_batch_size,
                        default_threads=self.default_threads,
                        isolate=self.isolate,
                        max_queue_size=self.max_queue_size,
                    )
            except UnirtError as exc:
                for model in fresh.values():
                    model.close()
                for v in versions:
                    if v not in entry.versions:
                        entry.states[v] = VersionState("UNAVAILABLE", str(exc))
                    else:
                        entry.states[v] = VersionState("READY")
                entry.reason = str(exc)
                raise
            old = entry.versions
            with self._lock:
                entry.versions = fresh
                entry.reason = ""
                entry.states = {v: VersionState("READY") for v in fresh}
                for v in old:
                    if v not in fresh:
                        entry.states[v] = VersionState("UNAVAILABLE", "unloaded")
        for model in old.values():
            model.close(self.drain_timeout)

    def unload(self, name: str) -> None:
        if not self.explicit:
            raise Unsupported(
                "explicit model load / unload is not allowed: start the server with --model-control-mode=explicit"
            )
        check_model_name(name)
        with self._load_lock:
            entry = self._entries.get(name)
            if entry is None and name not in self.repository.names():
                raise NotFound(f"unknown model {name!r}")
            if entry is None or not entry.versions:
                return
            old = entry.versions
            with self._lock:
                entry.versions = {}
                entry.states = {v: VersionState("UNAVAILABLE", "unloaded") for v in old}
                entry.reason = "unloaded"
        for model in old.values():
            model.close(self.drain_timeout)

    def close(self) -> None:
        """Unload everything, draining in-flight requests."""
        with self._load_lock:
            models = self.loaded()
            for entry in self._entries.values():
                entry.states = {v: VersionState("UNAVAILABLE", "server shutting down") for v in entry.versions}
                entry.versions = {}
        for model in models:
            model.close(self.drain_timeout)
