"""The worker's end of the wall: what runs in a worker child, and only there.

`serve` is the child's life: it drops the fork server's ways out and watches its judge (no worker outlives
the process that opened it: docs/stopping.md), sends what the model prints to a file, limits its memory, then
runs the jobs the parent sends (a function of `mnist_arch.remote` by name, with its request) and sends each
result back pickled, or what went wrong as one bounded line. Library code marks where it is with
`phase("build")` and sends progress with `note(...)`; outside a worker both are no-ops. The fork server's own
guard (`guard_fork_server`) lives here too: the server is the workers' template.

Imports nothing of the parent's side (`mnist_arch.isolate` opens workers and reads what comes back) and
torch only in the child.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from mnist_arch.errors import MnistArchError, one_line
from mnist_arch.proc import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, kill_tree, prctl

#: Address space a model may add on top of what the worker had when it started (torch itself maps ~3 GiB).
MEMORY_LIMIT_BYTES = 8 * 2**30

_conn = None  # in a worker child: the pipe to the parent
#: The CPU threads torch takes by default in a fresh process, recorded by the fork server before it takes one
#: (`mnist_arch._forkserver`); every worker forked from it inherits the record. None outside a worker.
TORCH_THREADS: int | None = None


def phase(name: str) -> None:
    """Tell the parent which phase the child is in (for the message when it hangs or exits)."""
    if _conn is not None:
        _conn.send(("phase", name))


def note(text: object) -> None:
    """A progress line (or a picklable record) for the parent (e.g. one per training epoch); nothing when not in
    a worker."""
    if _conn is not None:
        _conn.send(("note", text))


def _memory_limit() -> None:
    import torch

    if torch.cuda.is_available():  # CUDA reserves far more address space than it uses: no limit there
        return
    try:
        import resource

        with open("/proc/self/status", encoding="ascii") as status:
            size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_LIMIT_BYTES, resource.RLIM_INFINITY))
    except (ImportError, OSError, ValueError, StopIteration):  # not Linux: no limit
        pass


def guard_fork_server() -> None:
    """The fork server, first thing (`mnist_arch._forkserver`), on Linux: when the judge's thread that started
    it ends (PR_SET_PDEATHSIG; `_start_server` starts it from a thread that lasts as long as the judge), or
    when the judge's end of its "alive" pipe closes, it kills every process below it, then ends. It is a
    child subreaper, so what the model of a worker that died left running is still below it. Its workers
    take none of this with them (`_guard_worker`)."""
    import atexit
    import warnings

    signal.signal(signal.SIGTERM, _end_fork_server)
    atexit.register(kill_tree, os.getpid(), False)
    # an orphan it reaps as a subreaper is no worker of multiprocessing's: not worth a warning on the judge's stderr
    warnings.filterwarnings("ignore", "forkserver: waitpid returned unexpected pid")
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _end_fork_server(_signum, _frame) -> None:
    kill_tree(os.getpid(), itself=False)
    os._exit(0)


def _guard_worker() -> None:
    """A worker, first thing: make sure it ends with its judge, whatever the model does.

    multiprocessing hands each worker the write end of the fork server's "alive" pipe, so the server (and
    with it every worker) outlived a judge killed with SIGKILL: the worker drops it. On Linux it is killed
    when the fork server ends (which kills it first, with all below it, unless the server itself was
    SIGKILLed), and it becomes a child subreaper, so that whatever its model starts stays below it. A thread
    waits for the pipe that only the judge holds (`multiprocessing.parent_process().sentinel`) to close,
    then kills all below the worker and the worker (on macOS too, where the rest does not exist)."""
    import atexit
    from multiprocessing import forkserver, parent_process, resource_tracker

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the fork server's ways out
    atexit.unregister(kill_tree)
    server = forkserver._forkserver  # multiprocessing's private state: looked up with care
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    tracker = getattr(getattr(resource_tracker, "_resource_tracker", None), "_fd", None)
    if tracker is not None:
        try:
            os.set_inheritable(tracker, False)  # a program the model runs must not keep the tracker alive
        except OSError:
            pass
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # with the fork server, should it be killed
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    judge = parent_process()
    if judge is not None:
        threading.Thread(target=_watch_judge, args=(judge.sentinel,), daemon=True,
                         name="mnist-arch-judge-watch").start()


def _watch_judge(sentinel: int) -> None:
    """In a worker: once the judge has died (or dropped the worker), kill the worker and all below it."""
    from multiprocessing.connection import wait

    try:
        wait([sentinel])
    except OSError:  # the model closed the descriptor (and with it our pipe): nothing left to watch
        return
    kill_tree(os.getpid())


def _has_children() -> bool:
    """Whether this process has a child, live or not (then something may be below it); True where unknown."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (AttributeError, OSError):
        pass
    return True


def serve(conn, output_path: str, cwd: str, extra_path: list[str], threads: int | None) -> None:
    """The worker child: run requests until told to stop. Everything the model prints goes to a file."""
    global _conn
    _conn = conn
    os.setpgrp()  # its own process group, so a timeout also stops whatever the model started
    _guard_worker()
    out = os.open(output_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the child's life)
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(cwd)
    sys.path[:0] = [p for p in extra_path if p not in sys.path]
    _memory_limit()
    import torch

    torch.set_num_threads(threads or 1)  # one thread unless asked: small batches gain little from two
    while True:
        try:
            request = conn.recv()
            if request is not None:
                func, args = _job(*request)
        except (EOFError, OSError):  # the parent is gone: nobody to answer; end as when told to stop
            request = None
        except Exception as exc:  # our request, not the model's code: it did not arrive whole, or names no job
            _flush()
            conn.send(("error", f"mnist-arch's own set-up failed, not the model's code: the worker could not take "
                                f"its job ({type(exc).__name__}: {one_line(exc, 500)}). The command line and the "
                                "worker may come from two versions of mnist-arch (reinstalled while it ran?)."))
            continue
        if request is None:
            _flush()
            if _has_children():
                kill_tree(os.getpid(), itself=False)  # what the model started, in any process group
            os._exit(0)  # now: no waiting for threads the model left running (the parent kills the group)
        try:
            reply = ("ok", func(*args))
        except MnistArchError as exc:
            reply = ("error", one_line(exc))
        except SystemExit as exc:
            code = exc.code
            if code is not None and not isinstance(code, int):
                print(one_line(code), file=sys.__stderr__ or sys.stderr)  # what Python itself would print
                code = 1
            reply = ("exit", 0 if code is None else code)
        except MemoryError:
            reply = ("memory", "")
        except BaseException as exc:  # KeyboardInterrupt and friends raised by the model's code
            if isinstance(exc, RuntimeError) and "can't allocate memory" in one_line(exc):
                reply = ("memory", "")
            else:
                reply = ("raised", f"{type(exc).__name__}: {one_line(exc)}".rstrip(": "))
        _flush()
        conn.send(reply)


def _job(job: Callable[..., Any] | str, args: tuple) -> tuple[Callable[..., Any], tuple]:
    """The function a request names: a job of `mnist_arch.remote` by name (what the parent's side sends), or a
    module-level function itself (the registry's read, tests)."""
    if isinstance(job, str):
        func = getattr(importlib.import_module("mnist_arch.remote"), job, None)
        if func is None:
            raise LookupError(f"mnist_arch.remote has no job named {job!r}")
        return func, args
    return job, args


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the model may have closed or replaced them
            pass
