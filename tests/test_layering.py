"""The import direction of the package (docs/ARCHITECTURE.md): lower layers never import higher
ones, the library never imports the CLI, and no two modules import each other (directly or around
a loop), counting imports inside functions too."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "vatt"

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    {"errors", "atomic_io", "tagged_json", "state_io", "config_engine", "progress", "tables", "schedule", "text", "config"},
    {"model"},
    {"objective", "distributed"},
    {"data"},
    {"embed"},
    {"eval"},
    {"train"},
    {"tools", "demo", "convert", "search", "bench"},
    {"cli"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every vatt module ``name`` imports (top level or inside functions), resolved to modules."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "vatt"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "vatt":
                continue
            for alias in node.names:  # `from . import checkpoint` names a module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    unknown = sorted({_top(m) for m in MODULES} - set(LEVEL) - {"__init__", "__main__"})
    assert not unknown, f"add {unknown} to LAYERS here and to docs/ARCHITECTURE.md"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _top(m) in LEVEL))
def test_no_module_imports_a_higher_layer(module):
    mine = LEVEL[_top(module)]
    upward = sorted(t for t in GRAPH[module] if _top(t) in LEVEL and LEVEL[_top(t)] > mine)
    assert not upward, f"{module} (layer {mine}) imports higher layers: {upward}"


def test_no_import_cycles():
    # Package __init__ files only re-export; edges into them are not dependencies of substance.
    edges = {m: {t for t in ts if not MODULES[t].name == "__init__.py"} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_the_checker_sees_function_level_imports():
    # The data layer's old cycle hid inside functions; make sure such imports are counted.
    assert "vatt.eval.retrieval" in GRAPH["vatt.train.pretrain"]


def _from_imports(tree: ast.AST, package: str = ""):
    """(module, name, line) for every absolute or resolved-relative ``from vatt... import name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "vatt":
                for alias in node.names:
                    yield target, alias.name, node.lineno


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_is_imported_across_packages(module):
    # A leading underscore means "not for other packages": importing one couples two packages
    # through a name its owner may rename at will. Within one package it is fine.
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    bad = [f"line {line}: {name} from {target}" for target, name, line in _from_imports(ast.parse(path.read_text()), package)
           if name.startswith("_") and not name.startswith("__") and _top(target) != _top(module)]
    assert not bad, f"{module} imports private names of another package: {bad}"


SCRIPTS = sorted((PKG.parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmarks_import_only_what_exists(script):
    # Benchmarks are not run by the suite; an import of a moved module would only break
    # `bash benchmarks/run.sh` minutes in. Resolve every vatt import against the package itself.
    import importlib

    missing = []
    for target, name, line in _from_imports(ast.parse(script.read_text())):
        try:
            mod = importlib.import_module(target)
        except ImportError:
            missing.append(f"line {line}: module {target}")
            continue
        if not hasattr(mod, name) and f"{target}.{name}" not in MODULES:
            missing.append(f"line {line}: {name} from {target}")
        elif name.startswith("_") and not name.startswith("__"):
            missing.append(f"line {line}: private {name} from {target}")
    assert not missing, f"{script.name} imports what vatt does not have: {missing}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_relative_import_resolves_to_a_module_of_the_package(module):
    """A relative import that climbs past the package (``from ..data`` in a module moved up a
    level) fails only when its function runs; find it from the source instead."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            if node.level - 1 >= len(base):
                bad.append(f"line {node.lineno}: {'.' * node.level}{node.module or ''}")
                continue
            target = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
            if target not in MODULES and not all(f"{target}.{a.name}" in MODULES for a in node.names):
                bad.append(f"line {node.lineno}: {'.' * node.level}{node.module or ''} -> {target}")
    assert not bad, f"{module}: relative imports that resolve to no module: {bad}"
