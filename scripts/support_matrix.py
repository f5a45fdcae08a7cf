"""Generate the support matrix (model x backend: pass, or the failure and its reason) from real runs.

    python scripts/support_matrix.py [--output docs/support-matrix.md] [--backends onnxruntime,openvino,...]
                                   [--only built,wheel,random,exporters] [--cache-dir DIR]
                                   [--precision-axis [--precisions bf16,fp16,int8] [--precision-models a,b]]
    python scripts/support_matrix.py --only precision    # only the reduced-precision section, in place
    python scripts/support_matrix.py --only exporters    # only the exporter corpus' section, in place

The exporter corpus (tests/data/exporters/, models made by torch.onnx, tf2onnx, paddle2onnx, the TFLite converter
and MNN's and ncnn's converters) is its own section, judged as tests/test_exporter_corpus.py judges it (unirt
against the engine called by hand). `--only exporters` rewrites that section alone in an existing matrix.

Every cell comes from `unirt.testing.conformance` (the same checks as the conformance suite, against ONNX Runtime
or the onnx wheel's stored outputs, at fp32 with 1 thread) on this machine's installed backends. A backend that
converts ONNX on load (ncnn, MNN) converts every model, verified, into a conversion cache: a temporary one unless
--cache-dir names one. Nothing in the output is typed by hand: re-run it after changing a plugin or upgrading an
engine.

--precision-axis adds a section per (backend, reduced precision) on real-size models (`unirt.testing.realsize`:
CNN classifiers, a detector, a small transformer): speed against that backend's fp32 and error against its fp32
answers, or the refusal with its reason; int8 rows run `unirt quantize`'s static Q/DQ model. `--only precision`
rewrites that section alone in an existing matrix.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import unirt
from unirt.cli.backends_cmd import formats_cell
from unirt.testing.conformance import (
    BUILT_MODELS,
    TOLERANCES,
    Outcome,
    check_built,
    check_case,
    random_cases,
    wheel_cases,
)

_PATH = re.compile(r"/[^\s:]*/[^\s:]+: ")
_CONVERTER_FAILED = re.compile(r"\b\w+: converting failed: ConversionError: ")
STATUS = {"pass": "pass", "refused": "refused", "wrong": "WRONG", "error": "error", "unsupported": "—"}


def cell(outcome: Outcome, width: int = 90) -> str:
    if outcome.status in ("pass", "unsupported"):
        return STATUS[outcome.status]
    detail = " ".join(outcome.detail.split()).replace("|", "\\|")
    # drop the file paths unirt puts in errors (the model's; a conversion's work folder): the row names the model
    detail = _PATH.sub("", detail)
    detail = _CONVERTER_FAILED.sub("", detail)  # "ConversionError: ncnn: converting failed: ConversionError: ..."
    if len(detail) > width:
        detail = detail[: width - 1] + "…"
    return f"{STATUS[outcome.status]}: {detail}" if detail else STATUS[outcome.status]


def guarded(check: Callable[..., Outcome], *args: Any) -> Outcome:
    """One cell: an exception that is not a refusal or a unirt run error (a bug in a plugin or in unirt) is an
    "error" cell naming it, instead of the end of the whole run."""
    try:
        return check(*args)
    except Exception as exc:
        return Outcome("error", f"{type(exc).__module__}.{type(exc).__name__} (not a unirt error): {exc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path("docs/support-matrix.md"))
    ap.add_argument("--backends", help="comma-separated (default: every installed backend)")
    ap.add_argument(
        "--only",
        default="built,wheel,random,exporters",
        help="which model sets: built, wheel, random, exporters (alone: rewrites only its section); "
        "precision alone: rewrites only the reduced-precision section",
    )
    ap.add_argument(
        "--cache-dir",
        type=Path,
        help="conversion cache for converting backends (default: a temporary one, removed at the end)",
    )
    ap.add_argument(
        "--precision-axis",
        action="store_true",
        help="add the reduced-precision section (real-size models; minutes per backend)",
    )
    ap.add_argument("--precisions", default="bf16,fp16,int8", help="reduced precisions for --precision-axis")
    ap.add_argument(
        "--precision-models",
        default=None,
        help="models for --precision-axis (default: every unirt.testing.realsize model)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="unirt_matrix_cache_") as cache:
        os.environ["UNIRT_CACHE_DIR"] = str(args.cache_dir or cache)  # conversions run in children: they inherit it
        return write_matrix(args)


EXPORTERS_HEADING = "## Exporter corpus"
PRECISION_HEADING = "## Reduced precision"


def _corpus_module() -> Any:
    """tests/test_exporter_corpus.py: the corpus' judge (unirt vs the engine by hand), shared with its tests."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tests" / "test_exporter_corpus.py"
    spec = importlib.util.spec_from_file_location("_exporter_corpus", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def exporter_section(usable: list[str]) -> list[str]:
    """The exporter corpus' section: every (model, backend) pair, judged against the engine called by hand."""
    corpus = _corpus_module()
    backends = [b for b in corpus.BACKENDS if b in usable]
    out = [
        EXPORTERS_HEADING,
        "",
        "Tiny models made by real exporters (`tests/data/exporters/`, made by `scripts/make_exporter_corpus.py`; "
        "MANIFEST.json there says what each exporter wrote). Each cell: `unirt.Session(model, backend=b)` run "
        "at every shape the model really runs at, compared at fp32 with the engine called by hand (ONNX Runtime "
        "for ONNX files, and for ncnn/MNN/OpenVINO on them; LiteRT for .tflite; MNN/ncnn on their own files). "
        "`pass`; `refused`: a unirt error where the engine by hand cannot run it either (its reason in "
        "brackets); `—`: a backend that neither reads nor converts the format (unirt refuses it); `WRONG`: an "
        "answer off the "
        "engine's; `error`: unirt refused what the engine runs by hand, or raised something that is not a unirt "
        "error.",
        "",
        "| model | exporter | " + " | ".join(backends) + " |",
        "|---|---|" + "---|" * len(backends),
    ]
    for name, entry in corpus.MANIFEST.items():
        cells = []
        for b in backends:
            try:
                status, detail = corpus.judge(name, b)
            except Exception as exc:  # a bug in the judge or a crash below it: say so, go on
                status, detail = "error", f"{type(exc).__name__}: {exc}"
            cells.append(cell(Outcome(status, detail)))
            print(f"{name} {b}: {status} {detail[:300]}", file=sys.stderr)
        exporter = f"{entry['exporter'].split(' (')[0]} ({entry['exporter_version']})".replace("|", "\\|")
        out.append(f"| {name} | {exporter} | " + " | ".join(cells) + " |")
    return out


def write_exporters_only(args: argparse.Namespace, usable: list[str]) -> int:
    """Replace (or append) the exporter corpus' section of an existing matrix, leaving the rest as it is."""
    return replace_section(args.output, EXPORTERS_HEADING, exporter_section(usable))


def replace_section(output: Path, heading: str, section: list[str]) -> int:
    """Replace (or append) the section under `heading` (its first line) of an existing matrix."""
    text = output.read_text() if output.is_file() else "# Support matrix\n"
    lines = text.rstrip("\n").split("\n")
    if heading in lines:
        start = lines.index(heading)
        end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
        lines[start:end] = section + ([""] if end < len(lines) else [])
    else:
        lines += [""] + section
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    rows = sum(1 for line in section if line.startswith("| ")) - 1
    print(f"wrote the {heading[3:]!r} section of {output} ({rows} rows)")
    return 0


def write_matrix(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    infos = unirt.backends(include_missing=True)
    wanted = args.backends.split(",") if args.backends else [b.name for b in infos if b.installed]
    info = {b.name: b for b in infos}
    usable = [n for n in wanted if n in info and info[n].available]
    sets = set(args.only.split(","))
    if sets == {"exporters"}:
        return write_exporters_only(args, usable)
    if sets == {"precision"}:
        return replace_section(args.output, PRECISION_HEADING, precision_section(usable, args)[1:])

    rows: list[tuple[str, str, dict[str, Outcome]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "built" in sets:
            for name in BUILT_MODELS:
                rows.append(
                    ("unirt.testing.models", name, {b: guarded(check_built, b, name, Path(tmp)) for b in usable})
                )
        for label, loader in (("onnx wheel", wheel_cases), ("random weights", random_cases)):
            key = "wheel" if label == "onnx wheel" else "random"
            if key in sets:
                for case in loader():
                    rows.append(
                        (label, case.name, {b: guarded(check_case, b, case, "fp32", {"threads": 1}) for b in usable})
                    )
                    print(
                        f"{case.name}: " + ", ".join(f"{b}={o.status}" for b, o in rows[-1][2].items()), file=sys.stderr
                    )

    out: list[str] = [
        "# Support matrix",
        "",
        f"Generated by `scripts/support_matrix.py` on {datetime.date.today().isoformat()} "
        f"(unirt {unirt.__version__}; {unirt.hardware().describe()}). Do not edit by hand.",
        "",
        "Each cell: the model run through `unirt.Session` at fp32 with 1 thread, compared with the onnx "
        "wheel's stored outputs or with ONNX Runtime (random-weight copies, built models; the TFLite "
        "backend runs each built model's TFLite twin). Tolerance at fp32: relative L2 error "
        f"<= {TOLERANCES['fp32'].rel_l2:g} and max abs error <= {TOLERANCES['fp32'].max_rel:g} x max "
        "|reference|; integer and bool outputs exact. A backend that converts ONNX on load (formats "
        '"onnx (converted)") converts each model with its own converter, verified against ONNX '
        "Runtime (or another installed ONNX reader where it cannot load the model). `refused` is a "
        "clear unirt error at load (the engine's or converter's own reason, or the measured error of a "
        "conversion its verification rejected); `WRONG` is an answer outside the tolerance; `error` is "
        "a unirt error while running, or any other exception (named); `—` is a format the backend "
        "neither reads nor converts.",
        "",
        "## Backends",
        "",
        "| backend | engine | formats | status | pass | refused | WRONG | error | not read |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in wanted:
        b = info.get(name)
        if b is None:
            continue
        counts = {s: sum(1 for _, _, r in rows if name in r and r[name].status == s) for s in STATUS}
        status = "available" if b.available else f"unavailable: {b.reason}"
        out.append(
            f"| {name} | {b.engine_version or '—'} | {formats_cell(b)} | {status} | {counts['pass']} | "
            f"{counts['refused']} | {counts['wrong']} | {counts['error']} | {counts['unsupported']} |"
        )
    out += ["", "## Models", "", "| set | model | " + " | ".join(usable) + " |", "|---|---|" + "---|" * len(usable)]
    for label, model, results in rows:
        out.append(f"| {label} | {model} | " + " | ".join(cell(results[b]) for b in usable) + " |")
    if "exporters" in sets:
        out += [""] + exporter_section(usable)
    if getattr(args, "precision_axis", False):
        out += precision_section(usable, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(out) + "\n")
    print(f"wrote {args.output} ({len(rows)} models x {len(usable)} backends)")
    return 0


def precision_section(backends: list[str], args: argparse.Namespace) -> list[str]:
    """The precision axis: per model, backend and reduced precision, the time against that backend's fp32 (2
    threads, interleaved rounds) and the error against its fp32 answers; or unirt's refusal and its reason."""
    from unirt.testing.realsize import REALSIZE_MODELS, build_realsize, measure_precisions

    models = args.precision_models.split(",") if args.precision_models else list(REALSIZE_MODELS)
    precisions = [p for p in args.precisions.split(",") if p and p != "fp32"]
    from unirt.precision import cpu_arithmetic

    cpu = "; ".join(f"{p}: {cpu_arithmetic(p)[1]}" for p in ("bf16", "fp16"))
    out = [
        "",
        PRECISION_HEADING,
        "",
        f"Generated by `scripts/support_matrix.py --only precision` on {datetime.date.today().isoformat()} "
        f"({unirt.hardware().describe()}; {cpu}). "
        "Each reduced precision against the same backend's fp32 on real-size models with random weights "
        "(`unirt.testing.realsize`: CNN classifiers, a detector, a small transformer; `measure_precisions`: 2 "
        "threads, 7 interleaved rounds, the median round and the best round; error over 4 random inputs). int8 "
        "rows run `unirt quantize`'s static Q/DQ model of the same network (calibrated on 8 other random "
        "inputs), at precision='int8'. `Session.precision` is what the backend says it computes; "
        "`storage-only (opt-in)` is a mode unirt refuses unless backend_options={'allow_storage_only_precision': "
        "True}, measured with it. A shared machine makes times noisy: the ratios are what count.",
        "",
        "| model | backend | precision | Session.precision | time vs fp32 (median / best) | max abs vs fp32 | "
        "rel-L2 vs fp32 | top-1 agreement | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            model = build_realsize(name, tmp)
            for backend in backends:
                try:
                    rows = measure_precisions(model, backend, precisions)
                except Exception as exc:  # a bug, not a refusal: one cell, not the end of the run
                    rows = [{"precision": "fp32", "note": f"error: {type(exc).__name__}: {exc}"}]
                for r in rows:
                    if r["precision"] == "fp32" and not r.get("note"):
                        continue  # the baseline itself
                    note = _PATH.sub("", " ".join(str(r.get("note", "")).split())).replace("|", "\\|")
                    note = _CONVERTER_FAILED.sub("", note)
                    ratio = f"{r['ratio']:.2f} / {r['best']:.2f}" if "ratio" in r else ""
                    err = f"{r['max_abs']:.3g} | {r['rel_l2']:.2g}" if "max_abs" in r else " | "
                    top = f"{r['top1']:.2f}" if r.get("top1") is not None else ""
                    out.append(
                        f"| {name} | {backend} | {r['precision']} | {r.get('in_force', '')} | {ratio} | {err} | "
                        f"{top} | {note[:300]} |"
                    )
                print(f"precision axis: {name} {backend} done", file=sys.stderr)
    return out


if __name__ == "__main__":
    sys.exit(main())
