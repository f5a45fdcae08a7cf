"""The runner: an ncnn.Net behind unirt's BackendSession, with ncnn's sharp edges filed off.

- The .param is parsed and checked (`param.py`) and every return code of load_param/load_model is checked: ncnn
  returns -1 on a damaged .bin and the next `extract` would read freed memory.
- `ncnn.Mat(ndarray)` wraps the array's memory without a copy: a temporary is freed before `extract` reads it
  (silently wrong outputs), strided views and float64 are misread, a channel step that is not 16-byte aligned
  makes packed kernels read out of bounds, and a wrapped Mat has no reference count, which ncnn dereferences
  (SIGSEGV) before an in-place layer (ReLU, Sigmoid, BatchNorm, ...) works on it. unirt hands over C-contiguous
  float32 arrays (it checks dtype and layout) and keeps each one referenced until `extract` returns; it wraps an
  input only where every layer reading it is one that writes a new blob (`_WRAPPABLE_READERS`) and its channels
  are aligned, and copies the others into Mats that ncnn allocates.
- fp16 storage/arithmetic (ncnn's default) and bf16 are switched off unless `precision` asks for them.
- Concurrent runs each take their own Extractor on the shared Net (ncnn's thread-safe way), holding a reference to
  the Net: `close` drops it, and it is freed when the last run in progress ends.
- ncnn has no batch dim: where pnnx dropped an input's batch axis (its `batch_axes`, in the conversion's sidecar;
  whatever the batch size) the model runs sample by sample and the outputs are stacked; an output keeps the ONNX
  output's rank (no batch dim added where its dim 0 is not a batch).
- A native .param (no sidecar) records no output shapes and pnnx writes no input shapes: inputs show what the
  reading layer's weights fix, outputs are of unknown rank (`UnknownRankInfo`) until a run shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ncnn
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
from unirt.plugin_sdk import UnknownRankInfo, observe, quantized_info, read_sidecar

from .param import ParamGraph, parse_param
from .precision import effective_precision

log = logging.getLogger(__name__)

_OPTION_KEYS = {
    "input_shapes",
    "lightmode",
    "use_winograd_convolution",
    "use_sgemm_convolution",
    "use_packing_layout",
    "openmp_blocktime",
    "allow_storage_only_precision",
}
# Layers that always write their result into a new blob: an input read only by these may be a Mat wrapping the
# caller's array. Any other reader may work in place, or pass the Mat on to one that does (Split, Reshape, ...).
_WRAPPABLE_READERS = frozenset(
    {
        "Convolution",
        "Convolution1D",
        "Convolution3D",
        "ConvolutionDepthWise",
        "ConvolutionDepthWise1D",
        "ConvolutionDepthWise3D",
        "Deconvolution",
        "Deconvolution1D",
        "Deconvolution3D",
        "DeconvolutionDepthWise",
        "DeconvolutionDepthWise1D",
        "DeconvolutionDepthWise3D",
        "InnerProduct",
        "Gemm",
        "MatMul",
    }
)
_NO_BATCH = 233  # pnnx's batch axis for a blob without one


@dataclass(frozen=True)
class _Port:
    """A model input or output and the ncnn blob behind it."""

    info: TensorInfo
    blob: str
    batched: bool  # the leading dim is a batch that ncnn does not see
    wrap: bool = False  # an input that may be handed to ncnn as a Mat wrapping the caller's array


def layer_exists(kind: str) -> bool:
    return ncnn.layer_to_index(kind) >= 0 or ncnn.create_layer(kind) is not None


def _check_weights(model: ModelFile) -> Path:
    weights = model.companion(".bin")
    if weights is None:
        assert model.path is not None
        raise ModelLoadError(f"{model.name}: the ncnn weights file {model.path.with_suffix('.bin')} is missing")
    return weights


def configure(opt: Any, options: LoadOptions) -> tuple[str, str]:
    """Map unirt's precision onto ncnn's storage/arithmetic switches; return the precision in force and how that
    was determined (a storage-only mode is refused without the opt-in: see precision.py)."""
    in_force = effective_precision(options.precision, options.backend_options, options.device.kind)
    fp16 = options.precision == "fp16"
    bf16 = options.precision == "bf16"
    opt.use_fp16_packed = fp16
    opt.use_fp16_storage = fp16
    opt.use_fp16_arithmetic = fp16
    opt.use_bf16_storage = bf16
    if hasattr(opt, "use_bf16_packed"):
        opt.use_bf16_packed = bf16
    if options.threads is not None:
        opt.num_threads = options.threads
    return in_force


def _int8_layers(graph: ParamGraph) -> bool:
    # ncnn2int8 writes int8_scale_term (param 8) on Convolution/InnerProduct layers.
    return any(
        layer.params.get(8)
        for layer in graph.layers
        if layer.type in ("Convolution", "ConvolutionDepthWise", "InnerProduct")
    )


def _to_mat(array: np.ndarray, wrap: bool) -> Any:
    """A Mat for a C-contiguous float32 `array`, which the caller keeps referenced until extract returns.

    `ncnn.Mat(ndarray)` wraps the array's memory (no copy) with a channel step of h*w elements: where that is not a
    multiple of 16 bytes (ncnn aligns channels so), its packed kernels read out of bounds (a SIGSEGV on a 3x1x1
    input). Unless `wrap` (the input's readers allow it) and the channels are aligned, the array is copied into a
    Mat that ncnn allocates (aligned, reference-counted)."""
    if array.size == 0 or wrap and (array.ndim <= 2 or (array.size // array.shape[0]) % 4 == 0):
        return ncnn.Mat(array if array.ndim else array.reshape(1))
    array = array.reshape(1) if array.ndim == 0 else array
    mat = ncnn.Mat(tuple(reversed(array.shape)))  # (w, h, d, c)
    np.asarray(mat)[...] = array
    return mat


def _wrappable(graph: ParamGraph) -> set[str]:
    """Input blobs whose every reader writes a new blob (`_WRAPPABLE_READERS`): safe to wrap without a copy."""
    readers: dict[str, set[str]] = {}
    for layer in graph.layers:
        for blob in layer.bottoms:
            readers.setdefault(blob, set()).add(layer.type)
    return {
        layer.tops[0]
        for layer in graph.inputs
        if readers.get(layer.tops[0]) and readers[layer.tops[0]] <= _WRAPPABLE_READERS
    }


def _batched(axis: Any, onnx_shape: tuple, shape: tuple, name: str, model: ModelFile) -> bool:
    """Whether ncnn sees tensor `name` (`onnx_shape` in the model, converted at `shape`) one sample at a time.

    Where pnnx proved a batch axis (0) it dropped it: always, whatever the batch size. Where it could not (its
    NO_BATCH, or a conversion that did not record it), a dynamic leading dim converted at 1 still runs sample by
    sample, as a batch: the conversion verified that at batch 2 (`unirt.conversion.verify.feed_sets`)."""
    if axis is not None and axis not in (0, _NO_BATCH):
        raise ModelLoadError(
            f"{model.name}: pnnx put {name!r}'s batch on axis {axis}; unirt runs ncnn models batched on axis 0 only"
        )
    if not shape:
        return False
    return axis == 0 or shape[0] == 1 and (axis is None or not isinstance(onnx_shape[0], int))


def _to_rank(value: np.ndarray, info: TensorInfo) -> np.ndarray:
    """An output at the ONNX output's rank where ncnn's gained a leading 1 (a batch dim given to an output whose
    dim 0 is not a batch: [28, 1, 8210] as [1, 28, 1, 8210]). Any other difference is left as the engine gave it:
    a model may declare another rank than it returns (ONNX Runtime returns the real one too)."""
    dims = info.shape
    if (
        value.ndim == len(dims) + 1
        and value.shape[0] == 1
        and all(not isinstance(d, int) or d == s for d, s in zip(dims, value.shape[1:]))
    ):
        return value[0]
    return value


class NcnnSession(BackendSession):
    def __init__(self, model: ModelFile, options: LoadOptions) -> None:
        if model.path is None:
            raise ModelLoadError("ncnn loads models from files: give the .param path (its .bin beside it)")
        if model.details.get("param_format") == "binary":
            raise ModelLoadError(f"{model.name}: binary .param.bin files are not supported; use the text .param")
        bo = dict(options.backend_options)
        unknown = set(bo) - _OPTION_KEYS
        if unknown:
            raise UnsupportedOptionError(
                f"ncnn: unknown backend option(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_OPTION_KEYS))}"
            )
        weights = _check_weights(model)
        try:
            graph = parse_param(model.path.read_bytes(), layer_exists)
        except ValueError as exc:
            raise ModelLoadError(f"{model.name}: damaged ncnn .param: {exc}") from None
        if options.precision == "int8" and not _int8_layers(graph):
            raise UnsupportedOptionError(
                f"ncnn: precision='int8' needs a model quantized with ncnn2int8; {model.name} has no int8 layers"
            )
        self._net = net = ncnn.Net()
        self.precision, self.precision_info = configure(net.opt, options)
        if _int8_layers(graph) and getattr(net.opt, "use_int8_inference", True):
            # ncnn runs ncnn2int8's layers in int8 whatever was asked (it cannot un-quantize them)
            rest = "" if self.precision == "int8" else f"; the rest at {self.precision_info}"
            self.precision, self.precision_info = (
                "int8",
                quantized_info("ncnn2int8 layers (int8_scale_term)", f"ncnn use_int8_inference{rest}"),
            )
        for key in (
            "lightmode",
            "use_winograd_convolution",
            "use_sgemm_convolution",
            "use_packing_layout",
            "openmp_blocktime",
        ):
            if key in bo:
                setattr(net.opt, key, bo[key])
        self.device = self._set_device(net, options)
        if net.load_param(str(model.path)) != 0:
            raise ModelLoadError(f"{model.name}: ncnn refused the .param (load_param returned an error)")
        if net.load_model(str(weights)) != 0:
            # A failed load_model leaves the net half-built; extract would then crash. Never use it.
            self._net = None
            raise ModelLoadError(
                f"{model.name}: ncnn could not read the weights in {weights} (too short or damaged for this .param)"
            )
        self._inputs, self._outputs = self._ports(model, graph, bo.get("input_shapes"))
        wrappable = _wrappable(graph)
        self._inputs = [_Port(p.info, p.blob, p.batched, p.blob in wrappable) for p in self._inputs]
        self.inputs = [p.info for p in self._inputs]
        self.outputs = [p.info for p in self._outputs]
        self._by_name = {p.info.name: p for p in self._outputs}
        # outputs of a native .param (no ONNX signature): no shape until runs show it
        self._watched = frozenset(p.info.name for p in self._outputs if p.info.rank is None)
        self._batched_names = [p.info.name for p in self._inputs if p.batched]
        self._batched = bool(self._batched_names)
        self._wrap = {p.blob: p.wrap for p in self._inputs}
        # An output whose batch dim is not dim 0 (a sequence-first [time, batch, classes]): the axis named like the
        # batched inputs' dim 0, along which the samples' outputs are put back together.
        symbols = {
            p.info.shape[0] for p in self._inputs if p.batched and p.info.rank and isinstance(p.info.shape[0], str)
        }
        self._batch_axis = {
            p.info.name: next(a for a, d in enumerate(p.info.shape) if d in symbols)
            for p in self._outputs
            if p.info.rank and any(d in symbols for d in p.info.shape[1:]) and p.info.shape[0] not in symbols
        }

    @staticmethod
    def _set_device(net: Any, options: LoadOptions) -> str:
        if options.device.kind == "cpu":
            net.opt.use_vulkan_compute = False
            return "cpu"
        index = options.device.index or 0
        net.opt.use_vulkan_compute = True
        net.set_vulkan_device(index)
        return f"gpu:{index}"

    @staticmethod
    def _ports(model: ModelFile, graph: ParamGraph, shapes: Any) -> tuple[list[_Port], list[_Port]]:
        """Inputs and outputs: from the conversion's sidecar (the ONNX names and shapes) when there is one, else
        from the .param (Input layers; outputs are blobs no layer reads), each with a leading batch dim."""
        in_blobs = [layer.tops[0] for layer in graph.inputs]
        side = read_sidecar(model.path)
        if (
            side is not None
            and len(side["inputs"]) == len(in_blobs)
            and len(side["outputs"]) <= len(graph.outputs)
            and all(f"in{i}" == b for i, b in enumerate(in_blobs))
        ):
            conv_shapes = side.get("shapes", {})
            axes = side.get("batch_axes") if isinstance(side.get("batch_axes"), dict) else {}
            dynamic = side.get("dynamic_axes") or {}
            inputs = []
            for i, info in enumerate(side["inputs"]):
                shape = tuple(conv_shapes.get(info.name, info.shape))
                batched = _batched(axes.get(f"in{i}"), info.shape, shape, info.name, model)
                if info.dtype != np.float32:
                    raise ModelLoadError(
                        f"{model.name}: input {info.name!r} is {info.dtype}; ncnn takes float32 inputs only"
                    )
                if len(shape) - batched > 4:
                    raise ModelLoadError(
                        f"{model.name}: input {info.name!r} has rank {len(shape)}; ncnn holds at most 4 dims per sample"
                    )
                # What was converted and verified: the conversion's shapes, with the batch dim left free.
                dims = ((info.shape[0] if batched else shape[0]),) + shape[1:] if shape else ()
                # dims pnnx kept dynamic (converted and verified at two sizes) stay as the model has them
                free = set(dynamic.get(info.name, ())) if isinstance(dynamic, dict) else set()
                dims = tuple(info.shape[a] if a in free else d for a, d in enumerate(dims))
                inputs.append(_Port(TensorInfo(info.name, dims, np.float32), f"in{i}", batched))
            any_batched = any(p.batched for p in inputs)
            outputs = [
                _Port(
                    TensorInfo(info.name, info.shape, np.float32),
                    f"out{i}",
                    any_batched
                    and _batched(
                        axes.get(f"out{i}"),
                        info.shape,
                        tuple(d if isinstance(d, int) else 1 for d in info.shape),
                        info.name,
                        model,
                    ),
                )
                for i, info in enumerate(side["outputs"])
            ]
            missing = [p.blob for p in outputs if p.blob not in graph.outputs]
            if not missing:
                return inputs, outputs
            log.warning(
                "%s: the sidecar does not match the .param (no blob %s); using the .param's names",
                model.name,
                missing[0],
            )
        given = dict(shapes or {})
        inputs = []
        for layer in graph.inputs:
            blob = layer.tops[0]
            dims: tuple | None = tuple(given[blob]) if blob in given else graph.input_dims(layer)
            if dims is None:  # pnnx writes no shape: what the reader's weights fix, the rest open (not tied)
                dims = graph.reader_dims(layer) or (None, None, None)
            inputs.append(_Port(TensorInfo(blob, ("N",) + tuple(dims), np.float32), blob, True))
        # ncnn records no output shapes: their ranks are unknown until a run shows them (`observe`).
        outputs = [_Port(UnknownRankInfo(blob, (), np.float32), blob, True) for blob in graph.outputs]
        return inputs, outputs

    # -- running -------------------------------------------------------------------------------------------------
    def _extract_one(self, net: Any, samples: dict[str, np.ndarray], ports: Sequence[_Port]) -> list[np.ndarray]:
        ex = net.create_extractor()
        mats = []  # the Mats and the arrays they may wrap stay referenced until every extract has returned
        out = None
        try:
            for blob, array in samples.items():
                mats.append((_to_mat(array, self._wrap[blob]), array))
                if ex.input(blob, mats[-1][0]) != 0:
                    raise RunError(f"ncnn: input blob {blob!r} was refused")
            results = []
            for port in ports:
                code, out = ex.extract(port.blob)
                if code != 0:
                    raise RunError(f"ncnn: extracting {port.info.name!r} (blob {port.blob!r}) failed with code {code}")
                results.append(np.array(out))  # a copy: the Mat's memory belongs to the net's pool allocator
            return results
        finally:
            # The extractor and its Mats hold memory of the net's allocators: they go now, not with this frame
            # (a traceback keeps frames alive), so they never outlive the net (ncnn aborts, then crashes).
            del ex, mats, out

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[np.ndarray]:
        net = self._net  # this run's reference: a concurrent close() cannot free the net under it
        if net is None:
            raise RunError("ncnn: the session is closed")
        ports = [self._by_name[n] for n in output_names]
        if not self._batched:
            samples = {p.blob: feeds[p.info.name] for p in self._inputs}
            results = self._extract_one(net, samples, ports)
            return [
                r if port.info.rank is None or r.ndim == port.info.rank else _to_rank(r, port.info)
                for r, port in zip(results, ports)
            ]
        sizes = [feeds[name].shape[0] for name in self._batched_names]
        batch = sizes[0]
        if sizes.count(batch) != len(sizes):
            # ONNX would broadcast a batch of 1 where the graph broadcasts, and fail elsewhere: no one rule fits
            # running sample by sample, so every batched input must bring the same number of samples.
            given = ", ".join(f"{n!r} has {s}" for n, s in zip(self._batched_names, sizes))
            raise InputError(
                f"ncnn runs this model one sample at a time along dim 0, so its batched inputs need the "
                f"same batch size: {given}"
            )
        if batch == 0 and any(port.info.rank is None for port in ports):
            raise InputError(
                "ncnn: a batch of 0 samples, and this model's output shapes are unknown until it runs "
                "on a sample (the .param records none)"
            )
        per_sample = []
        for i in range(batch):
            samples = {p.blob: feeds[p.info.name][i] if p.batched else feeds[p.info.name] for p in self._inputs}
            per_sample.append(self._extract_one(net, samples, ports))
        results = []
        for k, port in enumerate(ports):
            parts = [sample[k] for sample in per_sample]
            rank = port.info.rank
            if rank is None:  # a native file's output: ncnn's own rank, one sample per row
                results.append(np.stack(parts))
                continue
            if batch == 0:
                results.append(
                    np.zeros((0,) + tuple(d if isinstance(d, int) else 0 for d in port.info.shape[1:]), np.float32)
                )
            elif port.info.name in self._batch_axis and parts[0].ndim == rank:
                axis = self._batch_axis[port.info.name]
                results.append(
                    np.concatenate(parts, axis=axis) if parts[0].shape[axis] == 1 else np.stack(parts, axis=axis)
                )
            elif port.batched and parts[0].ndim == rank - 1:
                results.append(np.stack(parts))
            elif parts[0].ndim == rank and batch == 1:
                results.append(parts[0])
            elif parts[0].ndim == rank and parts[0].shape[:1] == (1,):  # each sample kept its batch dim of 1
                results.append(np.concatenate(parts))
            else:
                results.append(np.stack(parts))
            if results[-1].ndim != rank:
                results[-1] = _to_rank(results[-1], port.info)
        if self._watched:
            observe(self.outputs, self._watched, output_names, results)
        return results

    def close(self) -> None:
        # Dropped, not cleared: runs in progress on other threads hold their own reference, and the net is freed
        # (~Net clears it) when the last of them ends. Clearing it under an extractor is a use-after-free.
        self._net = None
