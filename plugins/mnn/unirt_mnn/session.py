"""The runner: an MNN expression Module (MNN.nn.load_module_from_file) behind unirt's BackendSession.

MNN's Python API has traps, each handled here:
- `Module.forward` given a raw ndarray segfaults: inputs always go in as `MNN.expr.const` Vars;
- a float64 (or any mismatched) array is read as the input's dtype, giving garbage: unirt checks dtypes first,
  against the dtypes read from the file (`mnn_file.py`);
- a batch larger than the model's is silently resized or truncated: the input dims come from the file (or the
  conversion's sidecar), static where the model is static, so unirt refuses a wrong batch before MNN sees it;
- the file records no output shapes: a model with static inputs is run once on zeros at load to learn them; one
  with dynamic input dims is not run at made-up sizes (a detector at 1x1 fails): its outputs are of unknown rank
  (`UnknownRankInfo`) until a run shows their shapes;
- `Var.read()` returns memory that the next forward overwrites: outputs are copied out at once;
- one Module is not safe to run from several threads: runs are serialised with a lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from unirt import (
    BackendSession,
    InputError,
    LoadOptions,
    ModelFile,
    ModelLoadError,
    RunError,
    TensorInfo,
    UnsupportedOptionError,
)
from unirt.plugin_sdk import UnknownRankInfo, native_output_captured, native_output_silenced, observe, read_sidecar

from .mnn_file import check_structure, read_inputs
from .precision import effective_precision

_OPTION_KEYS = {
    "input_shapes",
    "backend_type",
    "memory_mode",
    "power_mode",
    "shape_mutable",
    "allow_float64_as_float32",
    "allow_storage_only_precision",
}
_BACKENDS = ("cpu", "opencl", "vulkan", "cuda", "metal")
_MODES = ("low", "normal", "high")  # memory_mode, power_mode
_NP_TO_MNN = {
    "float32": "float",
    "float64": "double",
    "int32": "int",
    "int64": "int64",
    "uint8": "uint8",
    "int8": "int8",
}


def _mnn():
    with native_output_silenced():  # MNN prints the CPU's features to stdout on import
        import MNN  # noqa: F401 - the package first, inside the silencer
        import MNN.expr as F
        import MNN.nn as nn
    return F, nn


def mnn_version() -> str:
    with native_output_silenced():
        import MNN
    return str(MNN.version()) if hasattr(MNN, "version") else "unknown"


def default_threads() -> int:
    """MNN's own default is one thread; ONNX Runtime and ncnn use every core: so does unirt's MNN runner (the
    CPUs this process may run on), unless `threads` says otherwise."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def precision_mode(F: Any, precision: str) -> Any:
    """fp32 -> High (fp32 even where Normal would use fp16 on ARM), fp16 -> Low, bf16 -> Low_BF16."""
    if precision == "int8":
        raise UnsupportedOptionError(
            "mnn: precision='int8' needs a model quantized by MNN's quantization tools; "
            "this runner computes in fp32/fp16/bf16"
        )
    return {"fp32": F.PrecisionMode.High, "fp16": F.PrecisionMode.Low, "bf16": F.PrecisionMode.Low_BF16}[precision]


def _mode(modes: Any, key: str, value: Any) -> Any:
    """MNN's MemoryMode / PowerMode member for "low", "normal" or "high" (checked: a typo is an option error)."""
    if not isinstance(value, str) or value.lower() not in _MODES:
        raise UnsupportedOptionError(f"mnn: {key} must be one of {', '.join(_MODES)}, got {value!r}")
    return getattr(modes, value.capitalize())


class MnnSession(BackendSession):
    def __init__(self, model: ModelFile, options: LoadOptions) -> None:
        if model.path is None:
            raise ModelLoadError("MNN loads models from files: give the .mnn path")
        bo = dict(options.backend_options)
        unknown = set(bo) - _OPTION_KEYS
        if unknown:
            raise UnsupportedOptionError(
                f"mnn: unknown backend option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_OPTION_KEYS))}"
            )
        F, nn = _mnn()
        self._F = F
        kind = str(bo.get("backend_type", "cpu")).lower()
        if kind not in _BACKENDS:
            raise UnsupportedOptionError(f"mnn: backend_type must be one of {', '.join(_BACKENDS)}, got {kind!r}")
        converted_at = (read_sidecar(model.path) or {}).get("precision")
        self.precision, self.precision_info = effective_precision(
            options.precision, bo, kind, mnn_version(), converted_at
        )
        data = model.path.read_bytes()
        try:
            check_structure(data)
            specs = read_inputs(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{model.name}: damaged MNN model: {exc}") from None
        if not specs:
            raise ModelLoadError(f"{model.name}: the MNN model has no inputs")
        kwargs = {
            "precision_mode": precision_mode(F, options.precision),
            "thread_num": options.threads or default_threads(),
            "shape_mutable": bool(bo.get("shape_mutable", True)),
            "backend": getattr(F.Backend, kind.upper()),
        }
        for key, modes in (("memory_mode", F.MemoryMode), ("power_mode", F.PowerMode)):
            if key in bo:
                kwargs[key] = _mode(modes, key, bo[key])
        printed: list[str] = []
        try:
            with native_output_captured(printed):  # MNN verifies the FlatBuffer and prints why it refuses
                module = nn.load_module_from_file(str(model.path), [], [], **kwargs)
        except Exception as exc:
            reason = " ".join(printed).strip() or str(exc)
            raise ModelLoadError(f"{model.name}: MNN refused the model: {reason}") from None
        if module is None:
            raise ModelLoadError(f"{model.name}: MNN refused the model: {' '.join(printed).strip()}")
        if kind != "cpu" and any("Can't Find type" in line for line in printed):
            # MNN falls back to its CPU backend, and says so only on stdout: the caller asked for this one
            raise UnsupportedOptionError(
                f"mnn: backend_type={kind!r} is not available in this MNN build on this "
                f"machine (MNN: {' '.join(printed).strip()}); use backend_type='cpu'"
            )
        info = module.get_info()
        self._module = module
        self._lock = threading.Lock()
        self.threads = kwargs["thread_num"]
        self.device = "cpu" if kind == "cpu" else "gpu:0"
        by_name = {s.name: s for s in specs}
        missing = [n for n in info["inputNames"] if n not in by_name]
        if missing:
            raise ModelLoadError(f"{model.name}: MNN lists input {missing[0]!r}, which has no Input op in the file")
        self._specs = [by_name[n] for n in info["inputNames"]]
        self._formats = [F.NHWC if s.layout in ("NHWC", "NHWC4") else F.NCHW for s in self._specs]
        # Inputs stored as NC4HW4 take an NCHW array converted by MNN itself.
        self._c4 = [s.layout == "NC4HW4" and len(s.dims) == 4 for s in self._specs]
        self._dtypes = []
        for s in self._specs:
            if s.dtype.name not in _NP_TO_MNN:
                raise ModelLoadError(
                    f"{model.name}: input {s.name!r} has dtype {s.dtype}, which MNN's Python API cannot feed"
                )
            self._dtypes.append(getattr(F, _NP_TO_MNN[s.dtype.name]))
        self._out_order = list(info["outputNames"])
        self._out_dtypes: dict[str, np.dtype] = {}
        self._in_casts: dict[str, np.dtype] = {}
        self._narrowed: frozenset[str] = frozenset()
        self._watched: frozenset[str] = frozenset()  # outputs whose shape the file does not give: seen in runs
        self.inputs, self.outputs = self._signature(model, info, bo.get("input_shapes"))
        by_input = {i.name: i.dtype for i in self.inputs}
        # A converted model keeps the source's dtypes (MNN stores int64 as int32): cast at the boundary.
        self._in_casts = {i.name: s.dtype for i, s in zip(self.inputs, self._specs) if i.dtype != s.dtype}
        # int64 inputs stored as int32: values outside the int32 range would wrap silently, so they are refused.
        self._narrowed = frozenset(
            n
            for n, d in self._in_casts.items()
            if d.kind in "iu" and by_input[n].kind in "iu" and d.itemsize < by_input[n].itemsize
        )
        self._out_dtypes = {o.name: o.dtype for o in self.outputs if o.name not in self._watched}
        allow_f64 = bo.get("allow_float64_as_float32", False)
        if not isinstance(allow_f64, bool):
            raise UnsupportedOptionError(f"mnn: allow_float64_as_float32 must be True or False, got {allow_f64!r}")
        f64 = [t.name for t in (*self.inputs, *self.outputs) if t.dtype == np.float64]
        if f64 and not allow_f64:
            # MNN computes doubles in float32 (1e10 + 1 - 1e10 gives 0): precision="fp32" promises the model's own
            raise UnsupportedOptionError(
                f"{model.name}: MNN computes float64 in float32, so this model's float64 tensors ({', '.join(f64)}) "
                "would lose precision silently. Pass backend_options={'allow_float64_as_float32': True} to run it at "
                "float32 precision, or use a backend that computes float64 (onnxruntime)"
            )

    def _signature(self, model: ModelFile, info: dict, given: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
        side = read_sidecar(model.path)
        names_in = list(info["inputNames"])
        if (
            side is not None
            and [i.name for i in side["inputs"]] == names_in
            and {o.name for o in side["outputs"]} <= set(info["outputNames"])
        ):
            return list(side["inputs"]), list(side["outputs"])
        given = dict(given or {})
        # MNN's converter writes a dynamic batch dim as 1 (torch, paddle2onnx and tf2onnx exports alike) and other
        # dynamic dims as -1: in a file that leaves any dim open, a leading 1 is the converter's, not the model's
        # (MNN resizes it like the rest). A file whose dims are all fixed keeps its batch static.
        open_file = any(d < 0 for s in self._specs for d in s.dims)
        inputs = []
        for s in self._specs:
            dims = tuple(d if d >= 0 else None for d in s.dims)
            if open_file and len(dims) >= 2 and dims[0] == 1:
                dims = (None,) + dims[1:]
            inputs.append(TensorInfo(s.name, tuple(given[s.name]) if s.name in given else dims, s.dtype))
        if any(i.is_dynamic for i in inputs):
            # The file records no output shapes, and a run at made-up sizes for the dynamic dims fails or lies
            # (a detector at 1x1): the outputs' ranks are unknown until the first run shows them (`observe`).
            self._watched = frozenset(info["outputNames"])
            return inputs, [UnknownRankInfo(n, (), np.float32) for n in info["outputNames"]]
        # Every input is static: one run on zeros at those shapes learns the outputs' shapes and dtypes.
        zeros = {i.name: np.zeros(i.shape, i.dtype) for i in inputs}
        try:
            values = self._forward(zeros, list(info["outputNames"]))
        except RunError as exc:
            raise ModelLoadError(
                f"{model.name}: MNN cannot run the model on inputs of its declared shapes: {exc}"
            ) from None
        return inputs, [TensorInfo(n, v.shape, v.dtype) for n, v in zip(info["outputNames"], values)]

    def _forward(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[np.ndarray]:
        F = self._F
        vars_in = []
        for spec, fmt, dt, c4 in zip(self._specs, self._formats, self._dtypes, self._c4):
            x = feeds[spec.name]
            if spec.name in self._in_casts:
                if spec.name in self._narrowed:
                    self._check_range(spec.name, x, self._in_casts[spec.name])
                x = x.astype(self._in_casts[spec.name])
            var = F.const(x, list(x.shape), fmt, dt)
            vars_in.append(F.convert(var, F.NC4HW4) if c4 else var)
        with self._lock:
            outs = self._module.forward(vars_in)
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            if len(outs) != len(self._out_order):
                raise RunError(
                    f"mnn: the model returned {len(outs)} outputs, expected {len(self._out_order)}"
                    f"{self._why_forward_failed(vars_in)}"
                )
            by_name = dict(zip(self._out_order, outs))
            # read() maps memory that the next forward reuses: copy while the lock is held
            results = [np.array(by_name[n].read(), copy=True) for n in output_names]
        for k, name in enumerate(output_names):
            want = self._out_dtypes.get(name)
            if want is not None and results[k].dtype != want:
                results[k] = results[k].astype(want)
        return results

    @staticmethod
    def _check_range(name: str, x: np.ndarray, stored: np.dtype) -> None:
        info = np.iinfo(stored)
        if x.size and (int(x.min()) < info.min or int(x.max()) > info.max):
            raise InputError(
                f"input {name!r}: MNN stores this {x.dtype} input as {stored}, and it holds values "
                f"outside the {stored} range [{info.min}, {info.max}] (min {x.min()}, max {x.max()}) that "
                "would wrap; use a backend that computes int64 (onnxruntime)"
            )

    def _why_forward_failed(self, vars_in: list) -> str:
        """MNN says why a forward failed on stdout only ("Broad cast error, dim1 = 3, dim2 = 2"): run the failed
        forward again with that captured (not on every run: capturing redirects the process's stdout)."""
        printed: list[str] = []
        try:
            with native_output_captured(printed):
                self._module.forward(vars_in)
        except Exception as exc:
            printed.append(f"{type(exc).__name__}: {exc}")
        reason = "; ".join(line.strip() for line in "".join(printed).splitlines() if line.strip())
        return f" (MNN: {reason})" if reason else ""

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[np.ndarray]:
        if self._module is None:
            raise RunError("mnn: the session is closed")
        try:
            results = self._forward(feeds, output_names)
            if self._watched:
                with self._lock:
                    observe(self.outputs, self._watched, output_names, results)
            return results
        except (RunError, InputError):
            raise
        except Exception as exc:
            raise RunError(f"mnn: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self._module = None
