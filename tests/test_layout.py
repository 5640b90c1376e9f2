"""Issue 21: the wall in the layout. What runs inside a worker lives in `jobs`, the recording of a forward pass in
`trace`, and `project` is plain data: it and `jobs` import no torch, and no modules of the package import each
other in a circle but the registry and the reference models (README, "Layout")."""

import ast
import subprocess
import sys
from pathlib import Path

import mnist_arch

PACKAGE = Path(mnist_arch.__file__).resolve().parent


def test_the_table_reader_and_the_parent_side_of_the_wall_import_no_torch():
    script = ("import sys; import mnist_arch.project, mnist_arch.jobs, mnist_arch.loader, mnist_arch.runs, "
              "mnist_arch.isolate; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, name: str, modules: set[str]) -> set[str]:
    """The package's modules `name` imports anywhere (module level or inside a function), but for imports
    under `if TYPE_CHECKING:`, which never run."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in graph:
        if v not in index:
            connect(v)
    return components


def test_no_import_circle_but_the_registrys():
    files = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, set(files))
             for name, path in files.items()}
    assert graph["mnist_arch.project"] >= {"mnist_arch.loader", "mnist_arch.spec"}  # the reader sees the imports
    cycles = _cycles(graph)
    # the registry imports the references lazily (to register them); each reference registers itself with it
    registry = {"mnist_arch.registry", "mnist_arch.models", *(m for m in files if m.startswith("mnist_arch.models."))}
    assert cycles == [registry], cycles


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []
