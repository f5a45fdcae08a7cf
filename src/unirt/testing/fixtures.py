"""pytest fixtures for a plugin whose backend runs models converted from ONNX (ncnn, MNN, ...).

A plugin's `tests/conftest.py` takes them in one line::

    from unirt.testing.fixtures import conversion_fixtures

    private_cache, model, squeezenet, converted = conversion_fixtures("mnn", ".mnn")

- `private_cache` (autouse): conversions, and child processes, use a cache of this test run only;
- `model("dynamic_mlp")`: the path of that ONNX test model (`unirt.testing.models`), built once per run;
- `squeezenet`: the onnx wheel's squeezenet conformance case;
- `converted("dynamic_mlp", **options)`: a `unirt.Conversion` of that model (or "squeezenet") to the backend's
  format, converted once per run and options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["conversion_fixtures"]


def conversion_fixtures(target: str, suffix: str) -> tuple[Any, Any, Any, Any]:
    """The four fixtures above for converting to `target` (`unirt.convert(..., to=target)`), files named *suffix."""

    @pytest.fixture(scope="session", autouse=True, name="private_cache")
    def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        mp = pytest.MonkeyPatch()
        mp.setenv("UNIRT_CACHE_DIR", str(tmp_path_factory.mktemp("unirt_cache")))
        yield
        mp.undo()

    @pytest.fixture(scope="session", name="model")
    def model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
        from . import build

        directory: Path = tmp_path_factory.mktemp(f"{target}_models")
        return lambda name: build(name, directory)

    @pytest.fixture(scope="session", name="squeezenet")
    def squeezenet() -> Any:
        from . import conformance_cases

        return next(c for c in conformance_cases(("light",)) if c.name == "light_squeezenet")

    @pytest.fixture(scope="session", name="converted")
    def converted(
        tmp_path_factory: pytest.TempPathFactory, model: Callable[[str], Path], squeezenet: Any
    ) -> Callable[..., Any]:
        import unirt

        out = tmp_path_factory.mktemp(f"{target}_converted")
        done: dict[tuple[str, str], Any] = {}

        def get(name: str, **options: Any) -> Any:
            key = (name, repr(sorted(options.items())))
            if key not in done:
                source = squeezenet.model if name == "squeezenet" else model(name)
                done[key] = unirt.convert(source, to=target, out=out / f"{name}{len(done)}{suffix}", **options)
            return done[key]

        return get

    return private_cache, model, squeezenet, converted
