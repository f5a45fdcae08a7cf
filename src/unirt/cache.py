"""Where unirt keeps what it computes once and reuses (converted models, engine caches, timing results)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["cache_dir", "ENV_CACHE_DIR"]

ENV_CACHE_DIR = "UNIRT_CACHE_DIR"


def cache_dir(*parts: str) -> Path:
    """`$UNIRT_CACHE_DIR/<parts>`, else the user cache dir (XDG_CACHE_HOME, ~/Library/Caches, %LOCALAPPDATA%).
    Created on first use."""
    root = os.environ.get(ENV_CACHE_DIR)
    if not root:
        if sys.platform == "darwin":
            base = Path.home() / "Library" / "Caches"
        elif os.name == "nt":
            base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        else:
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        root = str(base / "unirt")
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
