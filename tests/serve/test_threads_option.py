"""`unirt serve --threads N`: the CPU threads of every model instance whose config sets none (what a container's
CPU limit asks for; the KServe runtime passes it)."""

from __future__ import annotations

from unirt.cli import main
from unirt.serve import ServeOptions, ServerThread
from unirt.testing import models


def test_default_threads_apply_where_the_config_sets_none(tmp_path):
    for name in ("plain", "pinned"):
        (tmp_path / name / "1").mkdir(parents=True)
        models.dynamic_mlp(tmp_path / name / "1" / "model.onnx")
    (tmp_path / "pinned" / "config.pbtxt").write_text('parameters { key: "threads" value { string_value: "1" } }\n')
    options = ServeOptions(model_repository=tmp_path, http_port=0, grpc_port=None, metrics_port=None, default_threads=2)
    with ServerThread(options) as server:
        manager = server.server.manager
        assert manager.get("plain").sessions[0].options.threads == 2
        assert manager.get("pinned").sessions[0].options.threads == 1


def test_threads_must_be_positive(tmp_path, capsys):
    assert main(["serve", str(models.dynamic_mlp(tmp_path / "m.onnx")), "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
