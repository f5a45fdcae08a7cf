from __future__ import annotations

from pathlib import Path

import pytest

import unirt
from unirt import testing


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Conversions (and child processes, which inherit the environment) use a cache of this test run only."""
    mp = pytest.MonkeyPatch()
    mp.setenv("UNIRT_CACHE_DIR", str(tmp_path_factory.mktemp("unirt_cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """model("dynamic_mlp") -> path of that ONNX test model (unirt.testing builders), built once per run."""
    directory: Path = tmp_path_factory.mktemp("ncnn_models")
    return lambda name: testing.build(name, directory)


@pytest.fixture(scope="session")
def squeezenet():
    return next(c for c in testing.conformance_cases(("light",)) if c.name == "light_squeezenet")


@pytest.fixture(scope="session")
def converted(tmp_path_factory, model, squeezenet):
    """converted("dynamic_mlp") -> a Conversion of that model to ncnn (squeezenet: the conformance model)."""
    out = tmp_path_factory.mktemp("ncnn_converted")
    done = {}

    def get(name: str, **options):
        key = (name, repr(sorted(options.items())))
        if key not in done:
            source = squeezenet.model if name == "squeezenet" else model(name)
            done[key] = unirt.convert(source, to="ncnn", out=out / f"{name}{len(done)}.param", **options)
        return done[key]

    return get
