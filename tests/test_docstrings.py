"""Every public function and method of `streamer` has a docstring (read with `ast`).

Public: a module-level function, or a method of a module-level class (nested classes
included), whose name does not start with "_"; properties count. Functions defined inside
other functions (FastAPI route handlers, callbacks) are left out: their enclosing function
documents them. Dunder methods are left out: their class's docstring says what they take.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def public_functions(
    body: list[ast.stmt], prefix: str = ""
) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
    """(node, qualified name) of each public function in `body` (see the module docstring)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("_"):
                yield node, prefix + node.name
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            yield from public_functions(node.body, f"{prefix}{node.name}.")


def undocumented(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {name}"
        for node, name in public_functions(tree.body)
        if not (ast.get_docstring(node) or "").strip()
    ]


def test_the_check_sees_a_missing_docstring():
    source = (
        "def documented():\n    '''Says what.'''\n\n"
        "def bare():\n    pass\n\n"
        "def _private():\n    pass\n\n"
        "class Thing:\n"
        "    def method(self):\n        return 1\n\n"
        "    @property\n    def size(self):\n        '''Bytes.'''\n        return 0\n"
    )
    tree = ast.parse(source)
    names = [name for node, name in public_functions(tree.body) if not ast.get_docstring(node)]
    assert names == ["bare", "Thing.method"]


def test_every_public_function_of_streamer_has_a_docstring():
    files = sorted((ROOT / "streamer").rglob("*.py"))
    assert len(files) > 50, "the scan found too few modules"
    missing = [entry for path in files for entry in undocumented(path)]
    assert missing == [], "public functions without a docstring:\n" + "\n".join(missing)
