"""The maps of the code stay true: every package folder has a README.md whose "May import:" line the
package's imports keep to; README.md's Layout names every package and top-level folder; ``satkern
--help`` lists every command without docstring markup; no file cites a file outside the repository."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "satkern"
PACKAGES = sorted(p.parent for p in PKG.rglob("__init__.py") if p.parent != PKG and "__pycache__" not in p.parts)
TOP_PACKAGES = sorted(p.name for p in PACKAGES if p.parent == PKG)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _allowed(readme: Path):
    """The backticked module names of a README's ``May import:`` line (``[]`` for "nothing of satkern")."""
    lines = [ln for ln in readme.read_text(encoding="utf-8").splitlines() if ln.startswith("May import:")]
    assert len(lines) == 1, f"{_rel(readme)}: needs exactly one line starting with 'May import:'"
    names = re.findall(r"`(satkern(?:\.\w+)*)`", lines[0])
    assert names or "nothing" in lines[0], f"{_rel(readme)}: 'May import:' names no module and does not say nothing"
    return names


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file() or any(path.parent.glob(path.name + ".*.so"))


def _module_of(dotted: str) -> str:
    """The longest prefix of ``dotted`` that is a module (``satkern.patch`` -> ``satkern``, the public API)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if _is_module(".".join(parts[:n])):
            return ".".join(parts[:n])
    return parts[0]


def _satkern_imports(path: Path):
    """``(line, module)`` of every import of a satkern module in a file (relative imports resolved)."""
    package = path.parent.relative_to(ROOT).parts
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "satkern" or name.startswith("satkern."):
                yield node.lineno, _module_of(name)


@pytest.mark.parametrize("folder", PACKAGES, ids=_rel)
def test_every_package_folder_has_a_readme(folder):
    readme = folder / "README.md"
    assert readme.is_file(), f"{_rel(folder)} has no README.md (what it owns, what it may import)"
    assert readme.read_text(encoding="utf-8").startswith(f"# {_rel(folder)}"), f"{_rel(readme)}: title"
    _allowed(readme)


@pytest.mark.parametrize("folder", PACKAGES, ids=_rel)
def test_packages_import_only_what_their_readme_allows(folder):
    own = ".".join(folder.relative_to(ROOT).parts)
    allowed = _allowed(folder / "README.md")
    nested = [p for p in PACKAGES if p != folder and folder in p.parents]  # checked against their own README
    bad = []
    for path in sorted(folder.rglob("*.py")):
        if any(n in path.parents for n in nested):
            continue
        for line, module in _satkern_imports(path):
            if module == own or module.startswith(own + "."):
                continue
            if not any(module == a or (a != "satkern" and module.startswith(a + ".")) for a in allowed):
                bad.append(f"{_rel(path)}:{line} imports {module}")
    assert not bad, f"imports that {_rel(folder / 'README.md')} does not allow (fix the code or the map): {bad}"


def _layout_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)


def test_readme_layout_names_every_package_and_folder():
    block = _layout_block()
    top = [ln.split()[0] for ln in block.splitlines() if ln and not ln[0].isspace()]
    folders = sorted(p.name + "/" for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in ("build", "dist", "demo_out", "__pycache__") and not p.name.endswith(".egg-info"))
    assert sorted(top) == folders, f"Layout lists {sorted(top)}; the repository has {folders}"
    listed = re.findall(r"^\s+(\w+)/", block, re.M)
    assert sorted(listed) == TOP_PACKAGES, f"Layout lists satkern packages {sorted(listed)}; there are {TOP_PACKAGES}"


def test_help_lists_every_command_in_plain_text():
    from satkern.cli import build_parser
    from satkern.commands import COMMANDS

    modules = sorted(p.stem for p in (PKG / "commands").glob("*.py") if p.stem != "__init__")
    assert sorted(COMMANDS) == modules, "every module in satkern/commands is a command listed in COMMANDS"
    ap, by_name = build_parser()
    text = ap.format_help()
    for name, module in by_name.items():
        assert re.search(rf"^\s+{re.escape(name)}\s+\S", text, re.M), f"satkern --help does not list {name}"
        assert module.HELP and module.DESCRIPTION
    assert len(by_name) == len(COMMANDS)
    for markup in ("``", ":mod:", ":func:", ":class:", ":data:"):
        assert markup not in text, f"satkern --help shows docstring markup {markup!r}:\n{text}"


# written in two pieces so that this file does not match itself
OUTSIDE = ("HOUSE" + "_STYLE", "/work" + "/shared", "../" + "shared/")
TEXT_SUFFIXES = {".py", ".md", ".cpp", ".h", ".cu", ".cuh", ".inc", ".sh", ".toml", ".txt", ".cfg", ".yml", ".yaml"}


def test_no_file_cites_a_file_outside_the_repository():
    skip = {".git", ".venv", "build", "dist", "__pycache__", "demo_out", "node_modules"}
    hits = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in skip or part.endswith(".egg-info") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix not in TEXT_SUFFIXES and path.name not in ("Makefile", "run"):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(needle in line for needle in OUTSIDE):
                hits.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not hits, f"citations of files outside the repository (cite docs/METRICS.md or the code instead): {hits}"
