"""ONNX -> ncnn with the `pnnx` binary from the pnnx wheel.

The wheel's Python package imports torch on import, so it is never imported: the binary is found next to it
(`pip install --no-deps pnnx` is enough), or through the UNIRT_PNNX environment variable.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from unirt import BackendUnavailableError, ConversionError

__all__ = ["ENV_PNNX", "NO_BATCH", "find_pnnx", "pnnx_version", "pnnx_identity", "run_pnnx", "shape_arg", "batch_axes"]

ENV_PNNX = "UNIRT_PNNX"
#: pnnx's batch axis for a blob that has none (the whole tensor is one ncnn Mat).
NO_BATCH = 233
# pnnx's generated ncnn test script feeds and reads every blob with the batch axis it solved:
#   ex.input("in0", ncnn.Mat(in0.numpy(), batch_index=0).clone()) ... out0.numpy(batch_index=0)
_INPUT_AXIS = re.compile(r'ex\.input\("(in\d+)",\s*ncnn\.Mat\([^\n]*?batch_index=(\d+)')
_OUTPUT_AXIS = re.compile(r"\b(out\d+)\.numpy\(batch_index=(\d+)\)")
_SETTING = re.compile(r"^\w+ = ")
_NOTABLE = re.compile(r"error|fail|expect|unsupported|not supported", re.I)
_TYPES = {
    "float32": "f32",
    "float64": "f64",
    "float16": "f16",
    "int32": "i32",
    "int64": "i64",
    "int16": "i16",
    "int8": "i8",
    "uint8": "u8",
    "bool": "bool",
}


def find_pnnx() -> Path | None:
    """The pnnx executable: $UNIRT_PNNX, else the one inside the installed pnnx wheel."""
    env = os.environ.get(ENV_PNNX)
    if env:
        return Path(env) if Path(env).is_file() else None
    spec = importlib.util.find_spec("pnnx")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for name in ("pnnx", "pnnx.exe"):
            exe = Path(folder) / name
            if exe.is_file() and os.access(exe, os.X_OK):
                return exe
    return None


def pnnx_version() -> str:
    try:
        return importlib.metadata.version("pnnx")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def pnnx_identity() -> str | None:
    """Which pnnx a conversion runs: the wheel's version, the binary's path, size and modification time (a binary
    from UNIRT_PNNX is not the wheel's; hashing the ~90 MB binary would cost ~0.3 s per process). None: no pnnx."""
    exe = find_pnnx()
    if exe is None:
        return None
    st = exe.stat()
    spec = importlib.util.find_spec("pnnx")
    wheel = spec is not None and any(exe.parent == Path(f) for f in spec.submodule_search_locations or [])
    version = pnnx_version() if wheel else "(not the pnnx wheel's)"
    return f"pnnx {version} at {exe} ({st.st_size} bytes, mtime {st.st_mtime_ns})"


def shape_arg(shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, str]) -> str:
    """pnnx's inputshape: [1,3,224,224]f32,[1,8]i64 (graph input order)."""
    parts = []
    for name, shape in shapes.items():
        dtype = dtypes.get(name, "float32")
        if dtype not in _TYPES:
            raise ConversionError(f"pnnx: input {name!r} has dtype {dtype}, which pnnx cannot take")
        parts.append("[" + ",".join(str(int(d)) for d in shape) + "]" + _TYPES[dtype])
    return ",".join(parts)


def batch_axes(script: str) -> dict[str, int]:
    """{blob: axis} from pnnx's generated ncnn script: the axis of each input/output that ncnn does not see (pnnx
    drops a batch axis it can prove, e.g. a convolution's dim 0, whatever its size), or NO_BATCH."""
    found = {blob: int(axis) for blob, axis in _INPUT_AXIS.findall(script)}
    found.update({blob: int(axis) for blob, axis in _OUTPUT_AXIS.findall(script)})
    return found


def run_pnnx(
    source: Path,
    param: Path,
    weights: Path,
    shapes: Mapping[str, Sequence[int]],
    dtypes: Mapping[str, str],
    fp16: bool,
    timeout: float = 600.0,
    shapes2: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, int]:
    """Convert `source` (ONNX) into ncnn's `param` + `weights`; ConversionError with pnnx's own output on failure.
    `shapes2`: a second size for the dims to keep dynamic (pnnx's inputshape2: it traces the model at both and
    writes the dims that differ as dynamic). Returns pnnx's batch axis per blob (`batch_axes`; empty when its
    script does not say)."""
    exe = find_pnnx()
    if exe is None:
        raise BackendUnavailableError(
            "converting to ncnn needs the pnnx binary: pip install --no-deps pnnx "
            f"(its Python part would pull in torch), or set {ENV_PNNX}"
        )
    if not shapes:
        raise ConversionError("pnnx needs the model's input shapes")
    with tempfile.TemporaryDirectory(prefix="unirt-pnnx-") as scratch:
        s = Path(scratch)
        cmd = [
            str(exe),
            str(source),
            f"inputshape={shape_arg(shapes, dtypes)}",
            *([f"inputshape2={shape_arg(shapes2, dtypes)}"] if shapes2 else []),
            f"fp16={int(fp16)}",
            f"ncnnparam={param}",
            f"ncnnbin={weights}",
            f"pnnxparam={s / 'm.pnnx.param'}",
            f"pnnxbin={s / 'm.pnnx.bin'}",
            f"pnnxpy={s / 'm_pnnx.py'}",
            f"pnnxonnx={s / 'm.pnnx.onnx'}",
            f"ncnnpy={s / 'm_ncnn.py'}",
        ]
        try:
            proc = subprocess.run(cmd, cwd=s, capture_output=True, text=True, errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"pnnx did not finish within {timeout:.0f} s") from None
        # pnnx echoes its settings ("ncnnparam = /tmp/..."): not part of why it failed
        output = [line for line in (proc.stdout + proc.stderr).strip().splitlines() if not _SETTING.match(line)]
        if proc.returncode != 0 or not param.is_file() or not weights.is_file():
            how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
            # pnnx prints its passes at length: the lines that say what went wrong (e.g. its ONNX Runtime refusing the
            # model just before a SIGSEGV) come first, then the end of its output
            notable = [line for line in output if _NOTABLE.search(line)][-10:]
            tail = [line for line in output[-20:] if line not in notable]
            raise ConversionError(f"pnnx failed ({how}):\n" + "\n".join(notable + tail))
        script = s / "m_ncnn.py"
        return batch_axes(script.read_text(errors="replace")) if script.is_file() else {}
