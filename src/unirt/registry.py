"""Backend plugins found through the `unirt.backends` entry-point group.

Discovery is lazy and cached: entry points are listed on first use, a plugin module is imported only when
its backend is needed, and its engine only when it is probed. A plugin that fails to import becomes an
unavailable entry carrying its error; it never breaks the others. `refresh()` forgets everything.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from .backend import Availability, Backend
from .devices import Device
from .errors import BackendUnavailableError, UnirtError
from .formats import ModelFormat

__all__ = ["GROUP", "BackendInfo", "backends", "get_backend", "availability", "installed_names", "refresh",
           "install_hint"]

GROUP = "unirt.backends"
log = logging.getLogger(__name__)

# Backends of this project, so an error can say what to install even when nothing is installed.
KNOWN_BACKENDS = {
    "onnxruntime": "unirt-onnxruntime",
    "openvino": "unirt-openvino",
    "tflite": "unirt-tflite",
    "tensorrt": "unirt-tensorrt",
    "ncnn": "unirt-ncnn",
    "mnn": "unirt-mnn",
}


@dataclass(frozen=True)
class BackendInfo:
    """One row of `unirt.backends()`."""

    name: str
    installed: bool
    available: bool
    reason: str
    distribution: str | None = None
    plugin_version: str | None = None
    engine_version: str | None = None
    formats: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    #: Formats it converts into its own with its engine's converter (`Backend.converts_from`, `unirt convert --to`);
    #: a Session converts on load those of them it does not read (`formats`) as they are.
    converts_from: tuple[str, ...] = ()


class _Entry:
    def __init__(self, ep: md.EntryPoint) -> None:
        self.ep = ep
        dist = getattr(ep, "dist", None)
        self.distribution = dist.metadata["Name"] if dist is not None else None
        self.version = dist.version if dist is not None else None
        self.backend: Backend | None = None
        self.error: str | None = None
        self.availability: Availability | None = None


_lock = threading.RLock()
_entries: dict[str, _Entry] | None = None


def install_hint(name: str) -> str:
    dist = KNOWN_BACKENDS.get(name, f"a plugin that provides the '{name}' backend")
    return f"pip install {dist}" if name in KNOWN_BACKENDS else f"install {dist}"


def _discover() -> dict[str, _Entry]:
    global _entries
    with _lock:
        if _entries is None:
            found: dict[str, _Entry] = {}
            for ep in md.entry_points(group=GROUP):
                if ep.name in found:
                    log.warning("backend %r is registered twice (%s and %s); using the first",
                                ep.name, found[ep.name].ep.value, ep.value)
                    continue
                found[ep.name] = _Entry(ep)
            _entries = found
        return _entries


def _load(entry: _Entry) -> Backend | None:
    with _lock:
        if entry.backend is None and entry.error is None:
            try:
                cls = entry.ep.load()
                backend = cls() if isinstance(cls, type) else cls
                if not isinstance(backend, Backend):
                    raise TypeError(f"{entry.ep.value} is not a unirt.backend.Backend")
                if backend.name != entry.ep.name:
                    raise TypeError(f"{entry.ep.value} calls itself {backend.name!r}, registered as {entry.ep.name!r}")
                for attr in ("formats", "converts_from"):
                    _check_formats(entry.ep.value, attr, getattr(backend, attr, None))
                entry.backend = backend
            except Exception as exc:  # any plugin bug must stay contained
                entry.error = f"plugin failed to import: {type(exc).__name__}: {exc}"
                log.warning("unirt backend %r: %s", entry.ep.name, entry.error)
        return entry.backend


def _check_formats(plugin: str, attr: str, value: object) -> None:
    """A plugin's `formats` / `converts_from` must be a set of ModelFormat members; say which mistake it made."""
    if value is None:
        raise TypeError(f"{plugin} has no `{attr}`; set it to a frozenset of unirt.ModelFormat, e.g. "
                        "frozenset({ModelFormat.ONNX})")
    if isinstance(value, (str, bytes)) or not isinstance(value, (set, frozenset, tuple, list)):
        raise TypeError(f"{plugin}.{attr} is {value!r}; expected a frozenset of unirt.ModelFormat")
    wrong = [f for f in value if not isinstance(f, ModelFormat)]
    if wrong:
        raise TypeError(f"{plugin}.{attr} holds {wrong[0]!r} ({type(wrong[0]).__name__}); expected unirt.ModelFormat "
                        f"members such as ModelFormat.ONNX")


def _check_availability(result: object) -> Availability:
    """probe()'s result, checked: an Availability whose `devices` is a sequence of unirt device strings."""
    if not isinstance(result, Availability):
        raise TypeError(f"probe() returned {type(result).__name__}, not Availability")
    devices = result.devices
    if isinstance(devices, (str, bytes)) or not isinstance(devices, (tuple, list)):
        raise TypeError(f"probe() returned devices={devices!r}; expected a tuple of device strings such as "
                        "('cuda:0', 'cpu')")
    for d in devices:
        if not isinstance(d, str):
            raise TypeError(f"probe() returned devices={devices!r}; {d!r} is not a device string")
        try:
            Device.parse(d)
        except UnirtError as exc:
            raise TypeError(f"probe() returned devices={devices!r}: {exc}") from None
    return dataclasses.replace(result, devices=tuple(devices)) if isinstance(devices, list) else result


def installed_names() -> list[str]:
    """Names of every registered backend, importable or not."""
    return sorted(_discover())


def get_backend(name: str) -> Backend:
    """The backend registered as `name`; BackendUnavailableError saying what to install when there is none."""
    entries = _discover()
    entry = entries.get(name)
    if entry is None:
        installed = ", ".join(sorted(entries)) or "none"
        if name in KNOWN_BACKENDS:
            raise BackendUnavailableError(f"backend {name!r} is not installed. Install it with: {install_hint(name)}. "
                                          f"Installed: {installed}.")
        raise BackendUnavailableError(f"backend {name!r} is not installed, and it is none of unirt's own "
                                      f"({', '.join(KNOWN_BACKENDS)}): check the name, or install the plugin that "
                                      f"provides it. Installed: {installed}.")
    backend = _load(entry)
    if backend is None:
        raise BackendUnavailableError(f"backend {name!r} is installed but unusable: {entry.error}")
    return backend


def availability(name: str) -> Availability:
    """Whether backend `name` can run here (probed once per process)."""
    entry = _discover().get(name)
    if entry is None:
        return Availability.missing(f"not installed ({install_hint(name)})")
    backend = _load(entry)
    if backend is None:
        return Availability.missing(entry.error or "plugin failed to import")
    with _lock:
        if entry.availability is None:
            try:
                result = _check_availability(backend.probe())
            except Exception as exc:
                result = Availability.missing(f"probe failed: {type(exc).__name__}: {exc}")
            entry.availability = result
        return entry.availability


def _info(name: str) -> BackendInfo:
    try:
        return _info_of(name)
    except Exception as exc:  # a plugin bug the checks above did not catch: one broken row, not a broken listing
        entry = _discover().get(name)
        return BackendInfo(name, installed=entry is not None, available=False,
                           reason=f"plugin error: {type(exc).__name__}: {exc}",
                           distribution=entry.distribution if entry is not None else None,
                           plugin_version=entry.version if entry is not None else None)


def _info_of(name: str) -> BackendInfo:
    entry = _discover().get(name)
    if entry is None:
        return BackendInfo(name, installed=False, available=False, reason=f"not installed ({install_hint(name)})",
                           distribution=KNOWN_BACKENDS.get(name))
    avail = availability(name)
    backend = entry.backend
    return BackendInfo(
        name=name, installed=True, available=avail.available, reason=avail.reason,
        distribution=entry.distribution, plugin_version=entry.version, engine_version=avail.version,
        formats=tuple(sorted(f.value for f in backend.formats)) if backend is not None else (),
        devices=avail.devices,
        converts_from=tuple(sorted(f.value for f in backend.converts_from)) if backend is not None else (),
    )


def backends(include_missing: bool = False, names: Iterable[str] | None = None) -> list[BackendInfo]:
    """Every installed backend (and, with `include_missing`, this project's others) with its availability."""
    wanted = set(names) if names is not None else set(_discover())
    if include_missing and names is None:
        wanted |= set(KNOWN_BACKENDS)
    return [_info(n) for n in sorted(wanted)]


def refresh() -> None:
    """Forget discovered plugins and probe results (after installing a plugin in a running process)."""
    global _entries
    with _lock:
        _entries = None
