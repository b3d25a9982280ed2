"""The package's layer order, checked from the source (every import, function-local ones included).

Data flows down once: a module imports only modules of its own unit or of lower layers, and no files import
each other in a loop. The order is the README's ("Layers"); a new module joins a layer here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import edgefuse

ROOT = Path(edgefuse.__file__).parent

#: Low to high. A unit is a top-level module or sub-package of ``edgefuse``.
LAYERS = [
    ("foundations", {"errors", "limits", "progress", "_quiet", "_versions", "_files", "_registry", "_extras", "_inplace",
                     "_layout", "_memory", "distributed", "metrics"}),
    ("data", {"data"}),
    ("blocks", {"blocks"}),
    ("models and runtimes", {"models", "runtimes"}),
    ("training and model files", {"training", "checkpoint", "pt2_audit"}),
    ("quantize", {"quantize"}),
    ("export", {"export"}),
    ("validate", {"validate"}),
    ("reports", {"reports"}),
    ("pipeline", {"pipeline"}),
    ("entry points", {"api"}),
    ("command line", {"cli"}),
]
LAYER_OF = {u: i for i, (_, units) in enumerate(LAYERS) for u in units}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = ("edgefuse", *p.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(path: Path, name: str, is_package: bool) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("edgefuse")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("edgefuse"):
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in node.names}  # `from edgefuse.x import y` may name a module
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        targets = _imports(path, name, path.name == "__init__.py")
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _modules()} - {""}
    assert units <= set(LAYER_OF), f"give these a layer in LAYERS (and the README): {sorted(units - set(LAYER_OF))}"


def test_no_import_runs_up_a_layer():
    upward = []
    for src, targets in _graph().items():
        for dst in targets:
            us, ud = _unit(src), _unit(dst)
            if us and ud and us != ud and LAYER_OF[ud] > LAYER_OF[us]:
                upward.append(f"{src} ({LAYERS[LAYER_OF[us]][0]}) imports {dst} ({LAYERS[LAYER_OF[ud]][0]})")
    assert not upward, "\n".join(sorted(upward))


def test_no_unit_imports_another_of_its_layer_in_a_loop():
    edges = defaultdict(set)
    for src, targets in _graph().items():
        for dst in targets:
            if _unit(src) != _unit(dst) and _unit(src) and _unit(dst):
                edges[_unit(src)].add(_unit(dst))
    for a in edges:
        for b in edges[a]:
            assert a not in edges.get(b, set()), f"{a} and {b} import each other"


def test_no_import_cycle_between_files():
    graph = {m: {t for t in ts if not t.endswith("__init__")} for m, ts in _graph().items()}
    # A package's __init__ only re-exports its modules; edges into a package name point at its __init__.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, ()):
            if t in _modules() and _modules()[t].name == "__init__.py" and t != m and m.startswith(t + "."):
                continue  # a module importing its own package's re-exports
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if state.get(t) is None:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if state.get(m) is None:
            visit(m)
