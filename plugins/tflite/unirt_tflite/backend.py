"""The loader: says whether LiteRT's interpreter is usable here and loads sessions. ai_edge_litert is imported
lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unirt import Availability, Backend, FormatFacts, LoadOptions, ModelFile, ModelFormat

if TYPE_CHECKING:
    from .session import TFLiteSession


class TFLiteBackend(Backend):
    name = "tflite"
    formats = frozenset({ModelFormat.TFLITE})
    install_hint = "pip install ./plugins/tflite (from unirt's source checkout)"
    serve_aliases = ("litert",)
    format_facts = {ModelFormat.TFLITE: FormatFacts(("model.tflite",), "tflite")}
    #: LiteRT ships no ONNX importer and TensorFlow is not a unirt dependency: convert with onnx2tf outside unirt.
    convert_hint = (
        "unirt has no ONNX -> TFLite converter (LiteRT ships none, and unirt does not depend on "
        "TensorFlow). Convert with onnx2tf, which needs TensorFlow: `pip install onnx2tf` (plus the "
        "dependencies its README lists), then `onnx2tf -i model.onnx` writes .tflite files into "
        "saved_model/ (-o DIR for another folder); unirt runs those with backend='tflite'"
    )

    def probe(self) -> Availability:
        try:
            from importlib.metadata import version

            from ai_edge_litert import interpreter  # noqa: F401 - probed: does it import here
        except Exception as exc:  # ImportError, or a broken native library
            return Availability.missing(f"cannot import ai_edge_litert: {type(exc).__name__}: {exc}")
        try:
            engine = version("ai-edge-litert")
        except Exception:
            engine = None
        return Availability(True, version=engine, devices=("cpu",))

    def load(self, model: ModelFile, options: LoadOptions) -> TFLiteSession:
        from .session import TFLiteSession

        return TFLiteSession(model, options)
