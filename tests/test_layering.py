"""The packages' layering, read from the source with `ast` (nothing is imported).

A sub-package is a folder under `streamer/` or `sam2_video/` (`streamer.webrtc`,
`sam2_video.tracking`, ...). Every `import` counts, including those inside functions and
under `TYPE_CHECKING`: a lazy import still ties two packages together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of the modules `path` imports (relative imports resolved), with lines."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((module, node.lineno))
            # `from streamer import webrtc` names a sub-package, not an attribute.
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _subpackage(top: str, module: str) -> str | None:
    """The sub-package `module` belongs to (`streamer.webrtc.peer` -> `webrtc`), or None."""
    parts = module.split(".")
    if parts[0] != top or len(parts) < 2 or not (ROOT / top / parts[1]).is_dir():
        return None
    return parts[1]


def package_graph(top: str) -> dict[str, dict[str, str]]:
    """{sub-package: {sub-package it imports: "file:line" of one such import}}."""
    graph: dict[str, dict[str, str]] = {}
    for path in sorted((ROOT / top).rglob("*.py")):
        source = _subpackage(top, _module_name(path))
        if source is None:
            continue
        for module, line in _imports(path):
            target = _subpackage(top, module)
            if target is not None and target != source:
                graph.setdefault(source, {}).setdefault(target, f"{path.relative_to(ROOT)}:{line}")
    return graph


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    graph = {"service": {"webrtc": "a.py:1"}, "webrtc": {"service": "b.py:2"}, "cli": {}}
    assert find_cycle(graph) == ["service", "webrtc", "service"]
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}}) is None


@pytest.mark.parametrize("top", ["streamer", "sam2_video"])
def test_no_import_cycle_between_subpackages(top):
    graph = package_graph(top)
    assert graph, f"no sub-package imports found under {top}/: the scan is broken"
    cycle = find_cycle(graph)
    if cycle is not None:
        where = [graph[a][b] for a, b in zip(cycle, cycle[1:])]
        pytest.fail(f"import cycle {' -> '.join(cycle)} ({', '.join(where)})")


def test_streamer_never_imports_the_network_modules():
    """The service sees predictors and typed results; `SAM2Model` comes from `sam2_video`."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "streamer").rglob("*.py"))
        for module, line in _imports(path)
        if module == "sam2_video.modeling" or module.startswith("sam2_video.modeling.")
    ]
    assert offenders == []


def test_the_network_layer_imports_no_predictor_or_tracking_code():
    graph = package_graph("sam2_video")
    assert set(graph.get("modeling", {})) <= {"utils"}
    assert "predictors" not in graph.get("tracking", {})
