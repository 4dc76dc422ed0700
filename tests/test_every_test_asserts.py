"""No test that cannot fail: every `test_*` function in tests/ checks something (read with ast).

The rule. A function *checks* when its body (functions nested in it included) has
- an `assert` statement, or `raise AssertionError(...)`;
- a call of `pytest.raises`, `pytest.fail` or `pytest.warns`;
- a call of anything named `assert...` (`np.testing.assert_allclose`, `torch.testing.
  assert_close`, `mock.assert_called_once`, ...);
- a call of a function defined at module level in tests/ that checks, by this same rule
  (`poll`, which raises AssertionError on time-out; a test module's own checking helpers).
A call is matched by the called name only (`helpers.poll(...)` and `poll(...)` alike), so a
helper's name should not be reused for a function that checks nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PYTEST_CHECKS = {"raises", "fail", "warns"}

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _checks_directly(node: ast.AST) -> bool:
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            return True
        if isinstance(child, ast.Raise) and child.exc is not None:
            exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
            if isinstance(exc, ast.Name) and exc.id == "AssertionError":
                return True
        if isinstance(child, ast.Call):
            name = _called_name(child)
            func = child.func
            if name is not None and name.startswith("assert"):
                return True
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == "pytest"
                and func.attr in PYTEST_CHECKS
            ):
                return True
    return False


def _calls(node: ast.AST) -> set[str]:
    return {
        name
        for child in ast.walk(node)
        if isinstance(child, ast.Call) and (name := _called_name(child)) is not None
    }


def checking_helpers(modules: dict[Path, ast.Module]) -> set[str]:
    """Names of module-level functions in `modules` that check (to a fixed point)."""
    functions = [
        node
        for tree in modules.values()
        for node in tree.body
        if isinstance(node, Function) and not node.name.startswith("test_")
    ]
    checking = {f.name for f in functions if _checks_directly(f)}
    while True:
        more = {f.name for f in functions if f.name not in checking and _calls(f) & checking}
        if not more:
            return checking
        checking |= more


def collect_tests(tree: ast.Module) -> list[Function]:
    """Module-level `test_*` functions and `test_*` methods of `Test*` classes."""
    found = [n for n in tree.body if isinstance(n, Function) and n.name.startswith("test_")]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        if cls.name.startswith("Test"):
            found += [n for n in cls.body if isinstance(n, Function) and n.name.startswith("test_")]
    return found


def unchecked_tests(modules: dict[Path, ast.Module]) -> list[str]:
    helpers = checking_helpers(modules)
    return [
        f"{path.name}:{test.lineno} {test.name}"
        for path, tree in modules.items()
        for test in collect_tests(tree)
        if not (_checks_directly(test) or _calls(test) & helpers)
    ]


def test_the_rule_tells_checking_tests_from_others():
    source = """
def wait(p):
    if not p():
        raise AssertionError("not met")

def looks(x):
    return wait(lambda: x)

def test_assert():
    assert 1

def test_raises():
    with pytest.raises(ValueError):
        int("x")

def test_numpy():
    np.testing.assert_allclose(1, 1)

def test_via_helpers():
    looks(1)

def test_nested():
    def inner():
        assert True
    inner()

def test_prints_only():
    print(1 + 1)

def test_calls_a_plain_function():
    sorted([2, 1])
"""
    modules = {Path("test_sample.py"): ast.parse(source)}
    unchecked = [entry.split()[-1] for entry in unchecked_tests(modules)]
    assert unchecked == ["test_prints_only", "test_calls_a_plain_function"]


def test_every_test_function_checks_something():
    modules = {path: ast.parse(path.read_text(), str(path)) for path in sorted(TESTS.glob("*.py"))}
    assert sum(len(collect_tests(tree)) for tree in modules.values()) > 200, "the scan is broken"
    assert unchecked_tests(modules) == []
