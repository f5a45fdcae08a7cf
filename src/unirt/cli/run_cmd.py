"""`unirt run MODEL`: load a model, run it on given or random inputs, print outputs and latency."""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import InputError, Session, TensorInfo
from ..backend import PRECISIONS
from ..errors import UnsupportedOptionError
from ..tools.inputs import default_shapes
from . import conversion_flags
from .tool_output import add_shapes, shapes_of


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a model once on given or random inputs and report outputs and latency")
    p.add_argument("model", help="model file (format detected from content)")
    p.add_argument("--backend", default="auto", help="backend name or 'auto' (default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N], gpu, npu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the backend")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="input from a .npy file (repeatable); or FILE.npz holding every input by name",
    )
    add_shapes(
        p,
        "; random inputs take it (default: the size the model file carries; 1 for a batch dim; any other "
        "dynamic dim must be given)",
    )
    p.add_argument(
        "--batched",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="dim 0 is a batch dim (Session(batched=True)): pad or split inputs of another batch size; "
        "--no-batched: never (default: read it from the model)",
    )
    p.add_argument("--iterations", type=int, default=10, help="timed runs after the first (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs")
    p.add_argument("--save-outputs", metavar="FILE.npz", help="write the outputs to an .npz file")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of text")
    conversion_flags.add(p)
    p.set_defaults(handler=run)


def parse_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """--shape values as {input: shape}: NAME:DIMS or NAME=DIMS, repeatable or comma-separated."""
    from ..tools.shapes import parse_shapes as parse

    return parse(specs)


def load_inputs(specs: list[str]) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.rpartition("=")
        path = Path(file if sep else spec)
        if not path.is_file():
            raise InputError(f"--input {spec!r}: no such file {path}")
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    feeds.update({k: archive[k] for k in archive.files})
            else:
                if not sep:
                    raise InputError(f"--input {spec!r}: name the input, e.g. images={path}")
                feeds[name] = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"--input {spec!r}: cannot read {path}: {exc}") from None
    return feeds


def random_shapes(
    inputs: list[TensorInfo],
    shapes: dict[str, tuple[int, ...]],
    given: dict[str, np.ndarray],
    model: Any = None,
    sources: dict[str, str] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Shapes for the random inputs: --shape as given, and each named dynamic dim (e.g. "N") the size it has in a
    --shape or a --input array that shares it, else the size the model file carries, else 1 for a batch dim
    (`unirt.tools.inputs.default_shapes`; any other dim is an InputError naming it). A given array that does not
    fit the model is left for Session.run to report."""
    known = dict(shapes)
    firsts = {i.shape[0] for i in inputs if i.rank}
    rows = {shape[0] for shape in shapes.values() if shape} | {np.shape(v)[0] for v in given.values() if np.ndim(v)}
    if len(firsts) == 1 and isinstance(next(iter(firsts)), int) and rows - firsts:
        # another row count for a dim 0 fixed alike everywhere: a static batch to pad or split (Session(batched=True),
        # --batched), or a mistake Session.run names; size the other inputs' dim 0 alike either way
        inputs = [dataclasses.replace(i, shape=("<batch>", *i.shape[1:])) if i.rank else i for i in inputs]
    for info in inputs:
        value = given.get(info.name)
        if info.name in known or value is None or np.ndim(value) != info.rank:
            continue
        if all(not isinstance(d, int) or d == s for d, s in zip(info.shape, np.shape(value))):
            known[info.name] = tuple(np.shape(value))
    resolved = default_shapes(
        [i for i in inputs if i.name not in given or i.name in known], known, model=model, sources=sources
    )
    return {i.name: resolved[i.name] for i in inputs if i.name not in given}


def random_input(info: TensorInfo, shape: tuple[int, ...] | None, rng: np.random.Generator) -> np.ndarray:
    if shape is None:
        shape = tuple(d if isinstance(d, int) else 1 for d in info.shape)
    elif len(shape) != info.rank:
        raise InputError(
            f"--shape for {info.name!r}: model expects rank {info.rank} {info.shape_str()}, got {list(shape)}"
        )
    kind = info.dtype.kind
    if kind == "f":
        return rng.standard_normal(shape).astype(info.dtype)
    if kind in "iu":
        return rng.integers(0, 2, size=shape).astype(info.dtype)
    if kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(info.dtype)
    return np.full(shape, "a", dtype=object)


def summarize(name: str, value: Any) -> dict[str, Any]:
    arr = np.asarray(value)
    row: dict[str, Any] = {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype)}
    if arr.size and arr.dtype.kind in "biuf":
        data = arr.astype(np.float64)
        finite = data[np.isfinite(data)]
        row.update(
            min=float(data.min()),
            max=float(data.max()),
            mean=float(data.mean()),
            std=float(data.std()),
            nonfinite=int(data.size - finite.size),
        )
    return row


def run(args: argparse.Namespace) -> int:
    if args.iterations < 0:
        raise UnsupportedOptionError("--iterations must be >= 0")
    shapes = shapes_of(args)
    given = load_inputs(args.input)
    t0 = time.perf_counter()
    # the shapes of the inputs given or asked for are the ones a converting backend converts at
    convert_at = {**shapes, **{k: tuple(np.shape(v)) for k, v in given.items()}}
    with Session(
        args.model,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        precision=args.precision,
        batched=args.batched,
        input_shapes=convert_at or None,
        backend_options=conversion_flags.backend_options(args),
    ) as sess:
        load_ms = (time.perf_counter() - t0) * 1e3
        unknown = set(shapes) - {i.name for i in sess.inputs}
        if unknown:
            raise InputError(
                f"--shape for unknown input(s) {', '.join(sorted(unknown))}; inputs: "
                f"{', '.join(i.name for i in sess.inputs)}"
            )
        rng = np.random.default_rng(args.seed)
        carried: dict[str, str] = {}
        sizes = random_shapes(sess.inputs, shapes, given, args.model, carried)
        feeds = {i.name: given[i.name] if i.name in given else random_input(i, sizes[i.name], rng) for i in sess.inputs}
        feeds.update({k: v for k, v in given.items() if k not in feeds})  # extra names: let run() report them
        t0 = time.perf_counter()
        outputs = sess.run(feeds)
        first_ms = (time.perf_counter() - t0) * 1e3
        times = []
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            sess.run(feeds)
            times.append((time.perf_counter() - t0) * 1e3)
        report = {
            "model": str(args.model),
            "format": _format_of(sess, args.model),
            "backend": sess.backend,
            "device": sess.device,
            "precision": sess.precision,
            "why": sess.selection.chosen.reason if sess.selection and sess.selection.chosen else "asked for",
            "inputs": [
                {
                    "name": k,
                    "shape": list(np.shape(v)),
                    "dtype": str(np.asarray(v).dtype),
                    "source": "file" if k in given else f"random, sized by {carried[k]}" if k in carried else "random",
                }
                for k, v in feeds.items()
            ],
            "outputs": [summarize(k, v) for k, v in outputs.items()],
            "latency_ms": {
                "load": load_ms,
                "first": first_ms,
                "iterations": len(times),
                **(
                    {
                        "median": statistics.median(times),
                        "mean": statistics.fmean(times),
                        "min": min(times),
                        "max": max(times),
                    }
                    if times
                    else {}
                ),
            },
        }
        if sess.verification is not None:  # a backend reading a format it does not own: checked on the first run
            report["frontend"] = sess.verification.as_dict() | {"summary": str(sess.verification)}
    if args.save_outputs:
        np.savez(args.save_outputs, **{k: np.asarray(v) for k, v in outputs.items()})
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def _format_of(sess: Any, path: str) -> str:
    """The model file's format, and what the backend converted it to (a Session holds the converted model)."""
    conv = sess.conversion
    if conv is None:
        return sess.model.format.value
    from ..formats import open_model

    source = open_model(path).format.value
    # a conversion made at the first run's shapes leaves sess.model the source: the converted file says the format
    return f"{source}, converted to {open_model(conv.path).format.value}{' (cached)' if conv.cached else ''}"


def print_report(r: dict[str, Any]) -> None:
    print(f"model:    {r['model']} ({r['format']})")
    print(f"backend:  {r['backend']} on {r['device']}, precision {r['precision']} ({r['why']})")
    for i in r["inputs"]:
        print(f"input:    {i['name']}  {i['dtype']}{i['shape']}  ({i['source']})")
    for o in r["outputs"]:
        stats = (
            f"  min {o['min']:.6g}  max {o['max']:.6g}  mean {o['mean']:.6g}  std {o['std']:.6g}" if "min" in o else ""
        )
        if o.get("nonfinite"):
            stats += f"  non-finite {o['nonfinite']}"
        print(f"output:   {o['name']}  {o['dtype']}{o['shape']}{stats}")
    if "frontend" in r:
        print(f"frontend: {r['frontend']['summary']}")
    lat = r["latency_ms"]
    line = f"latency:  load {lat['load']:.2f} ms, first run {lat['first']:.3f} ms"
    if lat["iterations"]:
        line += (
            f", then median {lat['median']:.3f} ms (min {lat['min']:.3f}, mean {lat['mean']:.3f}) over "
            f"{lat['iterations']} runs"
        )
    print(line)
