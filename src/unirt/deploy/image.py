"""What goes into the `unirt serve` container image (`deploy/kserve/Dockerfile`): unirt's extras and the backend
plugins, chosen by name, and which model formats an image with those plugins can serve.

The Dockerfile takes two build arguments, `UNIRT_EXTRAS` (unirt's optional extras, comma-separated; `serve` is
always there) and `UNIRT_BACKENDS` (plugin folders under `plugins/`, space-separated). What each plugin brings
(formats, its own extra, unirt extras, GPU need) is what the plugin declares (`unirt.Backend`), read from the
installed plugins: a plugin installs without its engine (TensorRT's is an extra), so a machine that does not run
a backend can still write its image.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import registry
from ..backend import Backend
from ..errors import BackendUnavailableError, UnsupportedOptionError
from ..formats import Format, ModelFormat

__all__ = [
    "Plugin",
    "plugins",
    "plugin",
    "EXTRAS",
    "ImageContents",
    "image_contents",
    "backend_for_format",
    "DOCKERFILE",
]

DOCKERFILE = "deploy/kserve/Dockerfile"  # in unirt's source tree; the build context is the tree's root


@dataclass(frozen=True)
class Plugin:
    """A backend plugin as the image installs it: its folder under plugins/ (`backend`), its distribution, the
    formats it serves (its own first, then those it reads through a frontend or converts on load), its own pip
    extra, unirt's extras it needs, and whether it needs an NVIDIA GPU to run at all."""

    backend: str
    formats: tuple[Format, ...]
    distribution: str
    extra: str = ""
    unirt_extras: tuple[str, ...] = ()
    gpu: bool = False

    @classmethod
    def of(cls, backend: Backend) -> Plugin:
        # a format converted by another plugin's converter needs that plugin beside it: not served on its own
        served = (set(backend.formats) | set(backend.converts_from)) - set(backend.converts_through)
        builtin: list[Format] = list(ModelFormat)
        ordered = sorted(
            served,
            key=lambda f: (
                not backend.owns(f) or f not in backend.formats,
                builtin.index(f) if f in builtin else len(builtin),
                f.value,
            ),
        )
        return cls(
            backend.name,
            tuple(ordered),
            registry.distribution(backend.name) or f"unirt-{backend.name}",
            backend.image_extra,
            tuple(backend.unirt_extras),
            backend.needs_gpu,
        )


def plugins() -> dict[str, Plugin]:
    """This project's plugins installed here (those an image can build from plugins/), by backend name."""
    found = (registry.find_backend(n) for n in registry.known_names() if n in registry.installed_names())
    return {b.name: Plugin.of(b) for b in found if b is not None}


def plugin(name: str) -> Plugin:
    """The installed plugin of backend `name` as an image holds it; BackendUnavailableError when not installed."""
    found = plugins().get(name)
    if found is None:
        raise BackendUnavailableError(
            f"backend {name!r}: its plugin is not installed here, and what its image holds "
            f"is what the plugin declares. Install it: {registry.install_hint(name)}"
        )
    return found


# unirt's own extras an image may add (pyproject.toml's optional-dependencies); `serve` is always installed.
EXTRAS = ("serve", "convert", "tools")


def backend_for_format(fmt: Format) -> str:
    """The backend a default image serves `fmt` with: the installed plugin whose engine owns it."""
    owner = registry.owner(fmt)
    if owner is None or owner.name not in plugins():
        raise BackendUnavailableError(
            f"no installed plugin of unirt's owns the {fmt} format, so no image can be "
            f"chosen for it; install the plugin that reads it (e.g. pip install "
            f"./plugins/<backend> from a unirt checkout)"
        )
    return owner.name


@dataclass(frozen=True)
class ImageContents:
    """The image's `UNIRT_EXTRAS` and `UNIRT_BACKENDS`, and the model formats it serves."""

    extras: tuple[str, ...]
    backends: tuple[str, ...]

    @property
    def formats(self) -> tuple[Format, ...]:
        seen: list[Format] = []
        for backend in self.backends:
            seen += [f for f in plugin(backend).formats if f not in seen]
        return tuple(seen)

    @property
    def build_args(self) -> dict[str, str]:
        return {"UNIRT_EXTRAS": ",".join(self.extras), "UNIRT_BACKENDS": " ".join(self.backends)}

    def build_command(self, image: str) -> str:
        args = " ".join(f'--build-arg {k}="{v}"' for k, v in self.build_args.items())
        return f"docker build -f {DOCKERFILE} {args} -t {image} ."


def image_contents(items: Iterable[str], formats: Iterable[Format] = ()) -> ImageContents:
    """Resolve `--extras` items (backend names or unirt extras) plus the backends the models' `formats` need.
    Backends bring the unirt extras they declare (those that convert on load: `convert`)."""
    extras, backends = ["serve"], []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name in EXTRAS:
            extras.append(name)
        elif name in registry.known_names():
            plugin(name)
            backends.append(name)
        else:
            known = ", ".join(registry.known_names())
            raise UnsupportedOptionError(
                f"--extras: {item!r} is neither a backend ({known}) nor an extra of unirt ({', '.join(EXTRAS)})"
            )
    for fmt in formats:
        if not any(fmt in plugin(b).formats for b in backends):
            backends.append(backend_for_format(fmt))
    for b in backends:  # those that convert on load bring unirt's `convert` extra
        extras += plugin(b).unirt_extras
    return ImageContents(tuple(dict.fromkeys(extras)), tuple(dict.fromkeys(backends)))
