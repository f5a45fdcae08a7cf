"""The loader: says whether torch is usable here and loads sessions. torch is imported lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from unirt import Availability, Backend, FormatFacts, LoadOptions, ModelFile, ModelFormat, hardware
from unirt.backend import NUMERIC_DTYPES

if TYPE_CHECKING:
    from .session import TorchSession


class TorchBackend(Backend):
    name = "torch"
    formats = frozenset({ModelFormat.TORCH_EXPORT, ModelFormat.TORCH_AOTI, ModelFormat.TORCHSCRIPT})
    tensor_dtypes = NUMERIC_DTYPES  # torch has no string tensors
    install_hint = "pip install './plugins/torch[engine]' (from unirt's source checkout)"
    serve_platform = "pytorch_libtorch"  # Triton's name for TorchScript models
    image_extra = "engine"  # the plugin's extra that installs torch itself
    format_facts = {
        ModelFormat.TORCHSCRIPT: FormatFacts(("model.pt",), "pytorch"),
        ModelFormat.TORCH_EXPORT: FormatFacts(("model.pt2",), "pytorch"),
        ModelFormat.TORCH_AOTI: FormatFacts(("model.pt2",), "pytorch"),
    }

    def probe(self) -> Availability:
        try:
            import torch
        except Exception as exc:  # ImportError, or a broken native library
            return Availability.missing(f"cannot import torch: {type(exc).__name__}: {exc}")
        cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
        note = ""
        if not cuda and hardware().has_cuda:
            note = (
                "this torch build has no CUDA (torch.version.cuda is None): install a CUDA build of torch"
                if torch.version.cuda is None
                else "torch sees no CUDA device (driver?)"
            )
        return Availability(True, version=torch.__version__, devices=(*cuda, "cpu"), device_note=note)

    def load(self, model: ModelFile, options: LoadOptions) -> TorchSession:
        from .session import TorchSession

        return TorchSession(model, options)
