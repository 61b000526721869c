"""The code's shape: layers and "never" arrows (import-linter contracts in pyproject.toml), no
import cycles, and no module using another module's private names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("radiology", "modeling", "evaluation", "finetune", "service", "radreport")
CHECKED = (*PACKAGES, "bench")
# Private names still used across modules, being removed (issue #21). The check fails when one is
# gone (delete it here) and when a new one appears.
BEING_REMOVED: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(path: Path) -> list[str]:
    """`from project.x import _name` and `alias._name` (alias an imported project module) in the
    module at `path`, for names private to another module, as "file:line name" strings."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path)
    found: list[str] = []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES or node.module == here:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    where = f"{path.relative_to(REPO)}:{node.lineno}"
                    found.append(f"{where} {node.module}.{alias.name}")
                else:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES and alias.name != here:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _is_private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            target = aliases[node.value.id]
            if target != here:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {target}.{node.attr}")
    return found


def test_imports_keep_the_layer_contracts_and_have_no_cycles() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail("lint-imports (import-linter, a test extra) is not installed in this venv")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_no_module_uses_another_modules_private_names() -> None:
    files = [p for package in CHECKED for p in sorted((REPO / package).rglob("*.py"))]
    assert len(files) > 100  # the walk found the project
    offences = {f"{use.split(':')[0]} {use.split()[-1]}" for path in files
                 for use in private_uses(path)}
    assert offences == BEING_REMOVED


def test_the_private_name_check_finds_both_forms(tmp_path: Path) -> None:
    probe = REPO / "bench" / "_architecture_probe.py"
    probe.write_text("from modeling.loaders import _thing\nimport modeling.loaders as ml\n"
                     "ml._other()\n")
    try:
        uses = private_uses(probe)
    finally:
        probe.unlink()
    assert [u.split()[-1] for u in uses] == ["modeling.loaders._thing", "modeling.loaders._other"]
