"""The shape of squeeze/ itself: no import cycles between its modules and no private name
(``_x``) imported from another squeeze module (as tests/test_dependencies.py does for
third-party imports). Imports inside functions count too: a lazy import hides a cycle, it
does not remove it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "squeeze"



def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> tuple[dict[str, set[str]], set[tuple[str, str, str]]]:
    """(module -> the squeeze modules it imports, {(importer, module, private name)})."""
    modules = {_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private: set[tuple[str, str, str]] = set()
    for mod, path in modules.items():
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges[mod] |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                source = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") if node.level else node.module or ""
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        edges[mod].add(f"{source}.{alias.name}")
                    elif source in modules:
                        edges[mod].add(source)
                        if alias.name.startswith("_") and not alias.name.startswith("__") and source != mod:
                            private.add((mod, source, alias.name))
    for mod in edges:
        edges[mod].discard(mod)
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_sees_the_imports_it_should():
    edges, _ = import_graph()
    assert "squeeze.plan" in edges["squeeze.subspace"] and "squeeze.kernels.native" in edges["squeeze.kernels"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycles(import_graph()[0])
    assert found == [], f"import cycles: {found}"


def test_no_private_name_is_imported_from_another_module():
    found = import_graph()[1]
    assert found == set(), f"private names imported from another module (importer, module, name): {sorted(found)}"


# About 400 lines: a module longer than LONG says why in its docstring ("400 lines").
LONG = 420


def test_no_module_is_over_about_400_lines_unless_its_docstring_says_why():
    over = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > LONG and "400 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            over[path.relative_to(ROOT).as_posix()] = len(text.splitlines())
    assert not over, f"modules over {LONG} lines whose docstring does not say why: {over}"
