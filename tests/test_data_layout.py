"""The data package imports in one direction: no module imports another that imports it back."""

import ast
from pathlib import Path

import vatt.data

DATA = Path(vatt.data.__file__).parent


def _imports(path: Path) -> set[str]:
    """Sibling modules ``path`` imports (``from .x import``, anywhere, including inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return found


def test_data_modules_form_no_import_cycle():
    graph = {p.stem: _imports(p) for p in DATA.glob("*.py") if p.stem != "__init__"}
    state: dict[str, int] = {}

    def visit(mod, trail):
        if state.get(mod) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(trail + [mod])}")
        if state.get(mod) == 2:
            return
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            visit(dep, trail + [mod])
        state[mod] = 2

    for mod in sorted(graph):
        visit(mod, [])
