"""The loader: whether ncnn is usable here, loading .param/.bin models, and converting ONNX with pnnx."""

from __future__ import annotations

import logging
from pathlib import Path

from unirt import (
    Availability,
    Backend,
    BackendSession,
    ConversionError,
    FormatFacts,
    LoadOptions,
    ModelFile,
    ModelFormat,
    UnsupportedOptionError,
    open_model,
)
from unirt.backend import NUMERIC_DTYPES
from unirt.plugin_sdk import native_output_silenced, onnx_quantization_ops

log = logging.getLogger(__name__)


def _gpu_count(ncnn) -> int:
    try:
        with native_output_silenced():  # the Vulkan loader prints to stderr when there is no driver
            return int(ncnn.get_gpu_count())
    except Exception:
        return 0


class NcnnBackend(Backend):
    name = "ncnn"
    formats = frozenset({ModelFormat.NCNN})
    tensor_dtypes = NUMERIC_DTYPES  # no string tensors
    converts_from = frozenset({ModelFormat.ONNX})
    install_hint = "pip install ./plugins/ncnn (from unirt's source checkout)"
    unirt_extras = ("convert",)  # converts ONNX on load
    format_facts = {ModelFormat.NCNN: FormatFacts(("model.param", "model.ncnn.param"), "ncnn")}
    # verification compares the numbers itself: fp16 weights stored for a CPU that computes fp32 are checked there
    verification_options = {"allow_storage_only_precision": True}

    def probe(self) -> Availability:
        try:
            import ncnn
        except Exception as exc:
            return Availability.missing(f"cannot import ncnn: {type(exc).__name__}: {exc}")
        gpus = _gpu_count(ncnn)
        return Availability(
            True,
            version=getattr(ncnn, "__version__", "unknown"),
            devices=tuple(f"gpu:{i}" for i in range(gpus)) + ("cpu",),
        )

    def load(self, model: ModelFile, options: LoadOptions) -> BackendSession:
        from .session import NcnnSession

        return NcnnSession(model, options)

    def converter_version(self) -> str | None:
        from .pnnx import pnnx_identity

        return pnnx_identity()

    def check_convertible(self, inputs) -> None:
        """What no input shape changes, refused at load rather than at the first run that converts (float32
        inputs only, no scalars): the ConversionError the converter would raise."""
        _check_inputs(
            {i.name: tuple(i.shape) if i.shape is not None else (None,) for i in inputs},
            {i.name: i.dtype.name for i in inputs},
        )

    def convert(self, model: ModelFile, out_dir: Path, options: LoadOptions) -> ModelFile:
        """ONNX -> model.param + model.bin with pnnx, at the shapes unirt's conversion layer passes; fp32 weights
        unless precision='fp16' (bf16 runs from fp32 weights with ncnn's bf16 storage). pnnx's batch axis per
        blob goes into the conversion's sidecar (`batch_axes`): the runner needs it to feed ncnn."""
        from unirt.plugin_sdk import write_sidecar

        from .pnnx import run_pnnx

        if model.path is None:
            raise ConversionError("pnnx converts model files; save the model to a file first")
        qops = onnx_quantization_ops(model.path)
        if qops:  # measured with pnnx 20261020, ncnn 1.0.20261020 (tests/test_quantized_backends.py)
            raise ConversionError(
                f"ncnn: pnnx cannot convert a quantized ONNX model ({'/'.join(qops)}): it leaves those ops as they "
                "are and ncnn has no layer for them. Convert the fp32 model instead (ncnn's int8 comes from "
                "ncnn2table/ncnn2int8, which the ncnn pip wheel does not ship), or run this model on onnxruntime "
                "or openvino"
            )
        if options.precision == "int8":
            raise UnsupportedOptionError(
                "ncnn: pnnx writes fp32 or fp16 weights; int8 needs a model quantized with "
                "ncnn2table/ncnn2int8 (not in the ncnn pip wheel) from calibration data"
            )
        bo = options.backend_options
        shapes, dtypes = dict(bo.get("input_shapes") or {}), dict(bo.get("input_dtypes") or {})
        _check_inputs(shapes, dtypes)
        shapes2 = dict(bo.get("input_shapes2") or {})
        param, weights = out_dir / "model.param", out_dir / "model.bin"
        fp16, timeout = options.precision == "fp16", float(bo.get("timeout", 600))
        dynamic: dict[str, list[int]] = {}
        if shapes2:  # a dynamic-size model where pnnx can make one (it traces at both sizes); else static
            try:
                axes = run_pnnx(model.path, param, weights, shapes, dtypes, fp16=fp16, timeout=timeout, shapes2=shapes2)
                _check_layers(param)
                dynamic = {
                    name: [a for a, (d, d2) in enumerate(zip(shape, shapes2[name])) if d != d2]
                    for name, shape in shapes.items()
                    if name in shapes2 and list(shape) != list(shapes2[name])
                }
            except ConversionError as exc:
                log.info("pnnx could not keep the dims dynamic (%s); converting at %s only", exc, shapes)
                shapes2 = {}
        if not shapes2:
            axes = run_pnnx(model.path, param, weights, shapes, dtypes, fp16=fp16, timeout=timeout)
            _check_layers(param)
        # the conversion layer adds the signature, keeps these
        write_sidecar(param, [], [], batch_axes=axes, dynamic_axes=dynamic)
        return open_model(param)


def _check_inputs(shapes: dict, dtypes: dict) -> None:
    """Refuse, before pnnx runs, inputs an ncnn model cannot take: ncnn's Mats hold float32 only, and pnnx's
    inputshape has no form for a rank-0 tensor."""
    problems = [
        f"input {name!r} is {dtypes[name]} (ncnn takes float32 inputs only)"
        for name in shapes
        if dtypes.get(name, "float32") != "float32"
    ]
    problems += [
        f"input {name!r} is a scalar (pnnx cannot take rank-0 inputs)" for name, s in shapes.items() if len(s) == 0
    ]
    if problems:
        raise ConversionError("ncnn cannot run this model: " + "; ".join(problems))


def _check_layers(param: Path) -> None:
    """pnnx writes ONNX ops it cannot lower to ncnn as layers of their own (`pnnx.Expression`, `Tensor.to`,
    `torch.tile`, ...): name them instead of handing ncnn a .param it cannot load."""
    import ncnn

    from .param import layer_types
    from .session import layer_exists

    missing: dict[str, int] = {}
    for kind, line in layer_types(param.read_text(errors="replace")):
        if kind not in missing and not layer_exists(kind):
            missing[kind] = line
    if missing:
        listed = ", ".join(f"{k} (line {n})" for k, n in missing.items())
        raise ConversionError(
            f"pnnx left operators that ncnn {getattr(ncnn, '__version__', '')} has no layer for: {listed}"
        )
