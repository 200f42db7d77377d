"""Layers without cycles: no module imports one of a higher layer, checked statically and in fresh interpreters.

Layers, lowest first (within a layer imports are free):

    base < data < models < pipeline < training, metrics, evaluation < commands

The static check reads every ``import`` in every module, including the lazy ones inside
functions; the dynamic check imports each package / top-level module (and all its submodules)
in a fresh interpreter and looks at what ``sys.modules`` then holds. The root package
``layout2img`` is outside the table: Python runs it before any submodule, so it may eagerly
import only base modules (checked), and it re-exports higher names lazily from ``__getattr__``.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = "layout2img"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / ROOT

#: (layer name, the packages and modules in it), lowest first.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("layout2img.errors", "layout2img.version", "layout2img.vocab", "layout2img.io", "layout2img.graph",
              "layout2img.graph_validation", "layout2img.relations", "layout2img.config", "layout2img.visualize",
              "layout2img.devices", "layout2img.resources", "layout2img.configs")),
    ("data", ("layout2img.data",)),
    ("models", ("layout2img.models",)),
    ("pipeline", ("layout2img.pipeline", "layout2img.editing")),
    ("training/metrics/evaluation", ("layout2img.training", "layout2img.metrics", "layout2img.evaluation")),
    ("commands", ("layout2img.cli", "layout2img.commands", "layout2img.generate", "layout2img.web")),
]
UNITS = [unit for _, units in LAYERS for unit in units]
#: Imports that are within one layer but would close a cycle: the evaluate engine uses metrics and
#: training code (run resolution, the classifier loader), never the other way round.
FORBIDDEN = [("layout2img.metrics", "layout2img.evaluation"), ("layout2img.training", "layout2img.evaluation")]


def unit_of(module: str) -> str | None:
    """The table entry (package or top-level module) that ``module`` belongs to, None if none."""
    parts = module.split(".")
    return f"{ROOT}.{parts[1]}" if len(parts) > 1 and f"{ROOT}.{parts[1]}" in UNITS else None


def layer_of(module: str) -> int | None:
    unit = unit_of(module)
    return None if unit is None else next(i for i, (_, units) in enumerate(LAYERS) if unit in units)


def all_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``pkg/__init__.py`` is ``pkg``)."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = all_modules()


def is_module(name: str) -> bool:
    return name in MODULES


def imported_modules(name: str, path: Path) -> list[tuple[str, int]]:
    """(layout2img module, line) of every import in the file, lazy ones inside functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == ROOT]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != ROOT:
                continue
            for a in node.names:  # `from . import editing` imports a module; `from .io import x` a name
                sub = f"{target}.{a.name}"
                out.append((sub if is_module(sub) else target, node.lineno))
    return sorted(set(out), key=lambda item: (item[1], item[0]))


def violations(source: str, targets) -> list[str]:
    """Why each of ``targets`` may not be imported by ``source`` (empty: all allowed)."""
    low = layer_of(source)
    found = []
    for target, where in targets:
        if target == ROOT:
            continue  # the root's eager part is base (test_root_package_loads_only_base_modules)
        high = layer_of(target)
        if high is None:
            found.append(f"{source} imports {target} ({where}), which is in no layer of LAYERS")
        elif high > low:
            found.append(f"{source} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]}) {where}")
        elif any(source.startswith(a) and target.startswith(b) for a, b in FORBIDDEN):
            found.append(f"{source} imports {target} {where}: the engine may use it, not the other way round")
    return found


def test_every_module_is_in_a_layer():
    assert [m for m in MODULES if m != ROOT and unit_of(m) is None] == []


def test_the_import_scanner_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "layout2img" / "metrics"
    pkg.mkdir(parents=True)
    source = pkg / "example.py"
    source.write_text("from ..errors import ConfigError\nfrom .. import cli\nimport layout2img.data.batch\n\n"
                      "def f():\n    from ..evaluation import evaluate\n    from . import fid\n")
    found = imported_modules("layout2img.metrics.example", source)
    assert found == [("layout2img.errors", 1), ("layout2img.cli", 2), ("layout2img.data.batch", 3),
                     ("layout2img.evaluation", 6), ("layout2img.metrics.fid", 7)]
    assert violations("layout2img.metrics.example", [(t, f"line {n}") for t, n in found]) == [
        "layout2img.metrics.example (training/metrics/evaluation) imports layout2img.cli (commands) line 2",
        "layout2img.metrics.example imports layout2img.evaluation line 6: the engine may use it, not the other "
        "way round"]
    assert violations("layout2img.models.gcn", [("layout2img.pipeline", "line 9")]) == [
        "layout2img.models.gcn (models) imports layout2img.pipeline (pipeline) line 9"]


@pytest.mark.parametrize("unit", UNITS)
def test_no_module_imports_a_higher_layer(unit):
    """Static: every import statement of the unit's modules, wherever it sits in the file."""
    found = []
    for name, path in MODULES.items():
        if unit_of(name) == unit:
            found += violations(name, [(t, f"line {line}") for t, line in imported_modules(name, path)])
    assert found == [], "\n".join(found)


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """Each cycle a depth-first walk of ``edges`` closes, as ``a -> b -> a`` (empty: acyclic)."""
    found, state = [], {}

    def visit(u: str, stack: list[str]) -> None:
        state[u] = "open"
        for v in sorted(edges.get(u, ())):
            if state.get(v) == "open":
                found.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif v not in state:
                visit(v, stack + [v])
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            visit(u, [u])
    return found


def module_import_graph() -> dict[str, set[str]]:
    """Each module -> the package modules importing it runs first: every import statement, at the
    top or inside a function, plus the packages above the imported module that are not above the
    importer (Python runs a package's ``__init__`` before its submodules)."""
    def packages_above(module: str) -> set[str]:
        parts = module.split(".")
        return {".".join(parts[:i]) for i in range(2, len(parts))}  # the root runs first anyway

    edges = {}
    for name, path in MODULES.items():
        targets = set()
        for target, _ in imported_modules(name, path):
            targets |= {target, *(packages_above(target) - packages_above(name))}
        edges[name] = {t for t in targets if t != name and t in MODULES}
    return edges


def test_the_cycle_finder_names_each_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d", "a"}}) == ["a -> b -> c -> a", "d -> d"]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_module_import_cycle_at_any_level():
    """Static, module by module, lazy imports included: a cycle only a function-level import
    closes still ties the modules together (e.g. io -> package root -> vocab -> io)."""
    edges = module_import_graph()
    assert {"layout2img.config", "layout2img.data.shapes"} <= edges["layout2img.data.build"]  # top-level, lazy
    assert {"layout2img.training.runs", "layout2img.training"} <= edges["layout2img.evaluation"]  # and its package
    found = cycles(edges)
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_top_level_units_import_each_other_without_cycles():
    """Static, between packages and top-level modules: a cycle within a layer is still a knot."""
    edges: dict[str, set[str]] = {u: set() for u in UNITS}
    for name, path in MODULES.items():
        for target, _ in imported_modules(name, path):
            if unit_of(name) and unit_of(target) and unit_of(target) != unit_of(name):
                edges[unit_of(name)].add(unit_of(target))
    found = cycles(edges)
    assert found == [], "\n".join(found)


def _loaded_after_import(modules: list[str]) -> list[str]:
    """The layout2img modules in sys.modules after importing ``modules`` in a fresh interpreter."""
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m == {ROOT!r} or m.startswith({ROOT + '.'!r}))))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=PACKAGE_DIR.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_root_package_loads_only_base_modules():
    loaded = _loaded_after_import([ROOT])
    assert [m for m in loaded if m != ROOT and layer_of(m) != 0] == []


# A top-layer unit cannot load anything above itself, so only the lower units start an interpreter.
@pytest.mark.parametrize("unit", [u for u in UNITS if layer_of(u) < len(LAYERS) - 1])
def test_importing_a_unit_in_a_fresh_interpreter_loads_no_higher_layer(unit):
    """Dynamic: the unit and all its submodules imported, then every loaded module's layer checked."""
    loaded = _loaded_after_import([m for m in MODULES if unit_of(m) == unit])
    found = violations(unit, [(m, "(found in sys.modules)") for m in loaded if m != unit])
    assert found == [], "\n".join(found)
