"""The model repository: Triton's layout on disk, or one model file (the single-model shortcut).

    <repository>/<model>/config.pbtxt           optional: completed from the model when missing
    <repository>/<model>/<version>/model.onnx   versions are positive integers; file name per backend (its own
                                                format's, then one it converts on load, e.g. model.onnx for ncnn)
    <repository>/<model>/warmup/...             files named by model_warmup's input_data_file

Model names and file names from requests are validated here, so nothing outside the repository is ever read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import registry
from ..errors import UnirtError
from ..formats import ModelFormat
from ..registry import get_backend
from .errors import BadRequest, NotFound

__all__ = [
    "Repository",
    "DirectoryRepository",
    "SingleModelRepository",
    "check_model_name",
    "parse_version",
    "model_files",
]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


def _format_files() -> dict[str, tuple[str, ...]]:
    """Each format an installed plugin owns (ModelFormat order, then plugins' own) -> its model file names, as
    that plugin declares them (`Backend.format_facts`)."""
    formats = [*ModelFormat, *sorted(registry.plugin_formats())]
    return {f.value: registry.format_facts(f).model_files for f in formats if registry.owner(f) is not None}


def model_files(backend: str) -> tuple[str, ...]:
    """What `backend`'s model file is called when the config names none (Triton's default_model_filename): the
    names of the formats it owns; for "auto" (or a backend not installed), every installed plugin's names."""
    by_format = _format_files()
    plugin = registry.find_backend(backend)
    if plugin is None:
        return tuple(n for names in by_format.values() for n in names)
    owned = {f.value for f in plugin.formats if plugin.owns(f)}
    return tuple(n for fmt, names in by_format.items() if fmt in owned for n in names)


def check_model_name(name: str) -> str:
    """Refuse names that could leave the repository or that Triton clients could not address."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise BadRequest(
            f"invalid model name {name!r}: expected 1-128 characters of letters, digits, '_', '-' "
            "and '.', not starting with '.' or '-'"
        )
    return name


def parse_version(version: str | int | None) -> int | None:
    """'' or None -> None (the model's default version); '3' -> 3; anything else is a bad request."""
    if version is None or version == "":
        return None
    text = str(version)
    if not text.isdigit() or len(text) > 18 or int(text) < 1:
        raise BadRequest(f"invalid model version {version!r}: expected a positive integer")
    return int(text)


@dataclass(frozen=True)
class ModelSource:
    """Where one model lives: its directory, its config.pbtxt (if any) and its version directories."""

    name: str
    directory: Path | None
    config_path: Path | None
    versions: dict[int, Path]  # version -> version directory, or the model file itself (shortcut)

    def model_file(self, version: int, backend: str, default_filename: str = "") -> Path:
        """The model file of `version`: the config's default_model_filename, or the backend's usual name."""
        where = self.versions[version]
        if where.is_file():
            return where
        names = (default_filename,) if default_filename else model_files(backend)
        if not default_filename and registry.find_backend(backend) is not None:  # then what it converts (ONNX)
            readable = _readable_formats(backend)
            names += tuple(
                n for fmt, files in _format_files().items() if fmt in readable for n in files if n not in names
            )
        for candidate in names:
            if "/" in candidate or "\\" in candidate or candidate in ("", ".", ".."):
                raise BadRequest(
                    f"default_model_filename {candidate!r}: expected a file name inside the version directory"
                )
            path = where / candidate
            if path.is_file():
                return path
        found = sorted(p.name for p in where.iterdir()) if where.is_dir() else []
        raise NotFound(
            f"model {self.name!r} version {version}: no {' or '.join(names)} in {where} "
            f"(found: {', '.join(found) or 'nothing'})"
        )

    def warmup_file(self, file_name: str) -> Path:
        if self.directory is None:
            raise BadRequest("model_warmup input_data_file needs a model directory (not the single-model shortcut)")
        path = (self.directory / "warmup" / file_name).resolve()
        if (self.directory / "warmup").resolve() not in path.parents:
            raise BadRequest(f"model_warmup input_data_file {file_name!r} is outside {self.directory / 'warmup'}")
        return path


def _readable_formats(backend: str) -> frozenset[str]:
    """The formats `backend` reads or converts on load (none when its plugin is not installed: its own file
    names are then the ones looked for, and loading says what to install)."""
    try:
        plugin = get_backend(backend)
    except UnirtError:
        return frozenset()
    return frozenset(f.value for f in plugin.formats | plugin.converts_from)


class Repository:
    """A set of models by name."""

    def names(self) -> list[str]:
        raise NotImplementedError

    def source(self, name: str) -> ModelSource:
        raise NotImplementedError


class DirectoryRepository(Repository):
    """A Triton model repository directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotFound(f"model repository {root} is not a directory")

    def names(self) -> list[str]:
        out = []
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and _NAME.fullmatch(entry.name):
                out.append(entry.name)
        return out

    def source(self, name: str) -> ModelSource:
        check_model_name(name)
        directory = self.root / name
        if not directory.is_dir() or directory.resolve().parent != self.root:
            raise NotFound(f"no model named {name!r} in the repository {self.root}")
        versions = {int(p.name): p for p in directory.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0}
        config = directory / "config.pbtxt"
        return ModelSource(name, directory, config if config.is_file() else None, versions)


class SingleModelRepository(Repository):
    """One model file served as version 1 of a model named after the file (`unirt serve model.onnx`), with an
    optional config.pbtxt given separately."""

    def __init__(self, path: str | Path, name: str | None = None, config: str | Path | None = None) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise NotFound(f"model file {path} does not exist")
        stem = self.path.name.split(".")[0] or "model"
        self.name = check_model_name(name or re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).lstrip(".-") or "model")
        if config is not None and not Path(config).is_file():
            raise NotFound(f"model config {config} does not exist")
        self._config = Path(config) if config is not None else None

    def names(self) -> list[str]:
        return [self.name]

    def source(self, name: str) -> ModelSource:
        if name != self.name:
            raise NotFound(f"no model named {name!r}; this server serves {self.name!r}")
        return ModelSource(self.name, None, self._config, {1: self.path})
