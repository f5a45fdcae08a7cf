"""The loader: whether ncnn is usable here, loading .param/.bin models, and converting ONNX with pnnx."""

from __future__ import annotations

from pathlib import Path

from unirt import (Availability, Backend, BackendSession, ConversionError, LoadOptions, ModelFile, ModelFormat,
                   UnsupportedOptionError, open_model)

from unirt.native_output import native_output_silenced


def _gpu_count(ncnn) -> int:
    try:
        with native_output_silenced():  # the Vulkan loader prints to stderr when there is no driver
            return int(ncnn.get_gpu_count())
    except Exception:
        return 0


class NcnnBackend(Backend):
    name = "ncnn"
    formats = frozenset({ModelFormat.NCNN})
    converts_from = frozenset({ModelFormat.ONNX})
    install_hint = "pip install unirt-ncnn"
    # verification compares the numbers itself: fp16 weights stored for a CPU that computes fp32 are checked there
    verification_options = {"allow_storage_only_precision": True}

    def probe(self) -> Availability:
        try:
            import ncnn
        except Exception as exc:
            return Availability.missing(f"cannot import ncnn: {type(exc).__name__}: {exc}")
        gpus = _gpu_count(ncnn)
        return Availability(True, version=getattr(ncnn, "__version__", "unknown"),
                            devices=tuple(f"gpu:{i}" for i in range(gpus)) + ("cpu",))

    def load(self, model: ModelFile, options: LoadOptions) -> BackendSession:
        from .session import NcnnSession

        return NcnnSession(model, options)

    def converter_version(self) -> str | None:
        from .pnnx import pnnx_identity

        return pnnx_identity()

    def convert(self, model: ModelFile, out_dir: Path, options: LoadOptions) -> ModelFile:
        """ONNX -> model.param + model.bin with pnnx, at the shapes unirt's conversion layer passes; fp32 weights
        unless precision='fp16' (bf16 runs from fp32 weights with ncnn's bf16 storage). pnnx's batch axis per
        blob goes into the conversion's sidecar (`batch_axes`): the runner needs it to feed ncnn."""
        from unirt.conversion.signature import write_sidecar

        from .pnnx import run_pnnx

        if model.path is None:
            raise ConversionError("pnnx converts model files; save the model to a file first")
        if options.precision == "int8":
            raise UnsupportedOptionError("ncnn: pnnx writes fp32 or fp16 weights; int8 needs ncnn2int8 with "
                                         "calibration data")
        bo = options.backend_options
        shapes, dtypes = dict(bo.get("input_shapes") or {}), dict(bo.get("input_dtypes") or {})
        _check_inputs(shapes, dtypes)
        param, weights = out_dir / "model.param", out_dir / "model.bin"
        axes = run_pnnx(model.path, param, weights, shapes, dtypes, fp16=options.precision == "fp16",
                        timeout=float(bo.get("timeout", 600)))
        _check_layers(param)
        write_sidecar(param, [], [], batch_axes=axes)  # the conversion layer adds the signature, keeps this
        return open_model(param)


def _check_inputs(shapes: dict, dtypes: dict) -> None:
    """Refuse, before pnnx runs, inputs an ncnn model cannot take: ncnn's Mats hold float32 only, and pnnx's
    inputshape has no form for a rank-0 tensor."""
    problems = [f"input {name!r} is {dtypes[name]} (ncnn takes float32 inputs only)"
                for name in shapes if dtypes.get(name, "float32") != "float32"]
    problems += [f"input {name!r} is a scalar (pnnx cannot take rank-0 inputs)" for name, s in shapes.items()
                 if len(s) == 0]
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
        raise ConversionError(f"pnnx left operators that ncnn {getattr(ncnn, '__version__', '')} has no layer for: "
                              f"{listed}")
