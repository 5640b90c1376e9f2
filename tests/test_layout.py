"""Issues 21 and 26: the wall in the layout (README, "Layout"). Every module of the package is on one side of it:
the worker's (what runs in a worker child, torch included), the parent's (what opens workers and collects what
comes back), or shared plain data both sides read. The worker's side imports nothing of the parent's; the faces
(the command line, the pytest plugin) import nothing of the worker's side and no torch in their own process; no
modules import each other in a circle but the registry and the reference models."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mnist_arch

PACKAGE = Path(mnist_arch.__file__).resolve().parent


#: What runs only in a worker child (`channel` is its end of the pipe, `remote` the jobs it runs).
WORKER = {"channel", "remote", "loader", "trace", "head", "receptive", "field_rules", "checks", "features", "data",
          "train", "machine", "train_step", "checkpoint", "bench", "bench_prepare", "bench_timing", "plots",
          "layer_table", "_forkserver", "_forkserver_training"}
#: What opens workers and collects what comes back, and the faces over it.
PARENT = {"isolate", "jobs", "project", "cli", "cli_parser", "pytest_plugin", "diff", "diff_base", "diff_render",
          "gate", "init", "pyproject_table", "workflows", "existing_tests", "comment", "badge", "git", "tune",
          "tune_space", "tune_storage", "tune_trial", "tune_report", "tune_write"}
#: Plain data and helpers both sides read: no torch at import, nothing of either side.
SHARED = {"", "errors", "spec", "runs", "paths", "work", "proc", "report", "chart", "roofline", "bench_results",
          "layer_rows", "fields", "check_messages"}
#: Our reference architectures: the registry imports them lazily to register them; each imports the registry.
REFERENCES = {"registry", "models"}
#: The faces: they parse, call the parent's side and print.
FACES = {"cli", "cli_parser", "pytest_plugin"}
#: The one door: the parent names the worker's entry point (`channel.serve`) to start a child with it.
DOOR = {("isolate", "channel")}


def _side(module: str) -> str:
    name = module.removeprefix("mnist_arch").removeprefix(".")
    top = name.split(".")[0]
    for side, members in (("worker", WORKER), ("parent", PARENT), ("shared", SHARED), ("references", REFERENCES)):
        if name in members or top in members:
            return side
    raise AssertionError(f"mnist_arch.{name} is on no side of the wall: add it to one set in tests/test_layout.py")


def _graph() -> dict[str, set[str]]:
    files = {_module(path): path for path in PACKAGE.rglob("*.py")}
    return {name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, set(files))
            for name, path in files.items()}


def _short(module: str) -> str:
    return module.removeprefix("mnist_arch").removeprefix(".")


def test_every_module_is_on_one_side_and_the_worker_side_imports_nothing_of_the_parents():
    graph = _graph()
    crossings = [(a, b) for a, targets in graph.items() for b in targets
                 if _side(a) in ("worker", "shared", "references") and _side(b) == "parent"]
    assert crossings == []
    shared = [(a, b) for a, targets in graph.items() for b in targets
              if _side(a) == "shared" and _side(b) == "worker"]
    assert shared == []


def test_the_faces_reach_the_worker_side_only_through_the_wall():
    graph = _graph()
    seen, todo, paths = set(), [f"mnist_arch.{face}" for face in FACES], {}
    while todo:  # every module a face imports, and what those import, but past the door
        module = todo.pop()
        for target in graph[module]:
            if (_short(module), _short(target)) in DOOR or target in seen:
                continue
            seen.add(target)
            paths[target] = module
            todo.append(target)
    reached = sorted(f"{_short(paths[m])} -> {_short(m)}" for m in seen if _side(m) == "worker")
    assert reached == []


def test_the_door_is_open_and_the_checks_above_can_fail():
    graph = _graph()
    assert "mnist_arch.channel" in graph["mnist_arch.isolate"]  # the door is used, so the exemption is not stale
    assert _side("mnist_arch.train") == "worker" and _side("mnist_arch.jobs") == "parent"
    assert _side("mnist_arch.models.micro_cnn") == "references"


def test_the_table_reader_and_the_parent_side_of_the_wall_import_no_torch():
    modules = sorted(f"mnist_arch.{m}" for m in PARENT | SHARED - {""})
    script = (f"import sys; import {', '.join(modules)}; "
              "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
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


COMMANDS = [["check", "micro_cnn"], ["summary", "micro_cnn"],
            ["check", "--model", "small_net.py:Net", "--format", "json"],
            ["bench", "micro_cnn", "--batch-sizes", "1", "--min-time", "0.01", "--paths", "eager", "--format", "json"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_command_runs_the_model_behind_the_wall_and_never_imports_torch_itself(command, user_models):
    script = ("import sys; from mnist_arch.cli import main; code = main(sys.argv[1:]); "
              "print('torch in the command line:', 'torch' in sys.modules, file=sys.stderr); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, timeout=600,
                          cwd=user_models)
    assert proc.returncode == 0, proc.stderr
    assert "torch in the command line: False" in proc.stderr, proc.stderr


def test_no_import_circle_but_the_registrys():
    graph = _graph()
    files = set(graph)
    assert graph["mnist_arch.project"] >= {"mnist_arch.paths", "mnist_arch.spec"}  # the reader sees the imports
    cycles = _cycles(graph)
    # the registry imports the references lazily (to register them); each reference registers itself with it
    registry = {"mnist_arch.registry", "mnist_arch.models", *(m for m in files if m.startswith("mnist_arch.models."))}
    assert cycles == [registry], cycles


#: The commands beside the checks, each in its own files; they may share the helpers (git, the badge) but never
#: import one another (`init` once imported `diff` for git and the badge).
COMMAND_FILES = {"diff": {"diff", "diff_base", "diff_render", "gate"},
                 "init": {"init", "pyproject_table", "workflows", "existing_tests"},
                 "tune": {"tune", "tune_space", "tune_storage", "tune_trial", "tune_report", "tune_write"},
                 "comment": {"comment"}}


def test_command_modules_do_not_import_each_other():
    graph = _graph()
    command = {f"mnist_arch.{m}": name for name, files in COMMAND_FILES.items() for m in files}
    assert set(command) <= set(graph)  # every file named exists
    across = sorted(f"{_short(a)} -> {_short(b)}" for a, targets in graph.items() for b in targets
                    if a in command and b in command and command[a] != command[b])
    assert across == []


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The parameters a caller may pass, self and cls not counted; a `**kwargs` takes any number (counted as 99)."""
    args = node.args
    named = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if named and named[0].arg in ("self", "cls"):
        named = named[1:]
    return len(named) + (1 if args.vararg else 0) + (99 if args.kwarg else 0)


def test_no_function_takes_more_than_eight_parameters():
    long = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({_parameters(node)})"
            for path, node in _functions() if _parameters(node) > 8]
    assert long == []


def test_the_parameter_count_counts_what_it_should():
    tree = ast.parse("def f(self, a, *b, c, **d): pass\ndef g(a, b, /, c): pass\nclass K:\n def h(cls, x): pass")
    counts = {n.name: _parameters(n) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert counts == {"f": 1 + 1 + 1 + 99, "g": 3, "h": 1}


def test_no_module_is_over_500_lines():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in sorted(PACKAGE.rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 500}
    assert long == {}


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []
