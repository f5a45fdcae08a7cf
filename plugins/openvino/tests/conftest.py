from __future__ import annotations

from pathlib import Path

import pytest

from unirt import testing


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """model("dynamic_mlp") -> path of that test model (unirt.testing builders), built once per test run."""
    directory: Path = tmp_path_factory.mktemp("ov_models")
    return lambda name: testing.build(name, directory)
