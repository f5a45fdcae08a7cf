"""A first load in a throwaway process, for engines whose loaders crash on damaged files that pass every check.

MNN verifies a model's FlatBuffer, yet some bit-flipped files that verify still kill the process in
`Module::load` (an op whose parameters do not match its type). No cheap check catches all of them, so a plugin
for such an engine calls `check_loads` before loading in-process: the first time a file (by content hash) is seen
with these options, a child process loads it and, where the file fixes every input's shape, runs it once on zeros
(never at sizes made up for dynamic dims); if the child dies, the load is a ModelLoadError
instead of a dead program. A file that passed is remembered under `unirt.cache_dir("canary")`, so the cost (one
process start and one load) is paid once per file. UNIRT_CANARY=0 turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from .backend import LoadOptions
from .cache import ENV_CACHE_DIR, cache_dir
from .errors import ModelLoadError
from .formats import ModelFile

__all__ = ["ENV_CANARY", "CHILD_ENV", "check_loads", "mark_safe"]

ENV_CANARY = "UNIRT_CANARY"
#: Set in processes that are themselves throwaway (a canary, a conversion child): no canary inside them.
CHILD_ENV = "UNIRT_CANARY_CHILD"

_CHILD = r"""
import json, sys
import numpy as np
import unirt

spec = json.loads(sys.stdin.read())
try:
    sess = unirt.Session(spec["path"], backend=spec["backend"], device=spec["device"], precision=spec["precision"],
                         backend_options=spec["backend_options"])
except unirt.ModelLoadError as e:
    print(json.dumps({"refused": str(e)})); sys.exit(0)
except unirt.UnirtError as e:
    print(json.dumps({"other": f"{type(e).__name__}: {e}"})); sys.exit(0)
# Run once only where the file fixes every input dim: sizes made up for dynamic dims (1x1 for a detector's image)
# test nothing but the guess, and a model may rightly fail there. The load alone is the check then.
if all(i.shape is not None and all(isinstance(d, int) for d in i.shape) for i in sess.inputs):
    try:
        sess.run({i.name: np.zeros(i.shape, i.dtype) for i in sess.inputs})
    except unirt.UnirtError:
        pass
print(json.dumps({"ok": True}))
"""


def _key(model: ModelFile, backend: str, version: str, options: LoadOptions) -> str:
    h = hashlib.sha256(model.content_hash.encode())
    h.update(
        json.dumps(
            [
                backend,
                version,
                options.precision,
                str(options.device),
                sorted((str(k), repr(v)) for k, v in options.backend_options.items()),
            ]
        ).encode()
    )
    return h.hexdigest()[:40]


def mark_safe(model: ModelFile, backend: str, version: str, options: LoadOptions) -> None:
    """Record that `model` loaded and ran (e.g. in the conversion's child process)."""
    (cache_dir("canary") / _key(model, backend, version, options)).touch()


def check_loads(model: ModelFile, backend: str, version: str, options: LoadOptions, timeout: float = 300.0) -> None:
    """Load and run `model` once in a child process unless that already succeeded for this content, backend,
    engine `version` and options; ModelLoadError if the child crashed, hung or was refused."""
    if os.environ.get(CHILD_ENV) or os.environ.get(ENV_CANARY, "1") == "0" or model.path is None:
        return
    marker = cache_dir("canary") / _key(model, backend, version, options)
    if marker.exists():
        return
    # The child runs in the canary folder: a relative path (and UNIRT_CACHE_DIR) would name other files there.
    # Only the main file goes over; the child finds its companions (.bin, ...) beside it, as the caller's load does.
    spec = {
        "path": os.path.abspath(model.path),
        "backend": backend,
        "device": str(options.device),
        "precision": options.precision,
        "backend_options": dict(options.backend_options),
    }
    env = dict(os.environ, **{CHILD_ENV: "1"})
    if env.get(ENV_CACHE_DIR):
        env[ENV_CACHE_DIR] = os.path.abspath(env[ENV_CACHE_DIR])
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps(spec, default=str),
            text=True,
            capture_output=True,
            timeout=timeout,
            env=env,
            cwd=cache_dir("canary").resolve(),
        )
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"{model.name}: {backend} did not finish loading and running this model within "
            f"{timeout:.0f} s in a test process"
        ) from None
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        raise ModelLoadError(
            f"{model.name}: {backend} crashed ({how}) loading or running this model in a test "
            f"process: the file is damaged or not a model this {backend} version can run"
        )
    last = proc.stdout.strip().splitlines()[-1:] or ["{}"]
    try:
        result = json.loads(last[0])
    except ValueError:
        result = {}
    if "refused" in result:
        raise ModelLoadError(result["refused"])
    if "ok" in result:
        marker.touch()
