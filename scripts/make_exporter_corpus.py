"""Make tests/data/exporters/: tiny networks exported by the field's real exporters, and MANIFEST.json.

Run by hand, not in CI: each part needs its exporter, and their pins clash, so each part runs in its own venv
(never in the project's venv). Each part adds or replaces its files' entries in MANIFEST.json.

    python3 -m venv /tmp/h5-torch  && /tmp/h5-torch/bin/pip install torch==2.13.0 onnx onnxscript
    python3 -m venv /tmp/h5-tf     && /tmp/h5-tf/bin/pip install tensorflow-cpu tf2onnx
    python3 -m venv /tmp/h5-paddle && /tmp/h5-paddle/bin/pip install paddlepaddle paddle2onnx packaging
    /tmp/h5-torch/bin/python  scripts/make_exporter_corpus.py torch    # torch.onnx: legacy (dynamic_axes), dynamo
    /tmp/h5-tf/bin/python     scripts/make_exporter_corpus.py tf       # tf2onnx from Keras; Keras -> TFLite
    /tmp/h5-paddle/bin/python scripts/make_exporter_corpus.py paddle   # paddle2onnx 2.x (its polygraphy step
                                                                       # pip-installs onnxruntime into that venv)
    python3 -m venv /tmp/h5-paddle1 && /tmp/h5-paddle1/bin/pip install paddlepaddle==2.6.2 paddle2onnx==1.2.11 \
        packaging 'numpy<2'
    /tmp/h5-paddle1/bin/pip install onnx==1.16.2 onnxruntime
    /tmp/h5-paddle1/bin/python scripts/make_exporter_corpus.py paddle  # paddle2onnx 1.x
    python scripts/make_exporter_corpus.py native   # (project venv: onnx, mnn, pnnx) onnx.helper model; .mnn via
                                                    # MNN's mnnconvert, .ncnn.param/.bin via ncnn's pnnx

`torch==2.13.0` is the CPU wheel on this machine's disk (a plain `torch` would pull a multi-GB CUDA build).

What each exporter writes for a dynamic dim (read back from the files, recorded in MANIFEST.json):
- torch.onnx legacy (TorchScript) exporter: the names given in `dynamic_axes` (`batch_size`), or, where an axis
  list is given instead of names, generated ones (`<input>_dynamic_axes_1`, ...); output dims it cannot name get
  generated names too.
- torch.onnx dynamo exporter (torch.export): `s0`, `s1`, ... from the symbolic shapes (one symbol shared by two
  inputs whose sizes must agree), and output dims as expressions of them (`s0 + s1`, `((s1 - 1)//2) + 1`).
- tf2onnx (Keras models): `unk__N` for Keras' None dims.
- paddle2onnx: `DynamicDimension.N` for Paddle's None dims (both 2.1.0 and 1.2.11 here; 2.1.0 writes output dims
  as expressions of them, `floor(floor(DynamicDimension.1/2 - 1/2)/2) + 1`). Neither writes the `?` or `-1`
  strings the issue saw on public PaddleOCR models (older releases; tried here: paddle2onnx 0.9.2, pure Python,
  installs but imports paddle.fluid, gone from paddle 2.6, the oldest paddle for Python 3.11 here, and pins
  onnx<=1.9), so `?`/`""`/`-1` placeholders have no real-exporter file here.
- Keras -> TFLite converter: `shape` with 1 in place of a dynamic dim and `shape_signature` with -1.

keras2onnx is not used: it is dead (last release 2020) and supports no TensorFlow 2.x; tf2onnx's Keras path
(`tf2onnx.convert.from_keras`) is its successor and is what exports Keras models to ONNX today.

The model whose declared output rank differs from what it returns is made with onnx.helper (the `native` part):
no exporter at hand writes such a model for a tiny network (it occurs in the field in hand-edited or
metadata-patched exports), so it is built directly, and the manifest says so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "exporters"
MANIFEST = OUT / "MANIFEST.json"
ONNX_ENGINES = ["onnxruntime", "openvino", "ncnn", "mnn"]


def load_manifest() -> dict:
    if MANIFEST.is_file():
        return json.loads(MANIFEST.read_text())
    return {
        "about": "Tiny models made by real exporters (scripts/make_exporter_corpus.py). Per model: the exporter "
        "and its version, the source network, its inputs and outputs as the exporter wrote them "
        "(dims: int, or the dim_param string; TFLite: shape_signature), the shapes it really runs at "
        "(one dict of input shapes per run; int inputs draw values from int_ranges), and the engines "
        "that run it when called by hand.",
        "models": {},
    }


def save_entry(name: str, entry: dict) -> None:
    manifest = load_manifest()
    manifest["models"][name] = entry
    manifest["models"] = dict(sorted(manifest["models"].items()))
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{name}: {entry['file']} ({(OUT / entry['file']).stat().st_size} bytes)")


def onnx_io(path: Path) -> tuple[list[dict], list[dict]]:
    """The inputs and outputs as the exporter wrote them: dims as ints (dim_value), strings (dim_param), or None."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}

    def describe(vi) -> dict:
        t = vi.type.tensor_type
        dims = []
        for d in t.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None)
        return {
            "name": vi.name,
            "dtype": str(helper.tensor_dtype_to_np_dtype(t.elem_type)),
            "shape": dims if t.HasField("shape") else None,
        }

    return ([describe(v) for v in model.graph.input if v.name not in inits], [describe(v) for v in model.graph.output])


def check_ort(path: Path, runs: list[dict], int_ranges: dict | None = None) -> None:
    """Every run shape must run in ONNX Runtime (the exporter's output is the reference): a model that ORT cannot
    run is not a corpus model."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    types = {i.name: i.type for i in sess.get_inputs()}
    for shapes in runs:
        feeds = {}
        for n, s in shapes.items():
            if "int64" in types[n]:
                lo, hi = (int_ranges or {}).get(n, (0, 10))
                feeds[n] = rng.integers(lo, hi, s).astype(np.int64)
            else:
                feeds[n] = rng.standard_normal(s).astype(np.float32)
        sess.run(None, feeds)


def entry(
    file: str,
    exporter: str,
    version: str,
    source: str,
    runs: list[dict],
    engines: list[str],
    int_ranges: dict | None = None,
    notes: str = "",
    fmt: str = "onnx",
    float_ranges: dict | None = None,
) -> dict:
    e: dict = {"file": file, "format": fmt, "exporter": exporter, "exporter_version": version, "source": source}
    if fmt == "onnx":
        e["inputs"], e["outputs"] = onnx_io(OUT / file)
    e["runs_at"] = runs
    if int_ranges:
        e["int_ranges"] = int_ranges
    if float_ranges:  # inputs drawn uniformly from a range instead of N(0, 1) (a divisor away from 0)
        e["float_ranges"] = float_ranges
    e["engines"] = engines
    if notes:
        e["notes"] = notes
    return e


# ---------------------------------------------------------------------------------------------------- torch.onnx
def part_torch() -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)
    version = f"torch {torch.__version__}"
    legacy = "torch.onnx.export(dynamo=False) (TorchScript exporter) with dynamic_axes"
    dynamo = "torch.onnx.export(dynamo=True) (torch.export + onnxscript) with dynamic_shapes"

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

        def forward(self, x):
            return self.net(x)

    class CNN(nn.Module):  # NCHW, dynamic H/W: conv stride 2 + global pool -> [N, 5]; and a feature map
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            f = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.head(f.mean(dim=(2, 3))), f

    class Pair(nn.Module):  # two inputs whose batch must agree: one shared symbol
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 6)
            self.b = nn.Linear(8, 6)

        def forward(self, x, y):
            return torch.tanh(self.a(x) + self.b(y))

    class MultiImage(nn.Module):  # an image and per-image box/scale vectors, and an image-sized mask output
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 + 4, 3)

        def forward(self, image, boxes, scale):
            f = torch.relu(self.conv(image))
            pooled = f.mean(dim=(2, 3))
            logits = self.fc(torch.cat([pooled, boxes], dim=1)) * scale
            return logits, torch.sigmoid(f[:, :1])

    class Tokens(nn.Module):  # int64 token ids -> embedding -> per-token logits and a pooled vector
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 12)
            self.fc = nn.Linear(12, 7)

        def forward(self, ids):
            h = self.emb(ids)
            return self.fc(h), h.mean(dim=1)

    class SeqFirst(nn.Module):  # a CRNN's output layout: [T, N, classes], dim 0 is not a batch
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, stride=(4, 2), padding=1)
            self.fc = nn.Linear(6 * 8, 9)

        def forward(self, x):
            f = torch.relu(self.conv(x))  # [N, 6, 8, W/2]
            n, c, h, w = f.shape
            return torch.log_softmax(self.fc(f.reshape(n, c * h, w).permute(2, 0, 1)), dim=-1)

    class Temperature(nn.Module):  # a rank-0 input
        def forward(self, logits, temperature):
            return torch.softmax(logits / temperature, dim=-1)

    def export_legacy(model, args, file, names_in, names_out, axes):
        torch.onnx.export(
            model.eval(),
            args,
            str(OUT / file),
            dynamo=False,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=axes,
            opset_version=17,
        )

    def export_dynamo(model, args, file, names_in, names_out, shapes):
        prog = torch.onnx.export(
            model.eval(),
            args,
            dynamo=True,
            input_names=names_in,
            output_names=names_out,
            dynamic_shapes=shapes,
            optimize=True,
            external_data=False,
        )
        prog.save(str(OUT / file))

    Dim = torch.export.Dim

    # legacy exporter, named axes
    export_legacy(
        MLP(),
        (torch.randn(2, 16),),
        "torch_legacy_mlp.onnx",
        ["x"],
        ["y"],
        {"x": {0: "batch_size"}, "y": {0: "batch_size"}},
    )
    runs = [{"x": [3, 16]}, {"x": [1, 16]}]
    check_ort(OUT / "torch_legacy_mlp.onnx", runs)
    save_entry(
        "torch_legacy_mlp",
        entry(
            "torch_legacy_mlp.onnx",
            legacy,
            version,
            "MLP 16-32-4, dynamic batch named 'batch_size'",
            runs,
            ONNX_ENGINES,
        ),
    )

    # legacy exporter, axes given as lists: generated names
    export_legacy(
        CNN(),
        (torch.randn(1, 3, 32, 32),),
        "torch_legacy_cnn.onnx",
        ["input"],
        ["logits", "features"],
        {"input": [0, 2, 3], "logits": [0], "features": [0, 2, 3]},
    )
    runs = [{"input": [2, 3, 40, 56]}, {"input": [1, 3, 64, 64]}]
    check_ort(OUT / "torch_legacy_cnn.onnx", runs)
    save_entry(
        "torch_legacy_cnn",
        entry(
            "torch_legacy_cnn.onnx",
            legacy,
            version,
            "NCHW CNN (conv s2, conv, global mean, linear) with dynamic batch and H/W "
            "given as axis lists (exporter-generated dim names); outputs logits "
            "[N,5] and the feature map [N,8,H/2,W/2]",
            runs,
            ONNX_ENGINES,
        ),
    )

    # legacy: several inputs, image + vectors + scalar-ish [N,1]
    export_legacy(
        MultiImage(),
        (torch.randn(1, 3, 24, 24), torch.randn(1, 4), torch.ones(1, 1)),
        "torch_legacy_multi_input.onnx",
        ["image", "boxes", "scale"],
        ["logits", "mask"],
        {
            "image": {0: "batch", 2: "height", 3: "width"},
            "boxes": {0: "batch"},
            "scale": {0: "batch"},
            "logits": {0: "batch"},
            "mask": {0: "batch", 2: "height", 3: "width"},
        },
    )
    runs = [{"image": [2, 3, 48, 32], "boxes": [2, 4], "scale": [2, 1]}]
    check_ort(OUT / "torch_legacy_multi_input.onnx", runs)
    save_entry(
        "torch_legacy_multi_input",
        entry(
            "torch_legacy_multi_input.onnx",
            legacy,
            version,
            "image model with three inputs (NCHW image with named batch/height/width, boxes [batch,4], scale "
            "[batch,1]); outputs logits [batch,3] and a mask [batch,1,height,width]",
            runs,
            ONNX_ENGINES,
        ),
    )

    # legacy: a rank-0 input
    export_legacy(
        Temperature(),
        (torch.randn(2, 10), torch.tensor(2.0)),
        "torch_legacy_scalar.onnx",
        ["logits", "temperature"],
        ["probs"],
        {"logits": {0: "batch"}, "probs": {0: "batch"}},
    )
    runs = [{"logits": [4, 10], "temperature": []}]
    check_ort(OUT / "torch_legacy_scalar.onnx", runs)
    save_entry(
        "torch_legacy_scalar",
        entry(
            "torch_legacy_scalar.onnx",
            legacy,
            version,
            "softmax(logits / temperature) with a rank-0 temperature input",
            runs,
            ONNX_ENGINES,
            notes="ncnn (pnnx) takes no rank-0 input",
            float_ranges={"temperature": [0.5, 2.0]},
        ),
    )

    # legacy: output [T, N, C] (sequence first)
    export_legacy(
        SeqFirst(),
        (torch.randn(1, 1, 32, 40),),
        "torch_legacy_seq_first.onnx",
        ["image"],
        ["log_probs"],
        {"image": {0: "batch", 3: "width"}, "log_probs": {0: "time", 1: "batch"}},
    )
    runs = [{"image": [1, 1, 32, 100]}, {"image": [1, 1, 32, 64]}]
    check_ort(OUT / "torch_legacy_seq_first.onnx", runs)
    save_entry(
        "torch_legacy_seq_first",
        entry(
            "torch_legacy_seq_first.onnx",
            legacy,
            version,
            "CRNN-like: grey text line [batch,1,32,width] -> conv -> "
            "log_softmax over 9 classes, output sequence-first [time, batch, 9] "
            "(dim 0 is not a batch)",
            runs,
            ONNX_ENGINES,
        ),
    )

    # dynamo: shared symbol
    batch = Dim("batch", min=1, max=64)
    export_dynamo(
        Pair(),
        (torch.randn(2, 8), torch.randn(2, 8)),
        "torch_dynamo_pair.onnx",
        ["x", "y"],
        ["z"],
        ({0: Dim.AUTO}, {0: Dim.AUTO}),
    )
    runs = [{"x": [3, 8], "y": [3, 8]}, {"x": [5, 8], "y": [5, 8]}]
    check_ort(OUT / "torch_dynamo_pair.onnx", runs)
    save_entry(
        "torch_dynamo_pair",
        entry(
            "torch_dynamo_pair.onnx",
            dynamo,
            version,
            "tanh(Linear(x) + Linear(y)): torch.export proves the two batch dims "
            "equal, so both inputs carry one symbol (must stay tied)",
            runs,
            ONNX_ENGINES,
        ),
    )

    # dynamo: CNN with dynamic batch and H/W (symbols and expressions on outputs)
    export_dynamo(
        CNN(),
        (torch.randn(2, 3, 32, 32),),
        "torch_dynamo_cnn.onnx",
        ["input"],
        ["logits", "features"],
        ({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO},),
    )
    runs = [{"input": [2, 3, 40, 56]}, {"input": [1, 3, 64, 64]}]
    check_ort(OUT / "torch_dynamo_cnn.onnx", runs)
    save_entry(
        "torch_dynamo_cnn",
        entry(
            "torch_dynamo_cnn.onnx",
            dynamo,
            version,
            "the NCHW CNN of torch_legacy_cnn, dynamic batch and H/W as torch.export "
            "symbols (output dims are expressions of them)",
            runs,
            ONNX_ENGINES,
        ),
    )

    # dynamo: int64 token ids
    export_dynamo(
        Tokens(),
        (torch.randint(0, 100, (2, 9)),),
        "torch_dynamo_tokens.onnx",
        ["ids"],
        ["token_logits", "pooled"],
        ({0: batch, 1: Dim("seq", min=2, max=512)},),
    )
    runs = [{"ids": [2, 9]}, {"ids": [1, 30]}]
    ranges = {"ids": [0, 100]}
    check_ort(OUT / "torch_dynamo_tokens.onnx", runs, ranges)
    save_entry(
        "torch_dynamo_tokens",
        entry(
            "torch_dynamo_tokens.onnx",
            dynamo,
            version,
            "int64 token ids [batch, seq] -> Embedding(100, 12) -> per-token "
            "logits [batch, seq, 7] and mean-pooled [batch, 12]",
            runs,
            ONNX_ENGINES,
            ranges,
            notes="ncnn takes float32 Mats only: an int64 input is not for ncnn",
        ),
    )


# ---------------------------------------------------------------------------------------------------- TensorFlow
def part_tf() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf2onnx

    tf.random.set_seed(0)
    keras = tf.keras
    tfv = f"tensorflow {tf.__version__}"

    def nhwc_cnn():
        inp = keras.Input(shape=(None, None, 3), name="image")
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        out = keras.layers.Dense(5, name="probs", activation="softmax")(x)
        return keras.Model(inp, out)

    def audio():  # a dynamic-length waveform -> strided conv frames -> per-frame scores and a clip score
        inp = keras.Input(shape=(None,), name="waveform")
        x = keras.layers.Reshape((-1, 1))(inp)
        x = keras.layers.Conv1D(8, 16, strides=8, activation="relu")(x)
        frames = keras.layers.Conv1D(3, 1, name="frame_scores")(x)
        clip = keras.layers.Dense(2, name="clip")(keras.layers.GlobalAveragePooling1D()(x))
        return keras.Model(inp, [frames, clip])

    def mlp():
        inp = keras.Input(shape=(16,), name="features")
        x = keras.layers.Dense(32, activation="relu")(inp)
        return keras.Model(inp, keras.layers.Dense(4)(x))

    def to_onnx(model, file, spec):
        onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
        (OUT / file).write_bytes(onnx_model.SerializeToString())

    def to_tflite(model, file):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        (OUT / file).write_bytes(conv.convert())

    tf2 = f"tf2onnx {tf2onnx.__version__} ({tfv})"
    m = nhwc_cnn()
    to_onnx(m, "tf2onnx_keras_nhwc_cnn.onnx", (tf.TensorSpec((None, None, None, 3), tf.float32, name="image"),))
    runs = [{"image": [2, 32, 48, 3]}, {"image": [1, 64, 64, 3]}]
    check_ort(OUT / "tf2onnx_keras_nhwc_cnn.onnx", runs)
    save_entry(
        "tf2onnx_keras_nhwc_cnn",
        entry(
            "tf2onnx_keras_nhwc_cnn.onnx",
            "tf2onnx.convert.from_keras",
            tf2,
            "Keras NHWC CNN (conv s2, conv, global average pool, dense softmax) with dynamic batch and H/W",
            runs,
            ONNX_ENGINES,
        ),
    )
    to_tflite(m, "keras_nhwc_cnn.tflite")
    save_entry(
        "keras_nhwc_cnn_tflite",
        entry(
            "keras_nhwc_cnn.tflite",
            "tf.lite.TFLiteConverter.from_keras_model",
            tfv,
            "the same Keras NHWC CNN, dynamic batch and H/W",
            runs,
            ["tflite", "openvino"],
            fmt="tflite",
        ),
    )

    a = audio()
    to_onnx(a, "tf2onnx_keras_audio.onnx", (tf.TensorSpec((None, None), tf.float32, name="waveform"),))
    runs = [{"waveform": [1, 1600]}, {"waveform": [2, 800]}]
    check_ort(OUT / "tf2onnx_keras_audio.onnx", runs)
    save_entry(
        "tf2onnx_keras_audio",
        entry(
            "tf2onnx_keras_audio.onnx",
            "tf2onnx.convert.from_keras",
            tf2,
            "Keras audio front end: waveform [batch, samples] -> Conv1D(k16, s8) "
            "frames -> per-frame scores [batch, T, 3] and a clip score [batch, 2]",
            runs,
            ONNX_ENGINES,
        ),
    )
    to_tflite(a, "keras_audio.tflite")
    save_entry(
        "keras_audio_tflite",
        entry(
            "keras_audio.tflite",
            "tf.lite.TFLiteConverter.from_keras_model",
            tfv,
            "the same Keras audio front end, dynamic batch and length (shape_signature [-1, -1])",
            runs,
            ["tflite", "openvino"],
            fmt="tflite",
        ),
    )

    to_tflite(mlp(), "keras_mlp.tflite")
    runs = [{"features": [5, 16]}, {"features": [1, 16]}]
    save_entry(
        "keras_mlp_tflite",
        entry(
            "keras_mlp.tflite",
            "tf.lite.TFLiteConverter.from_keras_model",
            tfv,
            "Keras MLP 16-32-4 with a dynamic batch (shape_signature [-1, 16])",
            runs,
            ["tflite", "openvino"],
            fmt="tflite",
        ),
    )
    for name in ("keras_nhwc_cnn_tflite", "keras_audio_tflite", "keras_mlp_tflite"):
        record_tflite_io(name)


def record_tflite_io(name: str) -> None:
    import tensorflow as tf

    manifest = load_manifest()
    e = manifest["models"][name]
    interp = tf.lite.Interpreter(model_path=str(OUT / e["file"]))
    e["inputs"] = [
        {
            "name": d["name"],
            "dtype": np.dtype(d["dtype"]).name,
            "shape": d["shape"].tolist(),
            "shape_signature": d["shape_signature"].tolist(),
        }
        for d in interp.get_input_details()
    ]
    e["outputs"] = [
        {
            "name": d["name"],
            "dtype": np.dtype(d["dtype"]).name,
            "shape": d["shape"].tolist(),
            "shape_signature": d["shape_signature"].tolist(),
        }
        for d in interp.get_output_details()
    ]
    # the runs name inputs by the Keras names; TFLite's names are serving_default_<name>:0
    renamed = []
    for run in e["runs_at"]:
        renamed.append({next(d["name"] for d in e["inputs"] if k in d["name"]): v for k, v in run.items()})
    e["runs_at"] = renamed
    save_entry(name, e)


# ---------------------------------------------------------------------------------------------------- paddle2onnx
def part_paddle() -> None:
    import paddle
    import paddle2onnx
    from paddle import nn

    paddle.seed(0)
    globals().update(paddle=paddle, nn=nn)  # paddle's dy2static re-reads forward() and resolves names as globals

    class Rec(nn.Layer):  # a text recognizer's shape: [N,3,48,W] -> CNN -> collapse H -> [N, T=W/4, classes]
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2D(3, 8, 3, stride=2, padding=1)
            self.c2 = nn.Conv2D(8, 16, 3, stride=2, padding=1)
            self.pool = nn.AdaptiveAvgPool2D((1, None))
            self.fc = nn.Linear(16, 11)

        def forward(self, x):
            f = nn.functional.relu(self.c2(nn.functional.relu(self.c1(x))))
            f = self.pool(f).squeeze(2).transpose([0, 2, 1])  # [N, T, 16]
            return nn.functional.softmax(self.fc(f), axis=-1)

    class Rec2(Rec):  # adaptive pool with None is not exported by every version: mean over H instead
        def forward(self, x):
            f = nn.functional.relu(self.c2(nn.functional.relu(self.c1(x))))
            f = f.mean(axis=2).transpose([0, 2, 1])
            return nn.functional.softmax(self.fc(f), axis=-1)

    legacy = paddle.__version__.startswith("2.")  # paddle 2.x + paddle2onnx 1.x: the exporter of the models
    file = "paddle2onnx_1x_text_rec.onnx" if legacy else "paddle2onnx_text_rec.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        model = Rec2()
        model.eval()
        spec = [paddle.static.InputSpec([None, 3, 48, None], "float32", "x")]
        if legacy:
            paddle.onnx.export(model, str(OUT / file[:-5]), input_spec=spec, opset_version=11)
            shutil.rmtree(OUT / "paddle_model_temp_dir", ignore_errors=True)  # paddle2onnx 1.x leaves it behind
        else:
            static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
            paddle.jit.save(static, f"{tmp}/rec")
            files = sorted(p.name for p in Path(tmp).iterdir())
            model_file = next((f"{tmp}/{f}" for f in files if f.endswith((".json", ".pdmodel"))), None)
            paddle2onnx.export(
                model_file, f"{tmp}/rec.pdiparams", str(OUT / file), opset_version=14, enable_onnx_checker=True
            )
    runs = [{"x": [1, 3, 48, 192]}, {"x": [2, 3, 48, 320]}]
    check_ort(OUT / file, runs)
    save_entry(
        file[:-5],
        entry(
            file,
            "paddle.onnx.export (paddle2onnx)" if legacy else "paddle2onnx.export",
            f"paddle2onnx {paddle2onnx.__version__} (paddlepaddle {paddle.__version__})",
            "text-recognizer-shaped CNN: x [N,3,48,W] (InputSpec [None,3,48,None])"
            " -> two stride-2 convs -> mean over H -> [N, W/4, 11] softmax",
            runs,
            ONNX_ENGINES,
        ),
    )


# ---------------------------------------------------------------------------------------------------- native
def part_native() -> None:
    import onnx
    from onnx import TensorProto, helper

    # declared output rank 2 ([1, seqlen]), real output rank 3 ([1, seqlen, 2])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seqlen"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seqlen"])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 2], [0.5, -2.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["x3"]), helper.make_node("Mul", ["x3", "w"], ["y"])]
    graph = helper.make_graph(nodes, "declared_rank_mismatch", [x], [y], [w, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper")
    model.ir_version = 8
    path = OUT / "helper_declared_rank_mismatch.onnx"
    onnx.save(model, str(path))
    runs = [{"x": [1, 12]}, {"x": [1, 5]}]
    check_ort(path, runs)
    save_entry(
        "helper_declared_rank_mismatch",
        entry(
            path.name,
            "onnx.helper (by hand)",
            f"onnx {onnx.__version__}",
            "x [1, seqlen] -> Unsqueeze(axis 2) * w -> y, which the graph declares [1, seqlen] but is [1, seqlen, 2] "
            "(no exporter at hand writes this for a tiny net; in the field it comes from edited/patched exports)",
            runs,
            ONNX_ENGINES,
        ),
    )

    # onnxruntime's dynamic quantizer on the torch CNN: ConvInteger + DynamicQuantizeLinear (int8 weights)
    try:
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        onnxruntime = None
    manifest = load_manifest()["models"]
    if onnxruntime is not None and "torch_legacy_cnn" in manifest:
        src = manifest["torch_legacy_cnn"]
        dst = OUT / "ort_dynamic_quant_cnn.onnx"
        with tempfile.TemporaryDirectory() as tmp:
            quantize_dynamic(str(OUT / src["file"]), f"{tmp}/q.onnx", weight_type=QuantType.QUInt8)
            dst.write_bytes(Path(tmp, "q.onnx").read_bytes())
        ops = sorted({n.op_type for n in onnx.load(str(dst)).graph.node})
        check_ort(dst, src["runs_at"])
        save_entry(
            "ort_dynamic_quant_cnn",
            entry(
                dst.name,
                "onnxruntime.quantization.quantize_dynamic (weight_type=QUInt8)",
                f"onnxruntime {onnxruntime.__version__}",
                f"torch_legacy_cnn.onnx, dynamically quantized (ops: {', '.join(ops)}); ONNX Runtime's answer is the "
                "reference, another engine's int8 arithmetic may differ from it",
                src["runs_at"],
                ONNX_ENGINES,
            ),
        )
        manifest = load_manifest()["models"]
    # MNN's converter, called as the module inside the MNN wheel (`_tools.mnnconvert`), as unirt's MNN plugin
    # does. NOT the wheel's `mnnconvert` console script: that one imports MNN.tools.utils.log, which runs
    # `pip install -U aliyun-log-python-sdk` into the running environment when that SDK is missing (it downgraded
    # protobuf there) and sends usage logs.
    try:
        import MNN

        mnn_version = MNN.version()
    except Exception:  # no MNN here
        mnn_version = None
    if mnn_version:
        for src in ("torch_legacy_cnn", "paddle2onnx_text_rec", "tf2onnx_keras_audio"):
            if src not in manifest:
                continue
            s = manifest[src]
            dst = f"{src}.mnn"
            args = [
                "mnnconvert",
                "-f",
                "ONNX",
                "--modelFile",
                str(OUT / s["file"]),
                "--MNNModel",
                str(OUT / dst),
                "--bizCode",
                "unirt",
            ]
            proc = subprocess.run(
                [sys.executable, "-c", f"import _tools; _tools.mnnconvert({args!r})"], capture_output=True, text=True
            )
            if proc.returncode != 0 or not (OUT / dst).is_file():
                print(f"mnnconvert failed on {src}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}", file=sys.stderr)
                continue
            save_entry(
                f"{src}_mnn",
                {
                    "file": dst,
                    "format": "mnn",
                    "exporter": "mnnconvert -f ONNX --bizCode unirt (MNN's converter)",
                    "exporter_version": f"MNN {mnn_version} (_tools.mnnconvert)",
                    "source": f"{s['file']} converted by MNN's own converter, no shapes given "
                    "(its dynamic dims stay dynamic in the .mnn)",
                    "inputs": s["inputs"],
                    "outputs": s["outputs"],
                    "runs_at": s["runs_at"],
                    "engines": ["mnn"],
                },
            )
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec("pnnx")  # the binary inside the pnnx wheel (its `pnnx` script imports torch)
    found = [Path(p) / "pnnx" for p in (spec.submodule_search_locations or [])] if spec else []
    pnnx = next((str(p) for p in found if p.is_file()), None)
    if pnnx:
        version = importlib.metadata.version("pnnx")
        # pnnx's inputshape sets the conversion shape; inputshape2 a second one, which makes the dims that differ
        # dynamic in the ncnn model
        for src, shape, shape2 in (
            ("torch_legacy_cnn", "[1,3,64,64]", "[1,3,40,56]"),
            ("paddle2onnx_text_rec", "[1,3,48,192]", "[1,3,48,320]"),
        ):
            if src not in manifest:
                continue
            s = manifest[src]
            base = OUT / f"{src}.ncnn"
            with tempfile.TemporaryDirectory() as tmp:
                proc = subprocess.run(
                    [
                        pnnx,
                        str(OUT / s["file"]),
                        f"inputshape={shape}",
                        f"inputshape2={shape2}",
                        f"ncnnparam={base}.param",
                        f"ncnnbin={base}.bin",
                        f"pnnxparam={tmp}/p.param",
                        f"pnnxbin={tmp}/p.bin",
                        f"pnnxpy={tmp}/p.py",
                        f"pnnxonnx={tmp}/p.onnx",
                        f"ncnnpy={tmp}/n.py",
                        "fp16=0",
                    ],
                    capture_output=True,
                    text=True,
                    cwd=tmp,
                )
                script = Path(tmp, "n.py").read_text() if Path(tmp, "n.py").is_file() else ""
            if proc.returncode != 0 or not Path(f"{base}.param").is_file():
                print(f"pnnx failed on {src}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}", file=sys.stderr)
                continue
            (OUT / s["file"]).with_suffix(".pnnxsim.onnx").unlink(missing_ok=True)  # pnnx leaves it beside the source
            param = Path(f"{base}.param").read_text().splitlines()
            blobs_in = [line.split()[1] for line in param[2:] if line.split()[0] == "Input"]
            blobs_out = sorted({b for line in param[2:] for b in line.split()[2:] if re.fullmatch(r"out\d+", b)})
            runs = [{"in0": [int(v) for v in text[1:-1].split(",")]} for text in (shape, shape2)]
            save_entry(
                f"{src}_ncnn",
                {
                    "file": f"{src}.ncnn.param",
                    "weights": f"{src}.ncnn.bin",
                    "format": "ncnn",
                    "exporter": f"pnnx {s['file']} inputshape={shape} inputshape2={shape2} (ncnn's converter)",
                    "exporter_version": f"pnnx {version}",
                    "source": f"{s['file']} converted by pnnx. ncnn has no batch dim: pnnx dropped the batch axis "
                    "(batch_axis 0 below, as its generated script says: ncnn.Mat(x, batch_index=0)); runs_at "
                    "gives the source's shapes at batch 1, which unirt shows a plain ncnn model's inputs as "
                    "([N, C, H, W]); by hand, ncnn gets x[0] and each output gains the batch axis back",
                    "batch_axis": 0,
                    "inputs": [{"name": b, "dtype": "float32", "shape": None} for b in blobs_in],
                    "outputs": [
                        {"name": b, "dtype": "float32", "shape": None, "onnx_output": o["name"]}
                        for b, o in zip(blobs_out, s["outputs"])
                    ],
                    "pnnx_ncnn_script_excerpt": [
                        line for line in script.splitlines() if "in0" in line or "out" in line
                    ][:8],
                    "runs_at": runs,
                    "engines": ["ncnn"],
                },
            )


PARTS = {"torch": part_torch, "tf": part_tf, "paddle": part_paddle, "native": part_native}

if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for part in sys.argv[1:] or list(PARTS):
        PARTS[part]()
