"""unirt.tools.bench on two real backends; its JSON against the schema shipped with unirt."""

from __future__ import annotations

import json

import jsonschema
import pytest

from unirt import BackendUnavailableError, InputError, UnsupportedOptionError
from unirt.cli import main
from unirt.tools import bench
from unirt.tools.bench import BENCH_SCHEMA


@pytest.fixture(scope="module")
def schema():
    data = json.loads(BENCH_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(data)
    return data


def test_bench_two_backends_batches_and_concurrency(test_plugins, model, schema):
    report = bench(
        model("dynamic_mlp"), ["onnxruntime", "reference"], batch=[1, 4], concurrency=[1, 2], iterations=5, warmup=1
    )
    assert not report.failed
    assert [(r.backend, r.batch, r.concurrency) for r in report.results] == [
        (b, n, c) for b in ("onnxruntime", "reference") for n in (1, 4) for c in (1, 2)
    ]
    for r in report.results:
        assert r.shapes == {"x": [r.batch, 8]}
        assert r.iterations == 5 * r.concurrency and len(r.samples_ms) == r.iterations
        lat = r.latency_ms
        assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max and lat.min <= lat.mean <= lat.max
        assert r.throughput_sps == pytest.approx(r.throughput_ips * r.batch)
        assert r.load_ms > 0 and r.first_run_ms > 0 and r.peak_rss_mb > 0
        assert r.gpu_memory_mb is None and r.device == "cpu"
    jsonschema.validate(report.to_dict(), schema)


def test_duration_mode_and_failing_backend_in_json(test_plugins, model, schema, tmp_path):
    report = bench(model("matmul_relu"), ["onnxruntime", "reference"], duration=0.05, warmup=0)
    assert all(r.iterations >= 1 and r.duration_s >= 0.05 for r in report.results)
    path = report.write_json(tmp_path / "bench.json")
    data = json.loads(path.read_text())
    jsonschema.validate(data, schema)
    assert data["settings"]["iterations"] is None and data["settings"]["duration_s"] == 0.05
    assert "samples_ms" not in data["results"][0]


def test_a_failing_backend_is_reported_and_the_others_go_on(test_plugins, model, schema):
    # onnxruntime has no bf16 mode on a CPU: a refused (backend, precision) row; the others go on. (int8 used to be
    # the failing case; bench now runs int8 rows on the model quantized by unirt quantize.)
    report = bench(model("dynamic_mlp"), ["onnxruntime", "reference"], iterations=3, warmup=0, precision="bf16")
    by = {(r.backend, r.precision_asked): r for r in report.results}
    refused = by["onnxruntime", "bf16"]
    assert report.refused == [refused] and not report.failed and "bf16" in refused.error
    assert by["onnxruntime", "fp32"].error is None  # the baseline is measured too
    assert by["reference", "bf16"].error is None and by["reference", "bf16"].iterations == 3
    jsonschema.validate(report.to_dict(), schema)


def test_all_takes_backends_that_convert_on_load_and_records_the_conversion(model, schema, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))  # first load converts, the next one hits
    path = model("dynamic_mlp")
    report = bench(path, iterations=2, warmup=0)  # backends "all"
    by = {r.backend: r for r in report.results}
    assert not report.failed and {"onnxruntime", "ncnn", "mnn"} <= set(by)
    for name in ("ncnn", "mnn"):
        assert by[name].conversion_cached is False and 0 < by[name].conversion_ms <= by[name].load_ms
    assert by["onnxruntime"].conversion_ms is None and by["onnxruntime"].conversion_cached is None
    jsonschema.validate(report.to_dict(), schema)
    again = bench(path, ["ncnn"], iterations=2, warmup=0)
    (row,) = again.results
    assert row.conversion_cached is True and row.conversion_ms == pytest.approx(by["ncnn"].conversion_ms)
    data = again.to_dict()["results"][0]
    assert data["conversion_cached"] is True and data["conversion_ms"] > 0


def test_cli_table_shows_conversion(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["bench", str(model("dynamic_mlp")), "--backends", "mnn,onnxruntime", "--iterations", "1", "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "convert ms" in first and "load ms includes convert ms unless cached" in first
    mnn = next(line.split() for line in first.splitlines() if line.startswith("mnn "))
    ort = next(line.split() for line in first.splitlines() if line.startswith("onnxruntime "))
    assert float(mnn[5]) > 0 and ort[5] == "-"  # columns: backend device batch workers load convert ...
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert next(line.split() for line in second.splitlines() if line.startswith("mnn "))[5] == "cached"


def test_bad_settings_raise(test_plugins, model):
    path = model("dynamic_mlp")
    with pytest.raises(BackendUnavailableError, match="'nosuch' is not installed"):
        bench(path, ["nosuch"], iterations=1)
    with pytest.raises(UnsupportedOptionError, match="either iterations or duration"):
        bench(path, ["reference"], iterations=1, duration=1)
    with pytest.raises(UnsupportedOptionError, match="concurrency"):
        bench(path, ["reference"], iterations=1, concurrency=[0])
    with pytest.raises(UnsupportedOptionError, match="threads must be a positive integer or None .* got -2"):
        bench(path, ["onnxruntime", "reference"], iterations=1, threads=-2)
    with pytest.raises(UnsupportedOptionError, match="precision must be one of .* got 'fp64'"):
        bench(path, ["onnxruntime"], iterations=1, precision="fp64")
    with pytest.raises(InputError, match="contradicts the model at dim 1"):
        bench(path, ["reference"], iterations=1, shapes="x:1x9")
    with pytest.raises(InputError, match="batch 2 contradicts input 'x'"):
        bench(model("matmul_relu"), ["reference"], iterations=1, batch=[2])


def test_cli_table_json_and_plot(test_plugins, model, schema, tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(
        [
            "bench",
            str(model("dynamic_mlp")),
            "--backends",
            "onnxruntime,reference",
            "--batch",
            "1,2",
            "--concurrency",
            "1,2",
            "--iterations",
            "3",
            "--warmup",
            "1",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "p99" in captured.out and "samples/s" in captured.out and "reference" in captured.out
    assert "bench: [" in captured.err  # plain progress lines when stderr is not a terminal
    jsonschema.validate(json.loads(out_json.read_text()), schema)
    png = out_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize(
    "argv,message",
    [
        (["bench", "missing.onnx"], "no such model file"),
        (["bench", "{model}", "--backends", "nosuch"], "'nosuch' is not installed"),
        (["bench", "{model}", "--shapes", "x:1x"], "malformed shape"),
        (["bench", "{model}", "--shapes", "x:2x3"], "contradicts the model"),
        (["bench", "{model}", "--batch", "0"], "positive integers"),
        (["bench", "{model}", "--backends", "onnxruntime", "--threads", "0"], "threads must be a positive integer"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(test_plugins, model, capsys, argv, message):
    argv = [a.replace("{model}", str(model("dynamic_mlp"))) for a in argv] + ["--iterations", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()  # progress lines may come first
    assert err[-1].startswith("error: ") and message in err[-1] and not any("Traceback" in e for e in err)


def test_unwritable_report_path_is_a_one_line_error(test_plugins, model, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [
        "bench",
        str(model("dynamic_mlp")),
        "--backends",
        "reference",
        "--iterations",
        "1",
        "--no-progress",
        "--json",
        str(blocker / "r.json"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "file" in err and "Traceback" not in err
