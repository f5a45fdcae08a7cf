"""Every (model, backend) pair of the exporter corpus (tests/data/exporters/, made by scripts/make_exporter_corpus.py
with torch.onnx, tf2onnx, paddle2onnx, the TFLite converter, MNN's and ncnn's converters) through `unirt.Session`,
against the engine called by hand on the same inputs.

A pair passes when:
- unirt's outputs match the reference: ONNX Runtime on an ONNX file (for OpenVINO too, and for ncnn/MNN, which
  convert the ONNX file on load), LiteRT's Interpreter (resized, then allocated) on a .tflite, MNN's Module on a
  .mnn, ncnn's Net on a .param/.bin — at fp32 within `TOLERANCES["fp32"]`, at every shape the model really runs at
  (MANIFEST.json's `runs_at`; one session, its runs in turn);
- or unirt raises a unirt error (`unirt.errors.UnirtError`) where the engine by hand cannot run the model either:
  ONNX Runtime/LiteRT/MNN/ncnn on their own files; OpenVINO's `compile_model` on the file; for ncnn and MNN on an
  ONNX file, the engine's own converter (pnnx at the run's shapes; MNN's mnnconvert) and then the engine;
- or, where the backend neither reads nor converts the format, unirt refuses with a unirt error.
unirt refusing what the engine runs by hand, another exception, or a wrong answer fails the pair.

Exporters not in the corpus: keras2onnx (dead since 2020, no TensorFlow 2.x; tf2onnx's Keras path replaced it).
paddle2onnx 2.1.0 and 1.2.11 write `DynamicDimension.N`, not the `?`/`-1` strings of older releases (0.9.x needs
paddle.fluid and onnx<=1.9, which do not run on this Python 3.11): no corpus file has those placeholders.
The model whose declared output rank differs from its real one is made with onnx.helper (see MANIFEST.json).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import unirt
from unirt.errors import UnirtError
from unirt.testing.conformance import TOLERANCES, compare

CORPUS = Path(__file__).resolve().parent / "data" / "exporters"
MANIFEST = json.loads((CORPUS / "MANIFEST.json").read_text())["models"]
BACKENDS = ("onnxruntime", "openvino", "tflite", "ncnn", "mnn")
TOLERANCE = TOLERANCES["fp32"]


# ------------------------------------------------------------------------------------------------ inputs
def make_feeds(entry: dict, shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs at a run's real shapes: float inputs N(0,1) or uniform in the manifest's float_ranges,
    int inputs in its int_ranges."""
    rng = np.random.default_rng(seed)
    dtypes = {i["name"]: np.dtype(i["dtype"]) for i in entry["inputs"]}
    feeds = {}
    for name, shape in shapes.items():
        dtype = dtypes[name]
        if dtype.kind in "iu":
            lo, hi = entry.get("int_ranges", {}).get(name, (0, 10))
            feeds[name] = rng.integers(lo, hi, shape).astype(dtype)
        elif name in entry.get("float_ranges", {}):
            lo, hi = entry["float_ranges"][name]
            feeds[name] = np.asarray(rng.uniform(lo, hi, shape), dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


# ------------------------------------------------------------------------------------------------ engines by hand
def ort_run(path: Path, feeds: dict) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def litert_run(path: Path, feeds: dict) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    details = {d["name"]: d for d in interp.get_input_details()}
    for name, value in feeds.items():
        interp.resize_tensor_input(details[name]["index"], list(value.shape))
    interp.allocate_tensors()
    for name, value in feeds.items():
        interp.set_tensor(details[name]["index"], value)
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}


def openvino_run(path: Path, feeds: dict) -> dict[str, np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(feeds)
    return {out.get_any_name(): np.asarray(result[out]) for out in compiled.outputs}


def mnn_run(path: Path, feeds: dict) -> dict[str, np.ndarray]:
    import MNN.expr as F
    import MNN.nn as nn

    module = nn.load_module_from_file(
        str(path), [], [], shape_mutable=True, precision_mode=F.PrecisionMode.High, thread_num=1
    )
    info = module.get_info()
    names = list(info["inputNames"])
    types = {"float32": F.float, "int64": F.int64, "int32": F.int}
    args = [F.const(feeds[n], list(feeds[n].shape), F.NCHW, types[feeds[n].dtype.name]) for n in names]
    outs = module.forward(args)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    result = {}
    for name, var in zip(info["outputNames"], outs):
        if var.data_format == F.NC4HW4:
            var = F.convert(var, F.NCHW)
        result[name] = np.array(var.read(), copy=True)
    return result


def ncnn_run(param: Path, weights: Path, feeds: dict, outputs: list[str]) -> dict[str, np.ndarray]:
    """ncnn's Net at fp32 (its fp16/bf16 defaults off), each input a Mat of the array's own shape."""
    import ncnn

    net = ncnn.Net()
    for key in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, key, False)
    net.opt.num_threads = 1
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise RuntimeError(f"ncnn could not load {param.name}")
    ex = net.create_extractor()
    mats = {n: ncnn.Mat(np.ascontiguousarray(v, np.float32)).clone() for n, v in feeds.items()}
    for n, m in mats.items():
        if ex.input(n, m) != 0:
            raise RuntimeError(f"ncnn refused input {n}")
    result = {}
    for name in outputs:
        ret, mat = ex.extract(name)
        if ret != 0:
            raise RuntimeError(f"ncnn could not extract {name} (return code {ret})")
        result[name] = np.array(mat, copy=True)
    return result


def _pnnx_exe() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pnnx")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "pnnx").is_file():
            return Path(folder) / "pnnx"
    raise RuntimeError("the pnnx wheel's binary is not installed")


def ncnn_by_hand_from_onnx(onnx_path: Path, feeds: dict) -> dict[str, np.ndarray]:
    """pnnx at the run's shapes, then ncnn sample by sample where pnnx dropped the batch axis (as pnnx's own
    generated ncnn script does); outputs named like the ONNX outputs, in their order."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names_in = [i.name for i in model.graph.input if i.name not in inits]
    names_out = [o.name for o in model.graph.output]
    types = {"float32": "f32", "int64": "i64", "int32": "i32"}
    shape_arg = ",".join("[" + ",".join(map(str, feeds[n].shape)) + "]" + types[feeds[n].dtype.name] for n in names_in)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "m.onnx"
        src.write_bytes(onnx_path.read_bytes())
        proc = subprocess.run(
            [
                str(_pnnx_exe()),
                str(src),
                f"inputshape={shape_arg}",
                "fp16=0",
                f"ncnnparam={tmp}/m.param",
                f"ncnnbin={tmp}/m.bin",
                f"ncnnpy={tmp}/m_ncnn.py",
                f"pnnxparam={tmp}/p.param",
                f"pnnxbin={tmp}/p.bin",
                f"pnnxpy={tmp}/p.py",
                f"pnnxonnx={tmp}/p.onnx",
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0 or not Path(tmp, "m.param").is_file():
            raise RuntimeError(f"pnnx failed: {(proc.stdout + proc.stderr)[-500:]}")
        script = Path(tmp, "m_ncnn.py").read_text()
        batched = {
            m.group(1)
            for m in re.finditer(
                r'ex\.input\("(in\d+)", ncnn\.Mat\(\w+\.numpy\(\), '
                r"batch_index=0\)",
                script,
            )
        }
        blobs_in = {f"in{k}": feeds[n] for k, n in enumerate(names_in)}
        blobs_out = [f"out{k}" for k in range(len(names_out))]
        n = next(iter(blobs_in.values())).shape[0] if batched else 1
        per_sample = []
        for i in range(n):
            sample = {b: (v[i] if b in batched else v) for b, v in blobs_in.items()}
            per_sample.append(ncnn_run(Path(tmp, "m.param"), Path(tmp, "m.bin"), sample, blobs_out))
    out_batched = {m.group(1) for m in re.finditer(r"(out\d+)\.numpy\(batch_index=0\)", script)}
    result = {}
    for k, name in enumerate(names_out):
        blob = f"out{k}"
        parts = [s[blob] for s in per_sample]
        result[name] = np.stack(parts) if blob in out_batched and batched else parts[0]
    return result


def mnn_by_hand_from_onnx(onnx_path: Path, feeds: dict) -> dict[str, np.ndarray]:
    """MNN's own converter (the wheel's _tools.mnnconvert, in a child process), then MNN's Module."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "m.mnn"
        args = [
            "mnnconvert",
            "-f",
            "ONNX",
            "--modelFile",
            str(onnx_path),
            "--MNNModel",
            str(target),
            "--bizCode",
            "unirt",
        ]
        proc = subprocess.run(
            [sys.executable, "-c", f"import _tools; _tools.mnnconvert({args!r})"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0 or not target.is_file():
            raise RuntimeError(f"mnnconvert failed: {(proc.stdout + proc.stderr)[-500:]}")
        return mnn_run(target, feeds)


# ------------------------------------------------------------------------------------------------ the pairs
def model_path(entry: dict) -> Path:
    return CORPUS / entry["file"]


def reference(entry: dict, feeds: dict) -> dict[str, np.ndarray]:
    """The format's own engine by hand: the truth a backend is held to."""
    path = model_path(entry)
    fmt = entry["format"]
    if fmt == "onnx":
        return ort_run(path, feeds)
    if fmt == "tflite":
        return litert_run(path, feeds)
    if fmt == "mnn":
        return mnn_run(path, feeds)
    if fmt == "ncnn":  # as pnnx's generated script runs it: the sample without its batch axis, then put back
        axis = entry.get("batch_axis")
        mats = {n: (np.take(v, 0, axis) if axis is not None else v) for n, v in feeds.items()}
        got = ncnn_run(path, CORPUS / entry["weights"], mats, [o["name"] for o in entry["outputs"]])
        return {n: (np.expand_dims(v, axis) if axis is not None else v) for n, v in got.items()}
    raise AssertionError(fmt)


def by_hand(backend: str, entry: dict) -> Callable[[dict], dict[str, np.ndarray]] | None:
    """How `backend`'s engine runs this file by hand (None: it neither reads nor converts the format)."""
    path, fmt = model_path(entry), entry["format"]
    if fmt == "onnx":
        return {
            "onnxruntime": lambda f: ort_run(path, f),
            "openvino": lambda f: openvino_run(path, f),
            "ncnn": lambda f: ncnn_by_hand_from_onnx(path, f),
            "mnn": lambda f: mnn_by_hand_from_onnx(path, f),
        }.get(backend)
    if fmt == "tflite":
        return {"tflite": lambda f: litert_run(path, f), "openvino": lambda f: openvino_run(path, f)}.get(backend)
    if fmt == backend:
        return lambda f: reference(entry, f)
    return None


@cache
def available(backend: str) -> str | None:
    """None if `backend` is usable here, else why not."""
    for b in unirt.backends(include_missing=True):
        if b.name == backend:
            return None if b.available else (b.reason or "unavailable")
    return "not installed"


def matches(actual: dict, expected: dict) -> str | None:
    """None when unirt's outputs are the reference's (same names, shapes, dtypes, values within tolerance)."""
    if sorted(actual) != sorted(expected):
        return f"outputs {sorted(actual)}, the engine's are {sorted(expected)}"
    problems = [p for n in expected if (p := compare(actual[n], np.asarray(expected[n]), TOLERANCE, n))]
    return "; ".join(problems) or None


def judge(model: str, backend: str) -> tuple[str, str]:
    """("pass" | "refused" | "unsupported" | "wrong" | "error", detail) for one pair; see the module docstring.
    "unsupported": the backend neither reads nor converts the format, and unirt said so with a unirt error."""
    entry = MANIFEST[model]
    path = model_path(entry)
    hand = by_hand(backend, entry)
    if hand is None:  # the backend neither reads nor converts this format: a clear unirt refusal
        try:
            sess = unirt.Session(path, backend=backend)
        except UnirtError as exc:
            return "unsupported", f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            return "error", f"{type(exc).__module__}.{type(exc).__name__} (not a unirt error): {exc}"
        sess.close()
        return "wrong", f"{backend} loaded a {entry['format']} file it neither reads nor converts"

    def engine_fails(feeds: dict, exc: Exception) -> tuple[str, str]:
        """unirt gave up: fine where the engine by hand cannot run it either."""
        why = f"{type(exc).__name__}: {exc}"
        try:
            got = hand(feeds)
        except Exception as hand_exc:
            return "refused", f"{why} (by hand: {type(hand_exc).__name__}: {str(hand_exc)[:200]})"
        problem = matches(got, reference(entry, feeds))
        if problem:
            return "refused", f"{why} (by hand it answers wrongly: {problem})"
        return "error", f"unirt refused what {backend} runs by hand: {why}"

    sess = None
    try:
        for k, shapes in enumerate(entry["runs_at"]):
            feeds = make_feeds(entry, shapes, seed=k)
            try:
                if sess is None:
                    sess = unirt.Session(path, backend=backend)
                got = sess.run(feeds)
            except UnirtError as exc:
                return engine_fails(feeds, exc)
            except Exception as exc:
                return "error", f"{type(exc).__module__}.{type(exc).__name__} (not a unirt error): {exc}"
            problem = matches(got, reference(entry, feeds))
            if problem:
                return "wrong", f"at {shapes}: {problem}"
        return "pass", ""
    finally:
        if sess is not None:
            sess.close()


PAIRS = [pytest.param(m, b, id=f"{m}-{b}") for m in MANIFEST for b in BACKENDS]


def test_manifest_describes_every_file():
    """Each corpus file is in MANIFEST.json, with what the exporter wrote and the shapes it runs at."""
    listed = {e["file"] for e in MANIFEST.values()} | {e["weights"] for e in MANIFEST.values() if "weights" in e}
    on_disk = {p.name for p in CORPUS.iterdir() if p.name != "MANIFEST.json"}
    assert on_disk == listed
    for name, e in MANIFEST.items():
        assert e["exporter"] and e["exporter_version"] and e["source"] and e["runs_at"] and e["engines"], name
        assert set(e["engines"]) <= set(BACKENDS), name
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 2_000_000


def test_corpus_has_the_exporters_placeholders():
    """The dims the issue is about are in the files as the exporters wrote them."""
    dims = {m: [d for i in e.get("inputs", []) for d in (i.get("shape") or [])] for m, e in MANIFEST.items()}
    assert "batch_size" in dims["torch_legacy_mlp"]
    assert "input_dynamic_axes_1" in dims["torch_legacy_cnn"]
    pair = MANIFEST["torch_dynamo_pair"]["inputs"]
    assert pair[0]["shape"][0] == pair[1]["shape"][0] and re.fullmatch(r"s\d+", pair[0]["shape"][0])
    assert any(str(d).startswith("unk__") for d in dims["tf2onnx_keras_nhwc_cnn"])
    assert any("DynamicDimension" in str(d) for d in dims["paddle2onnx_text_rec"])
    sig = MANIFEST["keras_audio_tflite"]["inputs"][0]["shape_signature"]
    assert sig == [-1, -1]


@pytest.mark.parametrize("model,backend", PAIRS)
def test_exporter_model_on_backend(model: str, backend: str):
    why = available(backend)
    if why:
        pytest.skip(f"{backend}: {why}")
    status, detail = judge(model, backend)
    assert status in ("pass", "refused", "unsupported"), f"{model} on {backend}: {status}: {detail}"


def test_support_matrix_writes_the_corpus_section_alone(tmp_path):
    """`scripts/support_matrix.py --only exporters` rewrites its own section of an existing matrix, from real runs,
    and leaves the rest of the file as it was."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "support_matrix.py"
    out = tmp_path / "matrix.md"
    out.write_text(
        "# Support matrix\n\n## Models\n\n| set | model | onnxruntime |\n|---|---|---|\n| x | y | pass |\n\n"
        "## Exporter corpus\n\nstale\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script), "--only", "exporters", "--backends", "onnxruntime", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "| x | y | pass |" in text and "stale" not in text
    assert text.count("## Exporter corpus") == 1
    assert len([r for r in text.splitlines() if r.startswith("| torch_legacy_mlp |")]) == 1
    for name, entry in MANIFEST.items():
        row = next(r for r in text.splitlines() if r.startswith(f"| {name} |"))
        assert row.endswith("| pass |" if entry["format"] == "onnx" else "| — |"), row


OWN_ENGINE = {"onnx": "onnxruntime", "tflite": "tflite", "mnn": "mnn", "ncnn": "ncnn"}


@pytest.mark.parametrize("model", [pytest.param(m, id=m) for m in MANIFEST])
def test_run_many_matches_the_engine(model: str):
    """`run_many` over requests at the shapes the model really runs at (mixed sizes, some alike: they may be
    batched) answers as the engine by hand does, one request at a time, on the format's own engine."""
    entry = MANIFEST[model]
    backend = OWN_ENGINE[entry["format"]]
    why = available(backend)
    if why:
        pytest.skip(f"{backend}: {why}")
    requests = [make_feeds(entry, shapes, seed=k) for k, shapes in enumerate(entry["runs_at"] * 2)]
    with unirt.Session(model_path(entry), backend=backend) as sess:
        results = sess.run_many(requests)
    assert len(results) == len(requests)
    for k, (feeds, got) in enumerate(zip(requests, results)):
        problem = matches({n: np.array(v) for n, v in got.items()}, reference(entry, feeds))
        assert problem is None, f"request {k} ({ {n: v.shape for n, v in feeds.items()} }): {problem}"
