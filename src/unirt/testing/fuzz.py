"""Malformed-model fuzzing shared by every plugin's tests: a damaged file must end in a unirt error, never a crash.

From a real model, `variants` makes damaged copies: empty, truncated at several points, bit-flipped, random
garbage behind the real header, and for a model made of several files (ncnn .param + .bin, OpenVINO .xml + .bin)
each companion missing, empty, truncated, bit-flipped or garbage. `check_malformed` loads and runs each variant
through `unirt.Session` in a child process, so a native crash (SIGSEGV, abort) or a hang is reported as a failure
naming the variant instead of killing pytest. Usage in a plugin's tests:

    from unirt.testing.fuzz import check_malformed

    def test_malformed_models_never_crash(tmp_path, model_path):
        check_malformed(model_path, backend="mybackend", workdir=tmp_path).assert_ok()

The undamaged model runs first, as a control, and must run. A variant passes when it is refused with
`ModelLoadError` (or a subclass; `refusals` widens that, e.g. to ConversionError for a backend that converts the
file on load), or loads (a damaged file can still be a valid model: a flipped weight bit) and
then runs or fails with a unirt error. Anything else fails: another exception type, a dead child process, or no
answer within the time limit.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Variant", "VariantResult", "FuzzReport", "variants", "check_malformed", "REFUSED", "DEFAULT_MUST_REFUSE"]

#: The name of the undamaged copy run first as a control.
CONTROL = "original"
#: Outcomes that mean "unirt refused the file cleanly".
REFUSED = ("ModelLoadError", "ModelFormatError")
#: Variants that can never be a valid model, so they must be refused (not merely survive).
DEFAULT_MUST_REFUSE = ("empty", "truncated_header*", "*missing*", "*.empty", "garbage")


@dataclass(frozen=True)
class Variant:
    """One damaged copy of a model: `files` maps file names to contents (None: the file is left out)."""

    name: str
    main: str
    files: Mapping[str, bytes | None] = field(repr=False)


@dataclass(frozen=True)
class VariantResult:
    variant: str
    outcome: str  # "ran", "refused: ModelLoadError", "loaded; run failed: RunError", "crashed: ...", "error: ..."
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ran" or self.outcome.startswith(("refused:", "loaded; run failed:"))

    @property
    def refused(self) -> bool:
        return self.outcome.startswith("refused:")


@dataclass
class FuzzReport:
    backend: str
    model: Path
    results: list[VariantResult]
    must_refuse: tuple[str, ...] = DEFAULT_MUST_REFUSE

    def failures(self) -> list[str]:
        bad = [f"{r.variant}: {r.outcome} {r.detail}".strip() for r in self.results if not r.ok]
        control = next((r for r in self.results if r.variant == CONTROL), None)
        if control is not None and control.outcome != "ran":
            bad.insert(
                0, f"{CONTROL}: the undamaged model must load and run, but {control.outcome} {control.detail}".strip()
            )
        for r in self.results:
            if r.ok and not r.refused and any(fnmatch.fnmatch(r.variant, p) for p in self.must_refuse):
                bad.append(f"{r.variant}: must be refused with a unirt error, but {r.outcome} {r.detail}".strip())
        return bad

    def assert_ok(self) -> None:
        """Fail (AssertionError) naming every variant that crashed, hung, raised a non-unirt error, or that had
        to be refused but was not."""
        bad = self.failures()
        assert not bad, (
            f"{self.backend}: {len(bad)} of {len(self.results)} malformed variants of "
            f"{self.model.name} misbehaved:\n  " + "\n  ".join(bad)
        )

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            key = r.outcome.split(":")[0]
            counts[key] = counts.get(key, 0) + 1
        return counts


def _model_files(model: Path) -> list[Path]:
    from .. import open_model

    found = open_model(model)
    return list(found.files) or [model]


def _damage(name: str, data: bytes, rng: np.random.Generator, bitflips: int) -> dict[str, bytes]:
    n = len(data)
    made: dict[str, bytes] = {f"{name}empty": b""}
    cuts = sorted({1, min(8, n - 1), min(64, n - 1), n // 3, n // 2, n - n // 10, n - 1} - {0, n})
    for i, cut in enumerate(c for c in cuts if 0 < c < n):
        label = "truncated_header" if cut <= 8 else f"truncated_{i}"
        made[f"{name}{label}_{cut}"] = data[:cut]
    for i in range(bitflips):
        flipped = bytearray(data)
        for pos in rng.integers(0, n, size=1 + i):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        made[f"{name}bitflip_{i}"] = bytes(flipped)
    head = min(64, n // 4)
    made[f"{name}header_then_garbage"] = data[:head] + rng.bytes(max(n - head, 64))
    return made


def variants(model: Path | str, *, seed: int = 0, bitflips: int = 8) -> list[Variant]:
    """Damaged copies of `model` (and of each companion file it has, e.g. an ncnn .bin)."""
    model = Path(model)
    files = _model_files(model)
    main = files[0]
    originals = {f.name: f.read_bytes() for f in files}
    rng = np.random.default_rng(seed)
    out: list[Variant] = []
    for prefix, data in _damage("", originals[main.name], rng, bitflips).items():
        out.append(Variant(prefix, main.name, {**originals, main.name: data}))
    out.append(Variant("garbage", main.name, {**originals, main.name: rng.bytes(max(len(originals[main.name]), 64))}))
    for companion in files[1:]:
        tag = f"{companion.suffix.lstrip('.')}."
        out.append(Variant(f"{tag}missing", main.name, {**originals, companion.name: None}))
        for name, data in _damage(tag, originals[companion.name], rng, max(2, bitflips // 2)).items():
            out.append(Variant(name, main.name, {**originals, companion.name: data}))
    return out


_CHILD = r"""
import json, sys, traceback
import numpy as np
import unirt

spec = json.loads(sys.stdin.read())
for name, path in spec["variants"]:
    print(json.dumps({"start": name}), flush=True)
    result = {"variant": name}
    try:
        sess = unirt.Session(path, backend=spec["backend"], **spec["session"])
    except unirt.UnirtError as e:
        if isinstance(e, tuple(getattr(unirt, n) for n in spec["refusals"])):
            result.update(outcome="refused: " + type(e).__name__, detail=str(e)[:300])
        else:
            result.update(outcome="error: load raised " + type(e).__name__ + " instead of " +
                          " or ".join(spec["refusals"]), detail=str(e)[:300])
    except BaseException as e:
        result.update(outcome="error: not a unirt error: " + type(e).__name__, detail=str(e)[:300])
    else:
        try:
            rng = np.random.default_rng(0)
            feeds = {}
            for i in sess.inputs:
                shape = [d if isinstance(d, int) else 1 for d in i.shape]
                feeds[i.name] = (rng.standard_normal(shape).astype(i.dtype) if i.dtype.kind == "f"
                                 else np.zeros(shape, i.dtype))
            sess.run(feeds)
            result.update(outcome="ran")
        except unirt.UnirtError as e:
            result.update(outcome="loaded; run failed: " + type(e).__name__, detail=str(e)[:300])
        except BaseException as e:
            result.update(outcome="error: run raised a non-unirt " + type(e).__name__, detail=str(e)[:300])
        finally:
            sess.close()
    print(json.dumps(result), flush=True)
"""


def _run_child(
    backend: str,
    todo: list[tuple[str, str]],
    session: Mapping[str, Any],
    timeout: float,
    cwd: Path,
    refusals: Sequence[str] = ("ModelLoadError",),
) -> tuple[list[VariantResult], str | None, str]:
    """Run variants in one child until done or it dies; return results, the variant it died on, and why."""
    spec = json.dumps({"backend": backend, "variants": todo, "session": dict(session), "refusals": list(refusals)})
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=spec,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=env,
        )
        stdout, stderr, died = proc.stdout, proc.stderr, None
        if proc.returncode != 0:
            died = (
                f"crashed: killed by signal {-proc.returncode}"
                if proc.returncode < 0
                else f"crashed: exit status {proc.returncode}"
            )
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        died = f"hung: no answer within {timeout:.0f} s"
    results, started = [], None
    for line in stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue  # an engine printing to stdout
        if not isinstance(msg, dict):
            continue
        if "start" in msg:
            started = msg["start"]
        elif "variant" in msg:
            results.append(VariantResult(msg["variant"], msg["outcome"], msg.get("detail", "")))
            started = None
    if died is None and started is not None:
        died = "crashed: the child exited mid-variant"
    return results, (started if died else None), (died or "") + ("\n" + stderr[-1500:] if died else "")


def check_malformed(
    model: Path | str,
    backend: str,
    workdir: Path | str,
    *,
    seed: int = 0,
    bitflips: int = 8,
    session: Mapping[str, Any] | None = None,
    timeout_per_variant: float = 60.0,
    must_refuse: Sequence[str] = DEFAULT_MUST_REFUSE,
    extra: Sequence[Variant] = (),
    refusals: Sequence[str] = ("ModelLoadError",),
) -> FuzzReport:
    """Load and run every damaged variant of `model` on `backend` in child processes; return the report.

    `session`: extra keyword arguments for `unirt.Session` (e.g. {"device": "cpu"}). `must_refuse`: fnmatch
    patterns of variant names that cannot be valid models and so must be refused. `extra`: more
    variants of your own. `refusals`: names of the unirt errors that count as a clean refusal (ModelLoadError and
    its subclasses by default). A child that dies is restarted after the variant it died on, so one crash does
    not hide the others.
    """
    model, workdir = Path(model).resolve(), Path(workdir).resolve()
    todo: list[tuple[str, str]] = []
    # The undamaged model first, as a control: if it does not run, every "refused" below would prove nothing.
    files = _model_files(model)
    control = Variant(CONTROL, files[0].name, {f.name: f.read_bytes() for f in files})
    # A conversion's sidecar (the source model's names and shapes) goes along undamaged, as a user would have it.
    from ..conversion.signature import sidecar_path

    side = sidecar_path(model)
    kept = {side.name: side.read_bytes()} if side.is_file() else {}
    for v in [control] + list(variants(model, seed=seed, bitflips=bitflips)) + list(extra):
        d = workdir / v.name.replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        for fname, content in {**kept, **v.files}.items():
            if content is not None:
                (d / fname).write_bytes(content)
        todo.append((v.name, str(d / v.main)))
    results: list[VariantResult] = []
    while todo:
        got, died_on, why = _run_child(backend, todo, session or {}, timeout_per_variant * len(todo), workdir, refusals)
        results += got
        done = {r.variant for r in got}
        if died_on is not None:
            reason, _, stderr = why.partition("\n")
            results.append(VariantResult(died_on, reason, stderr.strip()[-600:]))
            done.add(died_on)
        elif len(done) < len(todo) and not got:
            results += [VariantResult(n, "crashed: child gave no answer", why) for n, _ in todo]
            break
        todo = [t for t in todo if t[0] not in done]
    return FuzzReport(backend, model, results, tuple(must_refuse))
