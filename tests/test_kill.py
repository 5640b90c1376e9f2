"""Issue 29: no worker outlives its judge. Each command runs as a process of its own, in a session of its own
(so a signal reaches its PID alone, not a process group), with a model that starts processes and a thread
and then hangs or trains (tests/user_models/hostile/leaves_processes.py). Once the model's processes run,
the process tree below the command is recorded from /proc (the resource tracker, the fork server, the
worker, the model's `sleep`s, whose pids the model writes down: one has left the worker's session and
been orphaned, so only a subreaper keeps it below the worker), the command gets
SIGKILL, SIGTERM or SIGINT, and within 2 s none of the recorded processes may run (a zombie that nobody
reaps has ended). The same for pytest under xdist (the models run in its workers), and for `diff`, whose
base side is a `check` of its own, a child process that is not a worker."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

if not Path("/proc/self/stat").exists():
    pytest.skip("walks the process tree in /proc (Linux)", allow_module_level=True)

MODELS = Path(__file__).resolve().parent / "user_models" / "hostile" / "leaves_processes.py"
EXE = Path(sys.executable).parent / "mnist-arch"
SLEEP = b"sleep\x001000\x00"

PYPROJECT = """
[tool.mnist-arch.models.{name}]
model = "nets.py:{attr}"
{train}"""
TRAIN = """[tool.mnist-arch.models.{name}.train]
min_accuracy = 0.1
loss = "cross_entropy"
batch_size = 7
train_subset = 700
"""


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, parent, start time) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    except OSError:
        return None
    return fields[0].decode(), int(fields[1]), fields[19].decode()


def _tree(root: int) -> dict[int, tuple[int, bytes, str]]:
    """`root` and every live process below it: pid -> (depth below root, command line, start time)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        stat = _stat(int(entry)) if entry.isdigit() else None
        if stat and stat[0] not in "ZX":
            children.setdefault(stat[1], []).append(int(entry))
    tree, todo = {}, [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        stat = _stat(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if stat:
            tree[pid] = (depth, cmdline, stat[2])
            todo += [(child, depth + 1) for child in children.get(pid, ())]
    return tree


def _clean_up(proc: subprocess.Popen, tree: dict[int, tuple[int, bytes, str]], *files) -> None:
    """After a case, pass or fail: kill whatever of the recorded tree failed to end, and the command."""
    for pid in _running(tree):
        os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for file in files:
        file.close()


def _running(tree: dict[int, tuple[int, bytes, str]], deepest: int = 0) -> dict[int, bytes]:
    """The recorded processes at least `deepest` below the command that still run (the same start time:
    not a new process under a reused pid)."""
    left = {}
    for pid, (depth, cmdline, started) in tree.items():
        stat = _stat(pid)
        if depth >= deepest and stat and stat[0] not in "ZX" and stat[2] == started:
            left[pid] = cmdline
    return left


def _gone_within(seconds: float, tree: dict, deepest: int = 0) -> dict[int, bytes]:
    """What of `tree` still runs after waiting up to `seconds` for it to end."""
    deadline = time.monotonic() + seconds
    while _running(tree, deepest) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _running(tree, deepest)


def _states(pids: dict[int, bytes]) -> dict[int, str]:
    """What a failure shows of the processes left: command line, state, parent."""
    states = {}
    for pid, cmdline in pids.items():
        stat, words = _stat(pid), cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
        states[pid] = f"{words} state {stat and stat[0]} parent {stat and stat[1]}"
    return states


def _project(tmp_path: Path, train: bool) -> Path:
    """A project declaring the model that trains, or two that hang (judged at once, two workers)."""
    (tmp_path / "nets.py").write_text(MODELS.read_text())
    (tmp_path / "pyproject.toml").write_text(
        PYPROJECT.format(name="subject", attr="SpawnsAndTrains", train=TRAIN.format(name="subject")) if train else
        PYPROJECT.format(name="subject", attr="SpawnsAndHangs", train="")
        + PYPROJECT.format(name="other", attr="SpawnsAndHangs", train=""))
    return tmp_path


# pytest's session-finish hooks run after Ctrl-C too: hypothesis's first imports hypothesis (seconds on a busy
# 2-core runner), which is no part of what is tested here.
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-q", "pyproject.toml"]


def _argv(command: str, mnist: Path | None) -> list[str]:
    target = "nets.py:SpawnsAndHangs"
    return {
        "check": [str(EXE), "check", "--model", target, "--model", target, "--timeout", "600"],  # two workers
        "summary": [str(EXE), "summary", target, "--timeout", "600"],
        "bench": [str(EXE), "bench", "--model", target, "--paths", "eager", "--batch-sizes", "1", "--min-time",
                  "0.01", "--timeout", "600"],
        "train": [str(EXE), "train", "subject", "--data-dir", str(mnist), "--timeout", "600"],
        "pytest": [*PYTEST],
        "pytest-xdist": [*PYTEST, "-n", "2"],  # each xdist worker judges a model
        "pytest-train": [*PYTEST, "--mnist-arch-data", str(mnist)],
    }[command]


CLI = ("check", "summary", "bench", "train")
# The command, with SIGINT as a terminal's foreground job has it: not ignored, as a shell (or a test runner's
# worker) may have it for a process it starts in the background. exec keeps the PID.
SIGINT_AS_IN_A_TERMINAL = [sys.executable, "-c", "import os, signal, sys; "
                           "signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"]

# The exit status and the line each stop leaves: ours in the CLI, pytest's own under pytest.
CLI_STOPPED = {signal.SIGKILL: (-9, ""), signal.SIGTERM: (143, "mnist-arch: stopped by SIGTERM"),
               signal.SIGINT: (130, "mnist-arch: stopped by SIGINT")}
PYTEST_STOPPED = {signal.SIGKILL: (-9, ""), signal.SIGTERM: (143, "Stopped: pytest stopped by SIGTERM"),
                  signal.SIGINT: (2, "KeyboardInterrupt")}


@pytest.mark.parametrize("command, sig", [
    ("check", signal.SIGKILL), ("check", signal.SIGTERM), ("check", signal.SIGINT),
    ("train", signal.SIGKILL), ("train", signal.SIGTERM), ("train", signal.SIGINT),
    ("summary", signal.SIGTERM), ("bench", signal.SIGINT),
    ("pytest", signal.SIGKILL), ("pytest", signal.SIGTERM), ("pytest", signal.SIGINT),
    ("pytest-train", signal.SIGINT),
    ("pytest-xdist", signal.SIGKILL), ("pytest-xdist", signal.SIGTERM), ("pytest-xdist", signal.SIGINT),
])
def test_a_killed_command_leaves_nothing_running(tmp_path, request, command, sig):
    trains = command.endswith("train")
    mnist = request.getfixturevalue("mnist_root") if trains else None
    folder = _project(tmp_path, trains)
    sleeps = 4 if command in ("check", "pytest", "pytest-xdist") else 2  # two per worker
    out, err = (folder / "out.txt").open("w+"), (folder / "err.txt").open("w+")
    pidfile = folder / "pids.txt"
    env = {**os.environ, "MNIST_ARCH_TEST_PIDFILE": str(pidfile)}
    proc = subprocess.Popen([*SIGINT_AS_IN_A_TERMINAL, *_argv(command, mnist)], cwd=folder, stdout=out, stderr=err,
                            start_new_session=True, env=env)
    tree: dict[int, tuple[int, bytes, str]] = {}
    try:
        end = time.monotonic() + 180
        while not pidfile.exists() or pidfile.read_text().count("\n") < sleeps:  # the models run
            assert proc.poll() is None and time.monotonic() < end, (
                f"{command} ended (or never ran the model): {proc.returncode}\n{Path(out.name).read_text()}"
                f"{Path(err.name).read_text()}")
            time.sleep(0.2)
        tree = _tree(proc.pid)
        for pid in map(int, pidfile.read_text().split()):  # the orphan is below the worker only as its subreaper
            stat = _stat(pid)
            tree[pid] = (3, SLEEP, stat[2] if stat else "")
        # the command, resource tracker, fork server, the workers and the sleeps
        assert len(tree) >= 3 + sleeps // 2 + sleeps and sum(depth == 1 for depth, _, _ in tree.values()) == 2, tree
        os.kill(proc.pid, sig)
        # The worker and all below it (the model's processes): 2 s after the signal. The command too, where it
        # is ours; pytest's own Ctrl-C handling (its report, its plugins' hooks) takes its own time, and the
        # fork server and resource tracker may wait for it, 2 s at most after it has ended. Under xdist, the
        # workers (pytest processes) are one level deeper, and so are the models' workers.
        left = _gone_within(2, tree, deepest=0 if command in CLI else 3 if command == "pytest-xdist" else 2)
        assert not left, f"still running 2 s after {sig.name} to {command}: {_states(left)}; recorded: {tree}"
        proc.wait(30)
        left = _gone_within(2, tree)
        assert not left, f"still running 2 s after {command} ended by {sig.name}: {_states(left)}"
        code, line = (CLI_STOPPED if command in CLI else PYTEST_STOPPED)[sig]
        assert proc.returncode == code
        said = Path(out.name).read_text() + Path(err.name).read_text()
        assert line in said and "Traceback" not in said, said
    finally:
        _clean_up(proc, tree, out, err)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=test@example.com", "-c", "user.name=test", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_killed_diff_leaves_its_base_check_running_nothing(tmp_path, sig):
    """`diff`'s base side is a `check` of its own, a child process and not a worker: at a base whose model hangs,
    it ends with `diff` however `diff` ends, with its workers and what their models started. The working tree's
    model does not hang (the same class in eval mode), so `diff` waits for the base alone."""
    _project(tmp_path, train=False)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(name="subject", attr="SpawnsAndHangs", train=""))
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "nets.py", "pyproject.toml")
    _git(tmp_path, "commit", "-q", "-m", "base")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(name="subject", attr="SpawnsAndTrains", train=""))
    out, err = (tmp_path / "out.txt").open("w+"), (tmp_path / "err.txt").open("w+")
    pidfile = tmp_path / "pids.txt"
    env = {**os.environ, "MNIST_ARCH_TEST_PIDFILE": str(pidfile)}
    proc = subprocess.Popen([*SIGINT_AS_IN_A_TERMINAL, str(EXE), "diff", "--base", "HEAD", "--timeout", "600"],
                            cwd=tmp_path, stdout=out, stderr=err, start_new_session=True, env=env)
    tree: dict[int, tuple[int, bytes, str]] = {}
    try:
        end = time.monotonic() + 180
        while not pidfile.exists() or pidfile.read_text().count("\n") < 2:  # the base's model runs
            assert proc.poll() is None and time.monotonic() < end, (
                f"diff ended (or never ran the base's model): {proc.returncode}\n{Path(out.name).read_text()}"
                f"{Path(err.name).read_text()}")
            time.sleep(0.2)
        tree = _tree(proc.pid)
        for pid in map(int, pidfile.read_text().split()):
            stat = _stat(pid)
            tree[pid] = (4, SLEEP, stat[2] if stat else "")
        base = [pid for pid, (depth, cmdline, _) in tree.items() if depth == 1 and b"mnist_arch.cli\0check" in cmdline]
        # the base check, its resource tracker, fork server and worker, the sleeps
        assert len(base) == 1 and sum(depth >= 1 for depth, _, _ in tree.values()) >= 4 + 2, tree
        os.kill(proc.pid, sig)
        left = _gone_within(2, tree)
        assert not left, f"still running 2 s after {sig.name} to diff: {_states(left)}; recorded: {tree}"
        proc.wait(30)
        code, line = CLI_STOPPED[sig]
        assert proc.returncode == code
        said = Path(out.name).read_text() + Path(err.name).read_text()
        assert line in said and "Traceback" not in said, said
    finally:
        _clean_up(proc, tree, out, err)
        subprocess.run(["git", "worktree", "prune"], cwd=tmp_path, capture_output=True)
