"""Loading is written once, below `Session` (issue 14 item 1): no chain of imports from `unirt.session` leads back to
it (session -> fastest -> conversion -> session was one), and conversion reaches no Session at all. Imports inside
functions count: they run too. Read from the source with `ast`, not by importing."""

from __future__ import annotations

import ast
from pathlib import Path

import unirt

ROOT = Path(unirt.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("unirt",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """{module: the unirt modules it imports anywhere in its source}."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    native = {_module_name(p.with_name(p.name.split(".")[0] + ".py")) for p in ROOT.rglob("*.so")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from . import registry` names a submodule; `from .errors import X` the module itself
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules or f"{base}.{a.name}" in native else base
                    for a in node.names
                ]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, str | None]:
    """Every module reachable from `start`, with the module that first led to it."""
    seen: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        here = todo.pop()
        for nxt in sorted(graph[here]):
            if nxt not in seen:
                seen[nxt] = here
                todo.append(nxt)
    return seen


def _path(seen: dict[str, str | None], end: str) -> list[str]:
    chain = [end]
    while seen[chain[-1]] is not None:
        chain.append(seen[chain[-1]])  # type: ignore[arg-type]
    return chain[::-1]


def test_no_import_chain_leads_from_session_back_to_it():
    graph = _graph()
    seen = _reachable(graph, "unirt.session")
    back = [m for m in seen if "unirt.session" in graph[m]]
    assert not back, "import cycle: " + " -> ".join(_path(seen, back[0]) + ["unirt.session"])


def test_conversion_and_fastest_reach_no_session():
    graph = _graph()
    for start in ("unirt.conversion", "unirt.fastest", "unirt.loading", "unirt._isolated_worker"):
        seen = _reachable(graph, start)
        assert "unirt.session" not in seen, " -> ".join(_path(seen, "unirt.session"))


def test_the_graph_sees_lazy_imports():
    """The walk counts imports inside functions: session imports fastest only there."""
    graph = _graph()
    assert "unirt.fastest" in graph["unirt.session"]
    assert "unirt.loading" in graph["unirt.conversion.build"]
    assert "unirt.conversion" in _reachable(graph, "unirt.session")


def test_one_content_hash_per_model(tmp_path):
    """Every cache keyed by a model's content uses `ModelFile.content_hash`: computed once per model, with a
    separator between files (moving bytes from a model's graph file into its weights file is another model)."""
    from unirt import model_hash, open_model, testing
    from unirt.conversion import store

    src = testing.dynamic_mlp(tmp_path / "src.onnx")
    path = testing.with_external_data(src, tmp_path / "m" / "mlp.onnx")
    model = open_model(path)
    assert len(model.files) == 2
    assert model.content_hash == store.content_hash(model) == model_hash.hash_content(model)
    import hashlib

    joined = hashlib.sha256(b"".join(f.read_bytes() for f in model.files)).hexdigest()
    assert model.content_hash != joined  # the separator counts
    assert open_model(src).content_hash == hashlib.sha256(src.read_bytes()).hexdigest()
    assert open_model(src.read_bytes()).content_hash == open_model(src).content_hash
    model_hash._memo.clear()
    assert "content_hash" in vars(model)  # cached on the model: not read again
    assert model.content_hash == model_hash.hash_content(model)
