"""docs/internals.md's package table says what each module imports; this keeps it true.

The "may import" column names the package's modules and the third-party packages a module imports
(`-`: none). `cli.py` may import everything; for `fetcher/` only what precedes the `;` is checked
(after it the column says what the fetcher must never import, which import-linter checks).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "modeldepot"
ROW = re.compile(r"^\| `([\w/]+?)(?:\.py|/)?` \| .* \| ([^|]*) \|$")
MODULES = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"} | {
    p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
}


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """Per module: the package's modules and the third-party packages its row names."""
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in (ROOT / "docs" / "internals.md").read_text().splitlines():
        match = ROW.match(line)
        if not match or match.group(1) == "cli":
            continue
        column = match.group(2)
        if match.group(1) == "fetcher":
            column = column.partition(";")[0]
        words = set(re.findall(r"[a-z_0-9]+", column)) - {"names", "only"}  # "builders (names only)"
        rows[match.group(1)] = (words & MODULES, words - MODULES)
    return rows


def imports(module: str) -> tuple[set[str], set[str]]:
    """The package's top-level modules and the third-party packages `module` imports."""
    path = PACKAGE / module
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
    ours: set[str] = set()
    theirs: set[str] = set()
    for file in files:
        depth = len(file.relative_to(PACKAGE).parts) - 1
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.ImportFrom) and node.level:
                # relative: from the package root after climbing out of subpackages
                parts = (node.module or "").split(".")
                if node.level > depth:
                    ours.update({parts[0]} if parts[0] else {a.name for a in node.names})
            elif isinstance(node, ast.ImportFrom) and node.module:
                name = node.module.split(".")
                if name[0] == "modeldepot":
                    ours.update({name[1]} if len(name) > 1 else {a.name for a in node.names})
                else:
                    theirs.add(name[0])
            elif isinstance(node, ast.Import):
                theirs.update(a.name.split(".")[0] for a in node.names)
    own = module.split("/")[0]
    ours -= {own, "__version__"}
    return ours, theirs - set(sys.stdlib_module_names) - {"__future__"}


def test_the_table_lists_every_module() -> None:
    assert set(documented()) | {"cli"} == MODULES


@pytest.mark.parametrize("module", sorted(documented()))
def test_may_import_column_matches_the_code(module: str) -> None:
    ours, theirs = documented()[module]
    actual_ours, actual_theirs = imports(module)
    assert actual_ours == ours
    if module != "fetcher":
        assert actual_theirs == theirs
