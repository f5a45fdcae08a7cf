"""The conversion cache: one folder per (model content, backend, converter version, options) under
`unirt.cache_dir("conversions")` (UNIRT_CACHE_DIR overrides), written whole or not at all."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..cache import cache_dir
from ..formats import ModelFile

__all__ = ["content_hash", "cache_key", "entry_dir", "new_work_dir", "publish", "read_record"]

RECORD = "conversion.json"

log = logging.getLogger(__name__)


def content_hash(model: ModelFile) -> str:
    """The model's content hash (`ModelFile.content_hash`: every file of it, or its bytes given in memory)."""
    return model.content_hash


def cache_key(source_hash: str, parts: Mapping[str, Any]) -> str:
    text = json.dumps({"source": source_hash, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def entry_dir(key: str) -> Path:
    return cache_dir("conversions") / key


#: Entries up to this size are checked against their SHA-256 on every read (SHA-256 ran at ~1.7 GB/s here: ~0.15 s
#: at the limit, as much as hashing the source model for the key, which every load does); larger ones by size only.
HASH_CHECK_LIMIT = 256 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _damage(folder: Path, checks: Mapping[str, Any]) -> str | None:
    """What is wrong with the files of an entry (None: nothing): missing, another size, or another hash."""
    sizes = {}
    for name, want in checks.items():
        try:
            sizes[name] = (folder / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if sizes[name] != want["size"]:
            return f"{name} has {sizes[name]} bytes, {want['size']} were written"
    if sum(sizes.values()) <= HASH_CHECK_LIMIT:
        for name, want in checks.items():
            if _sha256(folder / name) != want["sha256"]:
                return f"{name} has changed since it was written (SHA-256 differs)"
    return None


def read_record(key: str) -> dict | None:
    """The finished cache entry for `key`, or None (absent, half-written, or its files gone or damaged: each file's
    size, and its SHA-256 up to HASH_CHECK_LIMIT, must be what `publish` recorded). A damaged entry is converted
    again rather than loaded."""
    path = entry_dir(key) / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    checks = record.get("checks")
    if not isinstance(checks, dict) or set(checks) != set(record.get("files", ())):
        return None
    damage = _damage(entry_dir(key), checks)
    if damage is not None:
        log.warning("conversion cache entry %s is damaged (%s): converting again", entry_dir(key), damage)
        return None
    return record


def new_work_dir(key: str) -> Path:
    """A private folder next to the cache entry to build it in."""
    work = cache_dir("conversions") / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    return work


def publish(key: str, work: Path, record: dict) -> Path:
    """Move a finished `work` folder into place as the entry for `key` (atomic rename; a concurrent writer of the
    same key wins harmlessly: both wrote the same conversion)."""
    record = {
        **record,
        "checks": {
            f: {"size": (work / f).stat().st_size, "sha256": _sha256(work / f)} for f in record.get("files", ())
        },
    }
    (work / RECORD).write_text(json.dumps(record, indent=1))
    final = entry_dir(key)
    if final.exists():
        existing = read_record(key)
        if existing is not None and (existing.get("verified") or not record.get("verified")):
            shutil.rmtree(work, ignore_errors=True)  # another process finished the same conversion first
            return final
        shutil.rmtree(final, ignore_errors=True)  # broken, or less than this one (not verified)
    try:
        os.replace(work, final)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
    return final
