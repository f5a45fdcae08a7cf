from __future__ import annotations

from pathlib import Path

import pytest

# The plugin's tests need torch (the plugin's `engine` extra); without it they are skipped, saying so.
pytest.importorskip(
    "torch", reason="torch is not installed (pip install './plugins/torch[engine]'): the torch plugin's tests need it"
)


@pytest.fixture(scope="session")
def torch_model(tmp_path_factory):
    """torch_model("dynamic_mlp") -> path of that model's ExportedProgram twin (unirt.testing.torch_models)."""
    from unirt.testing.torch_models import build_torch

    directory: Path = tmp_path_factory.mktemp("torch_models")
    return lambda name: build_torch(name, directory)
