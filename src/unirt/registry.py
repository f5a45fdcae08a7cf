"""Backend plugins found through the `unirt.backends` entry-point group, and every per-backend fact derived from them.

Discovery is lazy and cached: entry points are listed on first use, a plugin module is imported only when
its backend is needed, and its engine only when it is probed. A plugin that fails to import becomes an
unavailable entry carrying its error; it never breaks the others. `refresh()` forgets everything.

What a backend is (its distribution, install hint, formats, GPU need, serving names, image extras) is what its
plugin declares (`unirt.Backend`'s class attributes); the tables the rest of unirt needs are read from the
installed plugins here (`readers`, `owner`, `format_facts`, ...). The only core table is the default order
(`unirt.selection.DEFAULT_ORDER`), which also names this project's own backends (`known_names`).
A `Backend` object given to `Session(backend=...)` is registered by `use` without an entry point.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from .backend import Availability, Backend, FormatFacts
from .devices import Device
from .errors import BackendUnavailableError, InputError, UnirtError
from .formats import Format, ModelFormat, PluginFormat

__all__ = [
    "GROUP",
    "BackendInfo",
    "backends",
    "get_backend",
    "find_backend",
    "availability",
    "installed_names",
    "refresh",
    "install_hint",
    "known_names",
    "distribution",
    "use",
    "readers",
    "owner",
    "format_facts",
    "plugin_formats",
    "format_detectors",
]

GROUP = "unirt.backends"
log = logging.getLogger(__name__)


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
    def __init__(self, ep: md.EntryPoint | None, backend: Backend | None = None) -> None:
        self.ep = ep
        dist = getattr(ep, "dist", None)
        self.distribution = dist.metadata["Name"] if dist is not None else None
        self.version = dist.version if dist is not None else None
        self.backend: Backend | None = backend
        self.error: str | None = None
        self.availability: Availability | None = None


_lock = threading.RLock()
_entries: dict[str, _Entry] | None = None
_given: dict[str, _Entry] = {}  # Backend objects given to Session(backend=...): no entry point


def known_names() -> tuple[str, ...]:
    """This project's own backends (those of the default order), so that an error can say what to install even
    when nothing is installed."""
    from .selection import DEFAULT_ORDER  # selection imports this module

    return tuple(dict.fromkeys(n for order in DEFAULT_ORDER.values() for n in order))


def distribution(name: str) -> str | None:
    """The distribution that provides backend `name`: read from the installed plugin's metadata; for one of this
    project's backends that is not installed, its plugin's (unirt-<name>, in plugins/<name> of a unirt checkout)."""
    entry = _discover().get(name)
    if entry is not None and entry.distribution:
        return entry.distribution
    return f"unirt-{name}" if name in known_names() else None


def install_hint(name: str) -> str:
    """What to install for backend `name`: an installed plugin's own `install_hint` (or its distribution); for one
    of this project's backends that is not installed, its plugin folder in a unirt source checkout (the index's
    "unirt" is an unrelated project)."""
    entry = _entry(name)
    if entry is not None:
        backend = _load(entry) if entry.ep is not None else entry.backend
        if backend is not None and backend.install_hint:
            return backend.install_hint
        if entry.distribution:
            return f"pip install {entry.distribution}"
    if name in known_names():
        return f"pip install ./plugins/{name} ({distribution(name)}, from unirt's source checkout)"
    return f"install a plugin that provides the '{name}' backend"


def _entry(name: str) -> _Entry | None:
    """An installed plugin's entry, else a given object's (`use`)."""
    return _discover().get(name) or _given.get(name)


def _discover() -> dict[str, _Entry]:
    global _entries
    with _lock:
        if _entries is None:
            found: dict[str, _Entry] = {}
            for ep in md.entry_points(group=GROUP):
                if ep.name in found:
                    first = found[ep.name].ep
                    log.warning(
                        "backend %r is registered twice (%s and %s); using the first",
                        ep.name,
                        first.value if first is not None else "?",
                        ep.value,
                    )
                    continue
                found[ep.name] = _Entry(ep)
            _entries = found
        return _entries


def _load(entry: _Entry) -> Backend | None:
    with _lock:
        ep = entry.ep
        if entry.backend is None and entry.error is None and ep is not None:  # a given backend has no entry point
            try:
                cls = ep.load()
                backend = cls() if isinstance(cls, type) else cls
                if not isinstance(backend, Backend):
                    raise TypeError(f"{ep.value} is not a unirt.backend.Backend")
                if backend.name != ep.name:
                    raise TypeError(f"{ep.value} calls itself {backend.name!r}, registered as {ep.name!r}")
                for attr in ("formats", "converts_from"):
                    _check_formats(ep.value, attr, getattr(backend, attr, None))
                entry.backend = backend
            except Exception as exc:  # any plugin bug must stay contained
                entry.error = f"plugin failed to import: {type(exc).__name__}: {exc}"
                log.warning("unirt backend %r: %s", ep.name, entry.error)
        return entry.backend


def _check_formats(plugin: str, attr: str, value: object) -> None:
    """A plugin's `formats` / `converts_from` must be a set of ModelFormat members (or PluginFormats of its own);
    say which mistake it made."""
    if value is None:
        raise TypeError(
            f"{plugin} has no `{attr}`; set it to a frozenset of unirt.ModelFormat, e.g. "
            "frozenset({ModelFormat.ONNX})"
        )
    if isinstance(value, (str, bytes)) or not isinstance(value, (set, frozenset, tuple, list)):
        raise TypeError(f"{plugin}.{attr} is {value!r}; expected a frozenset of unirt.ModelFormat")
    wrong = [f for f in value if not isinstance(f, (ModelFormat, PluginFormat))]
    if wrong:
        raise TypeError(
            f"{plugin}.{attr} holds {wrong[0]!r} ({type(wrong[0]).__name__}); expected unirt.ModelFormat "
            f"members such as ModelFormat.ONNX"
        )


def _check_availability(result: object) -> Availability:
    """probe()'s result, checked: an Availability whose `devices` is a sequence of unirt device strings."""
    if not isinstance(result, Availability):
        raise TypeError(f"probe() returned {type(result).__name__}, not Availability")
    devices = result.devices
    if isinstance(devices, (str, bytes)) or not isinstance(devices, (tuple, list)):
        raise TypeError(
            f"probe() returned devices={devices!r}; expected a tuple of device strings such as ('cuda:0', 'cpu')"
        )
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


def use(backend: object) -> str:
    """Register a `Backend` object (or subclass) given to `Session(backend=...)`, as if installed, and return its
    name. It is looked up by that name from then on (`get_backend`, `availability`), but auto-selection does not
    consider it: it is used where it is named. A plugin installed under the same name with another class is a
    conflict: InputError."""
    what = backend
    if isinstance(backend, type) and issubclass(backend, Backend):
        if getattr(backend, "__abstractmethods__", None):
            raise InputError(
                f"backend={backend.__name__} does not implement {', '.join(sorted(backend.__abstractmethods__))}"
            )
        backend = backend()
    if not isinstance(backend, Backend):
        raise InputError(
            f"backend must be a backend name, 'auto', 'fastest', or a unirt.Backend object or subclass; "
            f"got {type(what).__name__}"
        )
    name = getattr(backend, "name", None)
    label = type(backend).__name__
    if not isinstance(name, str) or not name:
        raise InputError(f"backend={label} has no `name`; set the class attribute name = 'myengine'")
    try:
        for attr in ("formats", "converts_from"):
            _check_formats(label, attr, getattr(backend, attr, None))
    except TypeError as exc:
        raise InputError(f"backend={label}: {exc}") from None
    with _lock:
        installed = _discover().get(name)
        if installed is not None:
            loaded = _load(installed)
            if loaded is not None and type(loaded) is type(backend):
                return name  # the installed plugin itself
            where = installed.ep.value if installed.ep else "?"
            raise InputError(
                f"backend={label} is named {name!r}, as the installed plugin {where} "
                f"(from {installed.distribution}): give it another name"
            )
        current = _given.get(name)
        if current is None or current.backend is not backend:
            _given[name] = _Entry(None, backend)
    return name


def find_backend(name: str) -> Backend | None:
    """The plugin of backend `name` (imported, not probed), or None when it is not installed or fails to import."""
    entry = _entry(name)
    return None if entry is None else _load(entry) if entry.ep is not None else entry.backend


def _installed() -> list[Backend]:
    """Every installed plugin that imports, this project's first in the default order, then by name."""
    known = known_names()
    names = sorted(_discover(), key=lambda n: (known.index(n) if n in known else len(known), n))
    return [b for b in map(find_backend, names) if b is not None]


def readers(fmt: Format) -> set[str]:
    """The installed backends that load `fmt` as it is or convert it on load."""
    return {b.name for b in _installed() if fmt in b.formats or fmt in b.converts_from}


def owner(fmt: Format) -> Backend | None:
    """The installed backend whose engine owns `fmt` (first in the default order), None when none does."""
    return next((b for b in _installed() if fmt in b.formats and b.owns(fmt)), None)


def format_facts(fmt: Format) -> FormatFacts:
    """What serving needs to know of `fmt` (file names, KServe's name), as the plugin that owns it declares."""
    plugin = owner(fmt)
    facts = plugin.format_facts.get(fmt) if plugin is not None else None
    return facts if facts is not None else FormatFacts.default(fmt)


def plugin_formats() -> set[PluginFormat]:
    """The formats installed plugins add (beyond unirt's `ModelFormat`s)."""
    return {f for b in _installed() for f in b.formats if isinstance(f, PluginFormat)}


def format_detectors() -> list[Backend]:
    """The installed plugins that detect a format of their own (override `Backend.detect_format`)."""
    return [b for b in _installed() if type(b).detect_format is not Backend.detect_format]


def get_backend(name: str) -> Backend:
    """The backend registered as `name`; BackendUnavailableError saying what to install when there is none."""
    entries = _discover()
    entry = entries.get(name)
    given = _given.get(name)
    if entry is None and given is not None:
        assert given.backend is not None
        return given.backend
    if entry is None:
        installed = ", ".join(sorted(entries)) or "none"
        if name in known_names():
            raise BackendUnavailableError(
                f"backend {name!r} is not installed. Install it with: {install_hint(name)}. Installed: {installed}."
            )
        raise BackendUnavailableError(
            f"backend {name!r} is not installed, and it is none of unirt's own "
            f"({', '.join(sorted(known_names()))}): check the name, or install the plugin "
            f"that provides it. Installed: {installed}."
        )
    backend = _load(entry)
    if backend is None:
        raise BackendUnavailableError(f"backend {name!r} is installed but unusable: {entry.error}")
    return backend


def availability(name: str) -> Availability:
    """Whether backend `name` can run here (probed once per process)."""
    entry = _entry(name)
    if entry is None:
        return Availability.missing(f"not installed ({install_hint(name)})")
    backend = _load(entry) if entry.ep is not None else entry.backend
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
        return BackendInfo(
            name,
            installed=entry is not None,
            available=False,
            reason=f"plugin error: {type(exc).__name__}: {exc}",
            distribution=entry.distribution if entry is not None else None,
            plugin_version=entry.version if entry is not None else None,
        )


def _info_of(name: str) -> BackendInfo:
    entry = _discover().get(name)
    if entry is None:
        return BackendInfo(
            name,
            installed=False,
            available=False,
            reason=f"not installed ({install_hint(name)})",
            distribution=distribution(name),
        )
    avail = availability(name)
    backend = entry.backend
    return BackendInfo(
        name=name,
        installed=True,
        available=avail.available,
        reason=avail.reason,
        distribution=entry.distribution,
        plugin_version=entry.version,
        engine_version=avail.version,
        formats=tuple(sorted(f.value for f in backend.formats)) if backend is not None else (),
        devices=avail.devices,
        converts_from=tuple(sorted(f.value for f in backend.converts_from)) if backend is not None else (),
    )


def backends(include_missing: bool = False, names: Iterable[str] | None = None) -> list[BackendInfo]:
    """Every installed backend (and, with `include_missing`, this project's others) with its availability."""
    wanted = set(names) if names is not None else set(_discover())
    if include_missing and names is None:
        wanted |= set(known_names())
    return [_info(n) for n in sorted(wanted)]


def refresh() -> None:
    """Forget discovered plugins and probe results (after installing a plugin in a running process)."""
    global _entries
    with _lock:
        _entries = None
        for entry in _given.values():  # still usable by name (a Session holds it), probed afresh
            entry.availability = None
