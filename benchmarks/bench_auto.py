"""How close `backend="auto"` and `backend="fastest"` come to the fastest backend, per model.

For each model: every eligible backend's latency (median of blocks of runs interleaved across the backends,
fp32, the same threads for all), what `auto` picks from the hardware table (no measurement stored), what
`fastest` picks (timing every backend; its load time is the cost of that first measurement, conversions cached
by then), what `auto` picks once that measurement is stored, and `pick ÷ best` for each, as a table. `fastest`
measures halfway through the reference passes (their sessions stay loaded, idle), so that both see the same
stretch of a shared machine's load.

    python benchmarks/bench_auto.py                       # every model below, threads=2
    python benchmarks/bench_auto.py --models det320,rec48x320 --rounds 5 --threads 2

Models: random-weight copies of the onnx wheel's light resnet50, squeezenet, inception_v1 (`unirt.testing`), and
CNNs built here with onnx.helper: a classifier (1x3x224x224), a 320x320 detector-like net, a text recognizer-like
net ([1,3,48,320]), and a transformer/MLP-like byte classifier. Targets (issue 16): auto ÷ best <= 1.10 once
measured, fastest ÷ best <= 1.05. On a shared machine the ratios within one run are what count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import unirt
from unirt import fastest
from unirt.testing.models import _onnx, _save, byte_transformer


def _conv(n, h, nh, rng, inits, x, cin, cout, k=3, stride=1, group=1, act=True, name=""):
    w = (rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))).astype(np.float32)
    b = (0.01 * rng.standard_normal(cout)).astype(np.float32)
    inits += [nh.from_array(w, f"{name}_w"), nh.from_array(b, f"{name}_b")]
    p = k // 2
    nodes = [
        h.make_node(
            "Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"], pads=[p] * 4, strides=[stride] * 2, group=group
        )
    ]
    if act:
        nodes.append(h.make_node("Relu", [f"{name}_c"], [f"{name}_y"]))
        return nodes, f"{name}_y"
    return nodes, f"{name}_c"


def _backbone(h, nh, rng, inits, x, stages):
    """Stages of (cout, stride, depthwise-separable?) conv blocks."""
    nodes, cin = [], 3
    for i, (cout, stride, dw) in enumerate(stages):
        if dw:
            a, x = _conv(None, h, nh, rng, inits, x, cin, cin, 3, stride, group=cin, name=f"s{i}dw")
            b, x = _conv(None, h, nh, rng, inits, x, cin, cout, 1, 1, name=f"s{i}pw")
            nodes += a + b
        else:
            a, x = _conv(None, h, nh, rng, inits, x, cin, cout, 3, stride, name=f"s{i}")
            nodes += a
        cin = cout
    return nodes, x, cin


def classifier(path: Path, seed: int = 0) -> Path:
    onnx, T, h, nh = _onnx()
    rng, inits = np.random.default_rng(seed), []
    stages = [
        (32, 2, False),
        (64, 1, True),
        (128, 2, True),
        (128, 1, True),
        (256, 2, True),
        (256, 1, True),
        (512, 2, True),
        (512, 1, True),
        (1024, 2, True),
    ]
    nodes, x, c = _backbone(h, nh, rng, inits, "x", stages)
    inits += [
        nh.from_array((rng.standard_normal((c, 1000)) / np.sqrt(c)).astype(np.float32), "fc_w"),
        nh.from_array(np.zeros(1000, np.float32), "fc_b"),
    ]
    nodes += [
        h.make_node("GlobalAveragePool", [x], ["gap"]),
        h.make_node("Flatten", ["gap"], ["flat"]),
        h.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
    ]
    g = h.make_graph(
        nodes,
        "classifier",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 224, 224])],
        [h.make_tensor_value_info("logits", T.FLOAT, [1, 1000])],
        inits,
    )
    return _save(h.make_model(g), path)


def detector(path: Path, seed: int = 0) -> Path:
    onnx, T, h, nh = _onnx()
    rng, inits = np.random.default_rng(seed), []
    stages = [
        (16, 2, False),
        (32, 2, False),
        (32, 1, True),
        (64, 2, True),
        (64, 1, True),
        (128, 2, True),
        (128, 1, True),
        (256, 2, True),
    ]
    nodes, x, c = _backbone(h, nh, rng, inits, "images", stages)
    a, box = _conv(None, h, nh, rng, inits, x, c, 4 * 3, 1, act=False, name="box")
    b, cls = _conv(None, h, nh, rng, inits, x, c, 80 * 3, 1, act=False, name="cls")
    nodes += a + b + [h.make_node("Sigmoid", [cls], ["scores"]), h.make_node("Identity", [box], ["boxes"])]
    g = h.make_graph(
        nodes,
        "detector",
        [h.make_tensor_value_info("images", T.FLOAT, [1, 3, 320, 320])],
        [
            h.make_tensor_value_info("boxes", T.FLOAT, [1, 12, 10, 10]),
            h.make_tensor_value_info("scores", T.FLOAT, [1, 240, 10, 10]),
        ],
        inits,
    )
    return _save(h.make_model(g), path)


def recognizer(path: Path, seed: int = 0, classes: int = 97) -> Path:
    """[1,3,48,320] -> conv stages to [1,C,1,80] -> sequence [1,80,C] -> MatMul -> Softmax (a CTC head)."""
    onnx, T, h, nh = _onnx()
    rng, inits = np.random.default_rng(seed), []
    stages = [(32, 2, False), (64, 1, True), (64, 2, True), (128, 1, True), (128, 1, True), (256, 1, True)]
    nodes, x, c = _backbone(h, nh, rng, inits, "x", stages)  # -> [1,256,12,80]
    inits += [
        nh.from_array((rng.standard_normal((c, classes)) / np.sqrt(c)).astype(np.float32), "head_w"),
        nh.from_array(np.zeros(classes, np.float32), "head_b"),
    ]
    nodes += [
        h.make_node("MaxPool", [x], ["pool"], kernel_shape=[12, 1], strides=[12, 1]),  # [1,256,1,80]
        h.make_node("Squeeze", ["pool", "sq_axes"], ["seq0"]),  # [1,256,80]
        h.make_node("Transpose", ["seq0"], ["seq"], perm=[0, 2, 1]),  # [1,80,256]
        h.make_node("MatMul", ["seq", "head_w"], ["m"]),
        h.make_node("Add", ["m", "head_b"], ["a"]),
        h.make_node("Softmax", ["a"], ["probs"], axis=-1),
    ]
    inits.append(nh.from_array(np.array([2], np.int64), "sq_axes"))
    g = h.make_graph(
        nodes,
        "recognizer",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 48, 320])],
        [h.make_tensor_value_info("probs", T.FLOAT, [1, 80, classes])],
        inits,
    )
    return _save(h.make_model(g), path)


def transformer(path: Path) -> Path:
    return byte_transformer(path, seq=256, dim=128, heads=4, classes=16)


def _light(name: str):
    def build(path: Path) -> Path:
        from unirt.testing.cases import _data_root
        from unirt.testing.random_weights import random_weight_copy

        random_weight_copy(_data_root() / "light" / f"light_{name}.onnx", path)
        return path

    return build


MODELS = {
    "resnet50": _light("resnet50"),
    "squeezenet": _light("squeezenet"),
    "inception_v1": _light("inception_v1"),
    "classifier224": classifier,
    "det320": detector,
    "rec48x320": recognizer,
    "transformer": transformer,
}


def _time_backends(
    path: Path, names: list[str], threads: int, rounds: int, runs: int, gap: float, midway=None
) -> dict[str, float | str]:
    """Each backend's median latency over `rounds` passes of `runs` runs; `midway()` is called halfway through the
    passes (the sessions stay loaded), so that what it measures falls in the same stretch of the machine's load."""
    sessions, feeds, out = {}, {}, {}
    for name in names:
        try:
            s = unirt.Session(path, backend=name, threads=threads)
            f = fastest.sample_inputs(s.inputs)
            for _ in range(3):
                s.run(f)
            sessions[name], feeds[name] = s, f
        except Exception as exc:  # a backend that cannot run it is reported, not timed
            out[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
    # Blocks of runs per backend, the order reversed every pass, with a pause before each block: engines whose
    # threads spin-wait after a run (ncnn's OpenMP spins ~200 ms) would otherwise slow whichever backend runs
    # next in this process, which no user of one Session sees. On a shared machine, the passes spread the load
    # that comes and goes over every backend alike.
    samples: dict[str, list[float]] = {n: [] for n in sessions}
    for r in range(rounds):
        if r == rounds // 2 and midway is not None:
            midway()
        for name in list(sessions) if r % 2 == 0 else list(reversed(sessions)):
            s, f = sessions[name], feeds[name]
            time.sleep(gap)
            s.run(f)  # untimed: the first run after the pause
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(f)
                samples[name].append(time.perf_counter() - t0)
    for name, s in sessions.items():
        out[name] = statistics.median(samples[name]) * 1e3
        s.close()
    return out


def bench_model(label: str, path: Path, threads: int, rounds: int, runs: int, gap: float) -> dict:
    fastest.clear_cache()
    table = unirt.explain(path, threads=threads)
    eligible = [c.backend for c in table.candidates if c.eligible]
    picked = {}

    def choose() -> None:  # backend="fastest" measures halfway through the reference's passes
        time.sleep(gap)
        t0 = time.perf_counter()
        sess = unirt.Session(path, backend="fastest", threads=threads)
        picked["s"] = time.perf_counter() - t0
        picked["backend"] = sess.backend
        picked["timings"] = sess.selection.timings
        sess.close()

    times = _time_backends(path, eligible, threads, rounds, runs, gap, midway=choose)
    if "backend" not in picked:  # no backend could be timed by the reference: measure anyway
        choose()
    measured = unirt.explain(path, threads=threads)
    assert measured.measurement is not None, "the measurement fastest stored was not found"
    return {
        "model": label,
        "times": times,
        "auto_table": table.chosen.backend,
        "fastest": picked["backend"],
        "fastest_s": picked["s"],
        "fastest_timings": picked["timings"],
        "auto_measured": measured.chosen.backend,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="passes over the backends (x --runs)")
    ap.add_argument("--runs", type=int, default=8, help="timed runs per backend per pass; the median of all is kept")
    ap.add_argument("--gap", type=float, default=0.3, help="seconds of pause before each backend's block of runs")
    args = ap.parse_args(argv)
    os.environ.setdefault("UNIRT_CACHE_DIR", tempfile.mkdtemp(prefix="bench-auto-"))
    directory = Path(tempfile.mkdtemp(prefix="bench-auto-models-"))
    backends = ["onnxruntime", "openvino", "ncnn", "mnn"]
    rows = []
    print(
        f"hardware: {unirt.hardware().describe()}; threads={args.threads}, fp32, {args.rounds} rounds x "
        f"{args.runs} runs",
        flush=True,
    )
    for label in args.models.split(","):
        path = MODELS[label](directory / f"{label}.onnx")
        row = bench_model(label, path, args.threads, args.rounds, args.runs, args.gap)
        rows.append(row)
        print(
            f"  {label}: "
            + ", ".join(
                f"{k} {v:.2f} ms" if isinstance(v, float) else f"{k} failed ({v})" for k, v in row["times"].items()
            )
            + "; backend='fastest' measured: "
            + ", ".join(
                f"{t.backend} {t.median_ms:.2f} ms" + (" (dropped)" if getattr(t, "dropped", None) else "")
                for t in row["fastest_timings"]
                if t.median_ms is not None
            ),
            flush=True,
        )
    head = (
        ["model"]
        + [f"{b} ms" for b in backends]
        + [
            "best",
            "auto (table)",
            "auto÷best",
            "fastest",
            "fastest÷best",
            "fastest load s",
            "auto (measured)",
            "auto÷best",
        ]
    )
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    worst = {"table": 1.0, "fastest": 1.0, "measured": 1.0}
    for row in rows:
        t = row["times"]
        ok = {k: v for k, v in t.items() if isinstance(v, float)}
        best = min(ok, key=ok.get)

        def ratio(name, kind):
            value = ok[name] / ok[best] if name in ok else float("nan")
            worst[kind] = max(worst[kind], value)
            return f"{value:.2f}"

        cells = [row["model"]] + [
            f"{t[b]:.2f}" if isinstance(t.get(b), float) else ("fail" if b in t else "—") for b in backends
        ]
        cells += [
            best,
            row["auto_table"],
            ratio(row["auto_table"], "table"),
            row["fastest"],
            ratio(row["fastest"], "fastest"),
            f"{row['fastest_s']:.1f}",
            row["auto_measured"],
            ratio(row["auto_measured"], "measured"),
        ]
        print("| " + " | ".join(cells) + " |")
    print(
        f"\nworst auto÷best: table order {worst['table']:.2f}, measured {worst['measured']:.2f} (target <= 1.10); "
        f"worst fastest÷best {worst['fastest']:.2f} (target <= 1.05)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
