"""An ONNX model converted to fp16 (ONNX -> ONNX), verified against the fp32 model and cached like every conversion.

Engines whose networks are strongly typed (TensorRT 11 removed the weakly typed precision flags) run each tensor
in the type the model gives it, so fp16 there means converting the model first. The converter is ONNX Runtime's
`onnxruntime.transformers.float16.convert_float_to_float16` (the one `unirt quantize --fp16` uses) with
`keep_io_types=True`: inputs and outputs stay float32, so the model is fed and read as before, and ops it knows
fp16 breaks stay fp32 behind Casts. (onnxconverter-common 1.16's copy of it writes an invalid model when a graph
output also feeds another node: a Cast whose fp16 output a float32 consumer reads.) The result is
one entry of the conversion cache (`store`: keyed by the source's content hash, the converter's version and these
settings), verified on ONNX Runtime's CPU provider against the fp32 source on random inputs (`verify`), within
`TOLERANCES["fp16"]` unless `accept`.

    conv = onnx_to_fp16("model.onnx")        # -> Conversion; conv.path is the fp16 ONNX model
    print(conv)                              # converter, measured error, cache hit or not
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError, UnsupportedOptionError
from ..formats import ModelFile, ModelFormat, PathLike, open_model
from . import Conversion, store
from .build import _load_onnx, _reference_and_signature, _reference_outputs
from .fixups import initializers_as_inputs
from .verify import TOLERANCES, OutputError, compare, describe_sets, feed_sets, index_bounds

__all__ = ["onnx_to_fp16", "fp16_converter"]

log = logging.getLogger(__name__)

#: Bumped when what this module writes changes (part of the cache key).
_LAYOUT = 1
_INSTALL = "pip install onnxruntime (or pip install ./plugins/onnxruntime from unirt's source checkout)"
_CONVERTER_LOG = "onnxruntime.transformers.float16"
_TWO_GB = 2**31 - 1


def fp16_converter() -> str:
    """The converter's name and version ("onnxruntime 1.32.0 transformers.float16"); ConversionError when it is not
    installed, saying how to install it."""
    try:
        import onnxruntime
        from onnxruntime.transformers import float16  # noqa: F401
    except ImportError as exc:
        raise ConversionError(
            f"converting an ONNX model to fp16 needs ONNX Runtime's float16 converter ({exc}): {_INSTALL}"
        ) from None
    return f"onnxruntime {onnxruntime.__version__} transformers.float16"


def _has_fp16(proto: Any) -> bool:
    """fp16 tensors already: fp16 weights, inputs, outputs or value infos, or a Cast to fp16."""
    from onnx import TensorProto

    graph = proto.graph
    if any(i.data_type == TensorProto.FLOAT16 for i in graph.initializer):
        return True
    if any(
        v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in (*graph.input, *graph.output, *graph.value_info)
    ):
        return True
    return any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)
        for n in graph.node
    )


class _Clamped(logging.Handler):
    """Counts the converter's "will be truncated" messages: constants outside fp16's range, clamped to it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "truncated" in record.getMessage()


def _convert(proto: Any) -> tuple[Any, int]:
    """The fp16 model, and how often the converter clamped float32 constants to fp16's range (it logs each
    tensor's largest and smallest value it clamped)."""
    from onnxruntime.transformers import float16

    if _has_fp16(proto):
        raise UnsupportedOptionError(
            "the model already has fp16 tensors (an fp16 or mixed-precision model), so it "
            "is not converted again: load it at precision='fp32', which builds a strongly "
            "typed engine in the types the model gives its tensors"
        )
    logger, counter = logging.getLogger(_CONVERTER_LOG), _Clamped()
    level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = float16.convert_float_to_float16(proto, keep_io_types=True)
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
    return converted, counter.count


def _save(proto: Any, out: Path) -> list[Path]:
    import onnx

    big = proto.ByteSize() >= _TWO_GB
    onnx.save_model(proto, str(out), save_as_external_data=big, location=out.name + ".data" if big else None)
    return [out] + ([out.with_name(out.name + ".data")] if big else [])


def _run(path: Path, reference: str, sets: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    from ..session import Session

    with Session(path, backend=reference, device="cpu") as sess:
        return [sess.run(dict(feeds)) for feeds in sets]


def _build(
    src: ModelFile, key: str, version: str, verify: bool, input_shapes: Mapping[str, Sequence[int]] | None
) -> dict:
    reference, sig_in, _outputs = _reference_and_signature(src, "onnx-fp16", verify)
    work = store.new_work_dir(key)
    try:
        t0 = time.perf_counter()
        proto = _load_onnx(src)
        bounds = index_bounds(proto)
        notes = initializers_as_inputs(proto)
        try:
            converted, clamped = _convert(proto)
        except UnsupportedOptionError:
            raise
        except Exception as exc:
            raise ConversionError(f"{src.name}: {version} failed: {type(exc).__name__}: {exc}") from None
        if clamped:
            notes.append(
                f"the converter clamped float32 constants to fp16's range {clamped} times (|v| to 65504 "
                "at most, 5.96e-08 at least)"
            )
        files = _save(converted, work / "model.onnx")
        seconds = time.perf_counter() - t0
        errors: list[OutputError] = []
        verified_on = None
        if verify:
            assert reference is not None
            sets = feed_sets(sig_in, input_shapes, bounds=bounds)
            refs = [_reference_outputs(src, reference, feeds) for feeds in sets]
            errors = compare(_run(work / "model.onnx", reference, sets), refs)
            verified_on = describe_sets(sets)
        record = {
            "main": "model.onnx",
            "files": [f.name for f in files],
            "seconds": seconds,
            "converter": version,
            "fixups": notes,
            "verified": verify,
            "reference": reference if verify else None,
            "errors": [e.as_dict() for e in errors],
            "source": src.name,
            "shapes": {},
            "dynamic_axes": {},
            "verified_on": verified_on,
        }
        store.publish(key, work, record)
        return record
    except BaseException:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        raise


def onnx_to_fp16(
    model: PathLike | bytes | ModelFile,
    *,
    verify: bool = True,
    tolerance: float | None = None,
    accept: bool = False,
    cache: bool = True,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Conversion:
    """The fp16 conversion of an ONNX model (inputs and outputs keep their types), from the conversion cache when
    it was made before. `verify`: compare it with the fp32 model on ONNX Runtime (CPU) on random inputs (at
    `input_shapes` for dynamic dims); an error beyond `tolerance` (default `TOLERANCES["fp16"]`) is a
    ConversionError stating it, unless `accept`."""
    src = open_model(model)
    if src.format is not ModelFormat.ONNX:
        raise ConversionError(f"{src.name}: fp16 conversion takes ONNX models, not {src.format}")
    version = fp16_converter()
    parts = {
        "transform": "onnx-fp16",
        "converter": version,
        "keep_io_types": True,
        "layout": _LAYOUT,
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
    }
    key = store.cache_key(store.content_hash(src), parts)
    record = store.read_record(key) if cache else None
    cached = record is not None and (bool(record["verified"]) or not verify)
    if not cached:
        log.info("converting %s to fp16 with %s", src.name, version)
        record = _build(src, key, version, verify, input_shapes)
    assert record is not None
    entry = store.entry_dir(key)
    tol = TOLERANCES["fp16"] if tolerance is None else float(tolerance)
    conv = Conversion(
        source=src.name,
        backend="onnx-fp16",
        path=entry / record["main"],
        files=tuple(entry / f for f in record["files"]),
        cached=cached,
        seconds=record["seconds"],
        converter=record["converter"],
        fixups=tuple(record["fixups"]),
        errors=tuple(OutputError.from_dict(e) for e in record["errors"]),
        tolerance=tol,
        verified=bool(record["verified"]) and verify,
        reference=record.get("reference"),
        verified_on=record.get("verified_on"),
    )
    if conv.verified and not conv.within_tolerance:
        message = (
            f"{src.name}: its fp16 conversion ({version}) disagrees with the fp32 model on "
            f"{conv.reference} beyond the fp16 tolerance {tol:g}: {conv.describe_errors()}; verified on "
            f"{conv.verified_on}"
        )
        if not accept:
            raise ConversionError(
                message + ". Use precision='fp32' for this model, or accept the error (a larger tolerance)"
            )
        log.warning("%s; accepted", message)
    log.info("%s", conv)
    return conv
