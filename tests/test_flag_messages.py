"""The library speaks in parameters, the CLI in flags (issue 27): no message raised under
squeeze/ names a command-line flag such as ``--arch``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "squeeze"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")



def _messages(tree: ast.AST):
    """(line, text) of each string constant inside a raise statement (f-string parts included)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield node.lineno, sub.value


def offenders() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line, text in _messages(ast.parse(path.read_text(), str(path))):
            flags = FLAG.findall(text)
            if flags:
                found.setdefault(rel, []).append(f"line {line}: {', '.join(flags)}")
    return found


def test_no_raised_message_under_squeeze_names_a_cli_flag():
    found = offenders()
    assert not found, f"messages that name CLI flags (name the parameter, e.g. 'arch='; the CLI maps it): {found}"


def test_the_scan_finds_flags_in_messages():
    tree = ast.parse('def f(x):\n    raise ValueError(f"pass --base with {x}")\n')
    assert [FLAG.findall(t) for _, t in _messages(tree)] == [["--base"]]
