"""The shape of the code: no import cycles, training never imports codegen, modules small enough to read.

The import graph is read with `ast` from every import statement, also those inside functions (an import moved
into a function to dodge a cycle is still a cycle). A module is named both as the installed `siq.x.y` and as the
repository path `x.y` (the repository root is the package `siq`). `from pkg import name` depends on `pkg`
itself as well as on `pkg.name` when that is a module, as Python runs `pkg/__init__.py` first.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("training", "codegen", "firmware_template")
MAX_LINES = 400
EXEMPTION = "one cohesive"  # a longer module says why in the first line of its docstring


def project_modules(root: Path) -> dict[str, Path]:
    """{"siq.training.quant": path, ...} for the package root, its top-level modules and the packages' modules."""
    paths = [path for path in root.glob("*.py")]
    for package in PACKAGES:
        paths += [path for path in (root / package).rglob("*.py") if "__pycache__" not in path.parts]
    modules = {}
    for path in paths:
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(["siq", *parts])] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (the longest matching prefix), None outside the project."""
    top = name.split(".")[0]
    if top != "siq":
        if "siq." + top not in modules:
            return None  # torch, numpy, ...
        name = "siq." + name  # the repository-relative spelling: training.quant
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_names(path: Path, module: str, is_package: bool) -> set[str]:
    """Every module name an import statement of the file refers to, absolute (relative imports resolved)."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: {project modules it imports}} over the project's own modules."""
    modules = project_modules(root)
    graph = {}
    for module, path in modules.items():
        edges = {_resolve(name, modules) for name in imported_names(path, module, path.name == "__init__.py")}
        graph[module] = {target for target in edges if target is not None and target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph(ROOT)
    assert {"siq", "siq.codegen.api", "siq.codegen.cli.main", "siq.codegen.target.build"} <= set(graph)
    assert "siq.codegen.target.build" in graph["siq.codegen.target.qemu"]  # the graph does see imports
    found = cycles(graph)
    for component in found:
        print("import cycle: " + " <-> ".join(component))
    assert not found, f"{len(found)} import cycle(s): " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_sees_imports_inside_functions(tmp_path):
    """A cycle hidden behind an import inside a function is still found, in either spelling of the module."""
    (tmp_path / "codegen").mkdir()
    (tmp_path / "codegen" / "__init__.py").write_text("")
    (tmp_path / "codegen" / "a.py").write_text("from siq.codegen.b import g\n\ndef f():\n    return g()\n")
    (tmp_path / "codegen" / "b.py").write_text("def g():\n    from codegen.a import f\n    return f\n")
    (tmp_path / "codegen" / "c.py").write_text("from .a import f\n")
    assert cycles(import_graph(tmp_path)) == [["siq.codegen.a", "siq.codegen.b"]]


def test_training_never_imports_codegen():
    """The arrows point one way: codegen lowers and emits what training produced, never the reverse."""
    graph = import_graph(ROOT)
    wrong = {module: sorted(t for t in targets if t.startswith("siq.codegen"))
             for module, targets in graph.items() if module.startswith("siq.training")}
    assert not {module: targets for module, targets in wrong.items() if targets}


def test_no_module_is_longer_than_400_lines_unless_it_says_why():
    too_long = []
    for module, path in sorted(project_modules(ROOT).items()):
        lines = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and EXEMPTION not in doc.split("\n", 1)[0]:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not too_long, f"modules over {MAX_LINES} lines whose docstring does not say they are {EXEMPTION}: " \
                         + ", ".join(too_long)


def test_the_command_line_starts_without_the_libraries_only_some_commands_use():
    """scikit-learn (k-means) and matplotlib (report figures) took 1.6 of the 2.9 s that every `siq` command
    spent importing before it read its arguments: they are imported where they are used."""
    probe = "import sys, siq.codegen.cli; print(sorted({'sklearn', 'matplotlib', 'scipy'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
