"""The README and docs/ say what is true: every relative link resolves (files and #anchors), every ```python block
runs, every `unirt ...` command in a ```bash block parses, every CLI synopsis names real options with one shape
syntax, and every `pip install` installs this project (from the checkout) or a real third-party package.

A block that cannot run here is marked, on the line before it, with `<!-- docs-test: skip (the reason) -->`.
A page's python blocks run in order in one interpreter (later blocks use earlier ones' names), in a scratch
directory that holds a copy of examples/models, as a reader running them from the repository root would.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unirt.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\(([^)]+)\)\s*-->\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
# Third-party packages a page may tell a reader to pip install (they exist on the index under these names).
THIRD_PARTY = {
    "pnnx",
    "onnx2tf",
    "onnx",
    "onnxruntime",
    "tensorrt",
    "ai-edge-litert",
    "onnxslim",
    "matplotlib",
    "tqdm",
    "nvidia-ml-py",
    "pyyaml",
    "torch",
    "onnxscript",
    "scikit-build-core",
    "pre-commit",
}


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def blocks(page: Path) -> list[tuple[str, str, str | None, int]]:
    """(language, code, skip reason or None, line) for every fenced block of `page`."""
    text = page.read_text()
    found = []
    for m in BLOCK.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        found.append((m.group(1), m.group(2), skip.group(1) if skip else None, text[: m.start()].count("\n") + 1))
    return found


def prose(page: Path) -> str:
    """The page without its fenced blocks (links and headings live outside them)."""
    return BLOCK.sub("", page.read_text())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text.replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page).splitlines():
        if line.startswith("#"):
            s = slug(line.lstrip("#"))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here (no network)
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{rel(page)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(prose(ROOT / "README.md"))}
    assert not [rel(p) for p in PAGES[1:] if p.resolve() not in linked]


def test_skipped_python_blocks_compile_and_say_why():
    for page in PAGES:
        for lang, code, skip, line in blocks(page):
            if lang == "python" and skip is not None:
                assert len(skip.strip()) > 10, f"{rel(page)}:{line}: say why the block is skipped"
                compile(code, f"{rel(page)}:{line}", "exec")


@pytest.mark.parametrize("page", [p for p in PAGES if any(b[0] == "python" for b in blocks(p))], ids=rel)
def test_python_blocks_run(page, tmp_path):
    code = [(c, line) for lang, c, skip, line in blocks(page) if lang == "python" and skip is None]
    shutil.copytree(ROOT / "examples" / "models", tmp_path / "examples" / "models")
    # one interpreter per page; each block compiled under its own line number, so a failure points at it
    script = "import sys\n_ns = {'__name__': '__main__'}\n" + "".join(
        f"exec(compile({c!r}, {f'{rel(page)}:{line}'!r}, 'exec'), _ns)\n" for c, line in code
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{rel(page)}: a python block failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def commands(code: str) -> list[str]:
    """The shell commands of a block: continuation lines joined, comments dropped, `a && b` split."""
    joined = re.sub(r"\\\n\s*", " ", code)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        out += [part.strip() for part in re.split(r"&&|;|\|\|", line) if part.strip()]
    return out


def shell_blocks() -> list[tuple[str, str]]:
    return [
        (f"{rel(p)}:{line}", c)
        for p in PAGES
        for lang, c, _, line in blocks(p)
        if lang in ("bash", "console", "sh", "shell")
    ]


@pytest.mark.parametrize("where,code", shell_blocks(), ids=[w for w, _ in shell_blocks()])
def test_unirt_commands_parse(where, code):
    parser = build_parser()
    for command in commands(code):
        command = command.removeprefix("$ ").strip()
        if not command.startswith("unirt "):  # other tools' lines (their quoting is theirs)
            continue
        words = shlex.split(command)
        try:
            parser.parse_args(words[1:])
        except SystemExit as exc:
            pytest.fail(f"{where}: `{command}` does not parse (exit {exc.code})")


def subcommands() -> dict[str, object]:
    """{"run": parser, "deploy kserve": parser, ...}: every command's own argparse parser."""
    import argparse

    def walk(parser, prefix):
        yield prefix, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{prefix} {name}".strip())

    return dict(walk(build_parser(), ""))


def synopses() -> list[tuple[str, str]]:
    """CLI synopses: ```text blocks whose lines start with `unirt ` (continuation lines are indented)."""
    found = []
    for p in PAGES:
        for lang, code, _, line in blocks(p):
            if lang != "text" or not code.startswith("unirt "):
                continue
            entry = ""
            for row in code.splitlines():
                if row.startswith("unirt ") and entry:
                    found.append((f"{rel(p)}:{line}", entry))
                    entry = ""
                entry += " " + row.split("  #")[0].strip()
            found.append((f"{rel(p)}:{line}", entry.strip()))
    return found


@pytest.mark.parametrize("where,synopsis", synopses(), ids=[f"{w}:{s.split('[')[0].strip()}" for w, s in synopses()])
def test_synopsis_names_real_options(where, synopsis):
    parsers = subcommands()
    words = synopsis.split()
    name = " ".join(words[1:3]) if " ".join(words[1:3]) in parsers else words[1]
    if name.startswith("-") or name == "COMMAND":  # `unirt [-v] COMMAND`: the top-level parser
        name = ""
    assert name in parsers, f"{where}: no command {name!r}"
    known = {s for a in parsers[name]._actions for s in a.option_strings}
    known |= {s for a in parsers[""]._actions for s in a.option_strings}
    named = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", synopsis))
    assert not named - known, f"{where}: `unirt {name}` has no option {sorted(named - known)}"
    assert "--shapes" not in named, f"{where}: one shape syntax: --shape NAME:1x3x224x224"
    for value in re.findall(r"--shape[ =](\S+)", synopsis):
        assert re.fullmatch(r"\[?NAME:\d+(x\d+)*\]?", value), f"{where}: --shape {value}: write it NAME:1x3x224x224"


def pip_lines() -> list[tuple[str, str]]:
    """Every `pip install ...` in the pages (blocks and prose) and in the messages of unirt/ and the plugins."""
    sources = (
        PAGES
        + sorted((ROOT / "plugins").glob("*/README.md"))
        + sorted((ROOT / "unirt").rglob("*.py"))
        + sorted((ROOT / "plugins").glob("*/unirt_*/*.py"))
    )
    found = []
    for src in sources:
        for n, line in enumerate(src.read_text().splitlines(), 1):
            for m in re.finditer(r"pip install ([^`\n;&)]+)", line):
                found.append((f"{rel(src)}:{n}", m.group(1)))
    return found


def test_pip_install_lines_install_this_project():
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is 3.11+; unirt runs on 3.10)
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+)\s*=", section, re.M))
    assert {"tools", "serve"} <= extras
    wrong = []
    for where, args in pip_lines():
        seen = 0
        for word in shlex.split(args.replace("'", " ").replace('"', " ")):
            if word.startswith("-"):
                continue
            if "{" in word or word.startswith("$"):  # a message's placeholder: what it stands for is not checked
                seen += 1
                continue
            spec, _, extra = word.partition("[")
            local = spec in (".", "./") or spec.startswith("./") or spec.endswith(".txt")
            if seen and not local:
                break  # the prose after the command ("from unirt's source checkout")
            seen += 1
            if spec in (".", "./"):
                ok = all(e in extras for e in extra.rstrip("]").split(",") if e)
            elif local:
                ok = (ROOT / spec).exists() and (not spec.startswith("./plugins/") or (ROOT / spec).is_dir())
            else:
                ok = re.split(r"[<>=!~]", spec)[0].lower() in THIRD_PARTY
            if not ok:
                wrong.append(f"{where}: {word}")
            if not local:
                break  # one third-party name is what such a line installs
    assert not wrong, "pip install lines that do not install this project or a known package:\n" + "\n".join(wrong)


def test_no_internal_references():
    pattern = re.compile(r"\bseed('s)? Q\d+|\(Q\d+\)|\bQ\d{1,2}:|issue[- ]\d+")
    hits = [
        f"{rel(p)}:{n}: {line.strip()}"
        for p in PAGES
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "internal references in the docs:\n" + "\n".join(hits)
