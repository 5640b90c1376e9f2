"""Processes, for both sides of the wall: Linux's prctl, the processes below a pid, and killing them all.

The parent kills a worker's tree (`isolate.Worker.kill`); a worker kills its own when its judge is gone and the
fork server its own when it ends (`channel`). Imports nothing of ours and no torch.
"""

from __future__ import annotations

import os
import signal

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def prctl(option: int, value: int) -> None:
    """Linux's prctl(2); nothing where there is none (macOS)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def children() -> dict[int, list[int]]:
    """Each process's children, from /proc on Linux (none elsewhere), zombies included."""
    found: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()  # after "pid (comm)": state, ppid, ...
        except OSError:
            continue
        if len(fields) > 1:
            found.setdefault(int(fields[1]), []).append(int(entry))
    return found


def command_line(pid: int) -> bytes:
    """A process's command line as /proc has it (arguments joined by NUL bytes); b"" where it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def below(pid: int) -> set[int]:
    """The processes descended from `pid`, from /proc on Linux (none elsewhere), walked through zombies too: a
    worker killed a moment ago may show as a zombie while its threads still exit, its children still below it;
    skipping it left them out, and they went to init once the server had ended (a kill is a no-op on a zombie)."""
    tree = children()
    found, todo = set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_tree(pid: int, itself: bool = True) -> None:
    """SIGKILL every process below the worker `pid` (again until no new one shows, so that a fork made meanwhile
    is caught too), then its process group and, where `itself`, the worker."""
    killed: set[int] = set()
    for _ in range(100):
        fresh = below(pid) - killed
        if not fresh:
            break
        for p in fresh:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        killed |= fresh
    if itself:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
