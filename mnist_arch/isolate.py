"""The parent's side of the wall: it opens workers and reads what comes back. User models run behind the wall:
one child process per model, forked from a fork server that has already imported torch, the result coming
back on a pipe of ours. What runs in the child is `mnist_arch.channel` (its end of the pipe) and the jobs of
`mnist_arch.remote`; this module imports `channel` only to name the child's entry point.

Whatever the model's code does (prints, `sys.exit`, `os._exit`, an endless loop, a huge allocation,
modules of its own that shadow another model's) stays in its child: its stdout and stderr go to a file
that is shown only with an error, a timeout kills the child with every process below it and its process
group, and any way the child ends without sending a result becomes a `MnistArchError` in the parent naming
the model, the phase (import, build, forward, ...) and the limit. The verdict itself is computed in the
child by our code and sent back pickled on the pipe; the parent never runs the model.

Library code marks where it is with `channel.phase("build")`; in the parent (or in-process use) that is a no-op.

No worker outlives its judge (the process that opened it), however the judge ends; docs/stopping.md has
the details. On Linux, within about a second of the judge's death, SIGKILL included, every worker, the
fork server, the resource tracker and whatever a model started (threads, subprocesses, processes that left
the worker's process group or session) end:
- the fork server gets SIGTERM when the judge's thread that started it ends (`channel.guard_fork_server`), kills
  every process below it and ends; each worker and the server are child subreapers, so a model's orphaned
  processes are still below them (`kill_tree` walks /proc);
- each worker also watches the pipe only the judge holds and then kills all below it and itself
  (`channel._guard_worker`), and is SIGKILLed when the fork server ends;
- the resource tracker ends, its last writer gone.
A timeout, Ctrl-C or a stop signal in the judge kills a worker's tree the same way (`Worker.kill`,
`stop_all`). On macOS there is no PR_SET_PDEATHSIG nor subreaper, and no /proc: a worker still ends with its
judge (the watching thread) and takes its process group with it, but a model's process that left the group
(setsid) can outlive it. Windows has no fork server: mnist-arch does not run there.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnist_arch.channel import MEMORY_LIMIT_BYTES, serve
from mnist_arch.errors import MnistArchError, one_line
from mnist_arch.proc import PR_SET_PDEATHSIG, kill_tree, prctl

#: Seconds a model may spend in one phase (import, build, forward, ...) before it is stopped.
DEFAULT_TIMEOUT = 120.0

#: What each phase reads as in a message: "... exited the process with code 0 while being built".
PHASE_WORDS = {"start": "starting", "import": "being imported", "build": "being built",
               "forward": "running its forward pass", "train": "training", "bench": "being benchmarked"}

_START_LOCK = threading.Lock()
#: What the fork server imports before it forks any worker: torch and the engine (`mnist_arch._forkserver`),
#: and `torch._dynamo` (`mnist_arch._forkserver_training`) once `expect_training` has been called.
_PRELOAD = ["mnist_arch._forkserver"]


def expect_training() -> None:
    """Say, before the first worker of this process starts, that workers will train (or torch.compile).
    Every torch.optim optimizer imports `torch._dynamo` (about 1 s on the 2-core runner) in its
    constructor and its `step`; the fork server then imports it once, so that each training worker (one
    per seed, per plugin training item, per benchmarked model) does not import it again. One run pays the
    same second in the server instead of its worker. Called after the server has started, it changes
    nothing."""
    if "mnist_arch._forkserver_training" not in _PRELOAD:
        _PRELOAD.append("mnist_arch._forkserver_training")


def _context():
    ctx = multiprocessing.get_context("forkserver")
    # The fork server imports torch and the engine once; every worker is a cheap fork of it.
    ctx.set_forkserver_preload(list(_PRELOAD))
    return ctx


def ends_with_this_thread(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for `subprocess.Popen`, on Linux: the child gets `sig` when the thread that starts it ends
    (PR_SET_PDEATHSIG, kept across exec; the judge's death by SIGKILL included), and a child whose starter is
    already gone ends at once. Start it from a thread that lasts at least as long as the child should. None
    where there is no prctl (macOS). prctl is looked up here, in the parent: the forked child only calls it."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the starter died before prctl: nobody will send the signal
            os._exit(128 + int(sig))

    return preexec


def end_with_parent(sig: int = signal.SIGTERM) -> None:
    """This process gets `sig` when the thread of its parent that started it ends, on Linux (an xdist worker of
    a pytest run that was killed); at once if the parent is already gone. Nothing elsewhere (macOS)."""
    parent = os.getppid()
    prctl(PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)


_NO_EXIT = (" A model file must not call sys.exit(), exit() or os._exit(); guard script code with "
            "`if __name__ == \"__main__\":`.")



def _printed(path: str, limit: int = 1500) -> str:
    """What the model printed, as one line for a one-paragraph message ('' when nothing)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    if not text:
        return ""
    text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(text) > limit:
        text = "..." + text[-limit:]
    return f" The model printed: {text}"


_OPEN: set[Worker] = set()  # this process's workers not yet closed
_stopping = 0  # above 0 while this process is being stopped (`stop_all`): no worker starts
_SERVER_STARTS: tuple[int, queue.SimpleQueue] | None = None  # (this process, the starting thread's requests)


def _start_server() -> None:
    """Start the fork server unless it runs, from a thread that lasts as long as this process: the server ends
    with the thread that started it (`guard_fork_server`), which must not be a pool's thread that ends first."""
    global _SERVER_STARTS
    if _SERVER_STARTS is None or _SERVER_STARTS[0] != os.getpid():
        _SERVER_STARTS = (os.getpid(), queue.SimpleQueue())
        threading.Thread(target=_server_starter, args=(_SERVER_STARTS[1],), daemon=True,
                         name="mnist-arch-fork-server").start()
    done: queue.SimpleQueue = queue.SimpleQueue()
    _SERVER_STARTS[1].put(done)
    error = done.get()
    if error is not None:
        raise error


def _server_starter(requests: queue.SimpleQueue) -> None:
    from multiprocessing import forkserver

    while True:
        done = requests.get()
        try:
            forkserver.ensure_running()
            done.put(None)
        except BaseException as exc:  # noqa: BLE001 (raised in the thread that asked)
            done.put(exc)


def stop_all() -> None:
    """Kill every worker this process has open, with whatever its model started, and start no other from now
    on: the process is being stopped (a stop signal, Ctrl-C). A thread waiting on a killed worker gets a
    MnistArchError at once. Takes no lock: a signal handler may call it."""
    global _stopping
    _stopping += 1
    for worker in list(_OPEN):
        worker.kill()


class Stopped(KeyboardInterrupt):
    """Raised in a face's main thread by a stop signal (SIGTERM, SIGINT) after `stop_all`: a KeyboardInterrupt, so
    that code which cleans up on Ctrl-C (tune marks its running trials failed, pytest runs its teardown and
    summary) does so for either signal. `signum` is the signal; the exit code is 128 + it."""

    def __init__(self, signum: int, text: str = "") -> None:
        super().__init__(text or f"stopped by signal {signum}")
        self.signum = signum


def is_stopping() -> bool:
    """Whether this process is being stopped (`stop_all`): a caller's loop starts nothing new."""
    return _stopping > 0


@contextmanager
def stopping() -> Iterator[None]:
    """`stop_all` while it lasts (then workers may start again): for a caller whose threads must not wait
    for their models when it is interrupted (`jobs.judge_all`)."""
    global _stopping
    stop_all()
    try:
        yield
    finally:
        _stopping -= 1


class Worker:
    """One isolated child for one model. `call(func, *args)` runs a module-level function there and
    returns its result; the child keeps its state (a loaded model) between calls."""

    def __init__(self, label: str, timeout: float | None = DEFAULT_TIMEOUT, *, cwd: str | Path | None = None,
                 extra_path: list[str] | None = None, threads: int | None = None,
                 on_note: Callable[[str], None] | None = None) -> None:
        self.label, self.timeout, self.on_note = label, timeout, on_note
        if _stopping:
            raise MnistArchError(f"Model {label}: not run: this process is being stopped.")
        handle, self._output = tempfile.mkstemp(prefix="mnist-arch-model-", suffix=".log")
        os.close(handle)
        ctx = _context()
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(
            target=serve, daemon=True,
            args=(child_conn, self._output, str(cwd or os.getcwd()), list(extra_path or []), threads))
        self.phase = "start"
        self._closed = False
        with _START_LOCK:
            # multiprocessing would re-run the caller's main script in the fork server and in each child
            # (unguarded script code, a second time, in someone else's process): show it none.
            main = sys.modules["__main__"]
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                _start_server()
                self._process.start()
                _OPEN.add(self)
            finally:
                sys.modules["__main__"] = main
        child_conn.close()
        if _stopping:  # after _OPEN.add: a stop_all that did not see this worker is seen here
            self.close(kill=True)
            raise MnistArchError(f"Model {label}: not run: this process is being stopped.")

    def call(self, func: Callable[..., Any] | str, *args: Any, timeout: float | None = None) -> Any:
        """`func(*args)` in the worker (a job of `mnist_arch.remote` by name, as the parent's side sends them, or a
        module-level function), its result; what the model did instead, as a MnistArchError."""
        limit = self.timeout if timeout is None else timeout
        try:
            self._conn.send((func, args))
        except (BrokenPipeError, OSError):
            self._died()
        started = time.monotonic()
        while True:
            # The fork server's start (importing torch) is ours, not the model's: it gets the default limit.
            allowed = max(limit, DEFAULT_TIMEOUT) if limit is not None and self.phase == "start" else limit
            wait = None if allowed is None else max(0.0, allowed - (time.monotonic() - started))
            wait = None if wait is None else min(wait, 3600.0)  # no OS wait is unbounded; poll again after
            try:
                ready = self._conn.poll(wait)
            except (EOFError, OSError):
                ready = True
            if not ready and wait is not None and time.monotonic() - started < allowed:
                continue  # a long limit, waited for in slices
            if not ready:
                self._fail(f"stopped at the time limit of {limit:g} s",
                           " Raise the limit with --timeout SECONDS (or timeout = N in [tool.mnist-arch]) if "
                           "the model is merely slow.")
            try:
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                self._died()
            if kind == "phase":
                self.phase, started = value, time.monotonic()  # the limit applies to each phase
            elif kind == "note":
                if self.on_note:
                    self.on_note(value)
            elif kind == "ok":
                return value
            elif kind == "error":
                raise MnistArchError(one_line(value) + _printed(self._output))
            elif kind == "exit":
                self._fail(f"the model's code exited the process with code {value}", _NO_EXIT)
            elif kind == "memory":
                self._fail(f"ran out of memory: it may use at most {MEMORY_LIMIT_BYTES / 2**30:g} GiB beyond "
                           "PyTorch itself", "")
            else:  # "raised": a BaseException that is not an error (KeyboardInterrupt, GeneratorExit, ...)
                self._fail(f"the model's code raised {value.rstrip(': ')}", "")

    def _died(self):
        self._process.join(5)
        code = self._process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            self._fail(f"the worker running the model's code was killed by {name} (a crash in native code, or "
                       "the process was killed), before a result came back,", "")
        self._fail(f"the model's code exited the process with code {code}, before a result came back,", _NO_EXIT)

    def _fail(self, what: str, advice: str):
        printed = _printed(self._output)
        self.close(kill=True)
        raise MnistArchError(f"Model {self.label}: {what} while {PHASE_WORDS.get(self.phase, self.phase)} "
                             f"(phase: {self.phase}).{advice}{printed}")

    def kill(self) -> None:
        """SIGKILL the worker and every process its model started, now, from any thread or a signal handler;
        a thread waiting in `call` then gets the MnistArchError of a killed worker, and `close` cleans up."""
        kill_tree(self._process.pid)

    def close(self, kill: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        if not self._process.is_alive():
            pass  # gone (its pid may be another process's by now): only its group, below
        elif kill:
            self.kill()
        else:
            try:
                self._conn.send(None)  # the worker kills what its model started, then exits
                self._process.join(5)
            except (BrokenPipeError, OSError):
                pass
        try:  # the whole group, alive or not: threads, subprocesses and forks the model left behind
            os.killpg(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5)
        self._conn.close()
        try:
            os.unlink(self._output)
        except OSError:
            pass

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: Any) -> None:
        self.close(kill=kind is not None)  # interrupted (Ctrl-C, a stop signal): no waiting for the model


def run_isolated(label: str, func: Callable[..., Any] | str, *args: Any, timeout: float | None = DEFAULT_TIMEOUT,
                 extra_path: list[str] | None = None) -> Any:
    """`func(*args)` (a function, or a job of `mnist_arch.remote` by name) in a fresh worker child, with
    `extra_path` importable there; its result, or a MnistArchError."""
    with Worker(label, timeout, extra_path=extra_path) as w:
        return w.call(func, *args)
