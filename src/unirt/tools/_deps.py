"""Optional dependencies of the tools (`pip install '.[tools]'` from unirt's source checkout), imported on first use
with a clear error."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UnirtError

__all__ = ["MissingDependencyError", "require"]

EXTRA = ".[tools]"  # unirt-runtime's extra, installed from the source checkout


class MissingDependencyError(UnirtError, ImportError):
    """A tool needs a package that is not installed; the message names it and the extra that brings it."""


def require(module: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependencyError saying what needs it and what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module.split(".")[0]
        raise MissingDependencyError(
            f"{purpose} needs the package {pkg!r}, which cannot be imported ({exc}). "
            f"Install the tools extra: pip install '{EXTRA}' from unirt's source checkout "
            f"(or pip install {pkg})"
        ) from None
