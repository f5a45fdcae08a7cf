"""What goes into the `unirt serve` container image (`deploy/kserve/Dockerfile`): unirt's extras and the backend
plugins, chosen by name, and which model formats an image with those plugins can serve.

The Dockerfile takes two build arguments, `UNIRT_EXTRAS` (unirt's optional extras, comma-separated; `serve` is
always there) and `UNIRT_BACKENDS` (plugin folders under `plugins/`, space-separated). The plugins' formats are
listed here, not imported: manifests are often written on a machine that does not run the backends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UnsupportedOptionError
from ..formats import ModelFormat

__all__ = ["Plugin", "PLUGINS", "EXTRAS", "ImageContents", "image_contents", "backend_for_format", "DOCKERFILE"]

DOCKERFILE = "deploy/kserve/Dockerfile"  # in unirt's source tree; the build context is the tree's root


@dataclass(frozen=True)
class Plugin:
    """A backend plugin as the image installs it: its folder under plugins/, its pip extra, and the formats it
    serves (read natively, or converted on first load with the backend's own converter)."""

    backend: str
    reads: tuple[ModelFormat, ...]
    converts: tuple[ModelFormat, ...] = ()
    extra: str = ""            # the plugin's own extra the image installs (TensorRT's engine)
    gpu: bool = False          # needs an NVIDIA GPU to run at all

    @property
    def distribution(self) -> str:
        return f"unirt-{self.backend}"

    @property
    def formats(self) -> tuple[ModelFormat, ...]:
        return self.reads + tuple(f for f in self.converts if f not in self.reads)


F = ModelFormat
PLUGINS: dict[str, Plugin] = {p.backend: p for p in (
    Plugin("onnxruntime", (F.ONNX,)),
    Plugin("openvino", (F.OPENVINO, F.ONNX, F.TFLITE)),
    Plugin("tflite", (F.TFLITE,)),
    Plugin("ncnn", (F.NCNN,), (F.ONNX,)),
    Plugin("mnn", (F.MNN,), (F.ONNX,)),
    Plugin("tensorrt", (F.TENSORRT,), (F.ONNX,), extra="engine", gpu=True),
)}
# unirt's own extras an image may add (pyproject.toml's optional-dependencies); `serve` is always installed.
EXTRAS = ("serve", "convert", "tools")
# The backend unirt serve picks first for a format on a server CPU (README's auto-selection), for default images.
_NATIVE = {F.ONNX: "onnxruntime", F.OPENVINO: "openvino", F.TFLITE: "tflite", F.NCNN: "ncnn", F.MNN: "mnn",
           F.TENSORRT: "tensorrt"}


def backend_for_format(fmt: ModelFormat) -> str:
    return _NATIVE[fmt]


@dataclass(frozen=True)
class ImageContents:
    """The image's `UNIRT_EXTRAS` and `UNIRT_BACKENDS`, and the model formats it serves."""

    extras: tuple[str, ...]
    backends: tuple[str, ...]

    @property
    def formats(self) -> tuple[ModelFormat, ...]:
        seen: list[ModelFormat] = []
        for backend in self.backends:
            seen += [f for f in PLUGINS[backend].formats if f not in seen]
        return tuple(seen)

    @property
    def build_args(self) -> dict[str, str]:
        return {"UNIRT_EXTRAS": ",".join(self.extras), "UNIRT_BACKENDS": " ".join(self.backends)}

    def build_command(self, image: str) -> str:
        args = " ".join(f'--build-arg {k}="{v}"' for k, v in self.build_args.items())
        return f"docker build -f {DOCKERFILE} {args} -t {image} ."


def image_contents(items: Iterable[str], formats: Iterable[ModelFormat] = ()) -> ImageContents:
    """Resolve `--extras` items (backend names or unirt extras) plus the backends the models' `formats` need.
    Backends that convert on load (ncnn, MNN, TensorRT from ONNX) bring unirt's `convert` extra."""
    extras, backends = ["serve"], []
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if name in PLUGINS:
            backends.append(name)
        elif name in EXTRAS:
            extras.append(name)
        else:
            raise UnsupportedOptionError(f"--extras: {item!r} is neither a backend ({', '.join(PLUGINS)}) nor an "
                                         f"extra of unirt ({', '.join(EXTRAS)})")
    for fmt in formats:
        if not any(fmt in PLUGINS[b].formats for b in backends):
            backends.append(backend_for_format(fmt))
    if any(PLUGINS[b].converts for b in backends):
        extras.append("convert")
    return ImageContents(tuple(dict.fromkeys(extras)), tuple(dict.fromkeys(backends)))
