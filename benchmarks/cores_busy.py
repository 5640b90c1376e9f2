"""How busy the machine's cores are while a command runs: the evidence behind docs/testing.md's suite figures.

    python benchmarks/cores_busy.py -- pytest -n auto
    python benchmarks/cores_busy.py --interval 2 -- pytest -n auto -q --durations=0

Runs the command and samples the kernel's CPU counters (`/proc/stat`, its first line: every process on the
machine, so measure on a quiet one) every `--interval` seconds, then prints the CPU line (the capability torch
picks and oneDNN's bf16 answer, as every timing in this project names), the wall time, the share of all cores'
time that was busy and the busy core-seconds (the work done), and each window where less than `--below` of it
was. Exits with the command's code (128 + the signal's number when a signal ended it, as a shell says it).

A process's own CPU counters (`/usr/bin/time`, `getrusage`) see only the children it waited for: the processes
a fork server starts for each model are not among them, so `/usr/bin/time pytest -n auto` reports one core
busy when both are. The kernel's counters see every process.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
import time


def read_stat(path: str = "/proc/stat") -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from the first line of `/proc/stat`: idle and iowait
    are the idle part; user, nice, system, irq, softirq and steal the busy one (guest time is already in user)."""
    with open(path) as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The busy share of all cores' time between two `read_stat` samples (0 when no tick passed)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def busy_seconds(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The busy core-seconds between two `read_stat` samples: the work done, whatever the number of cores."""
    return (after[0] - before[0]) / os.sysconf("SC_CLK_TCK")


def cpu_line() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    try:
        bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        bf16 = "n/a"
    return f"CPU {torch.backends.cpu.get_cpu_capability()}, oneDNN bf16 {bf16}, torch {torch.__version__}"


def _interval(text: str) -> float:
    value = float(text)
    if not value >= 0.05:
        raise argparse.ArgumentTypeError(f"expected at least 0.05 seconds, got {text!r}")
    return value


def run(command: list[str]) -> int:
    """The command's exit code, 128 + the signal's number when a signal ended it (as a shell says it), 127 when it
    cannot start. Ctrl-C reaches it from the terminal and is ignored here; a SIGTERM sent here is passed on."""
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"cores_busy: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, lambda sig, _frame: child.send_signal(sig))}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=_interval, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--below", type=float, default=0.9, help="list the windows less busy than this share (0.9)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    samples: list[tuple[float, tuple[int, int]]] = [(time.perf_counter(), read_stat())]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(args.interval):
            samples.append((time.perf_counter(), read_stat()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = run(command)
    done.set()
    sampler.join()
    samples.append((time.perf_counter(), read_stat()))
    start = samples[0][0]
    # a window in which no clock tick passed (the last one can be that short) says nothing about the cores
    windows = [(t0, s0, t1, s1) for (t0, s0), (t1, s1) in zip(samples, samples[1:], strict=False) if s1[1] > s0[1]]
    quiet = [f"{t0 - start:.1f}-{t1 - start:.1f} s: {busy_share(s0, s1):.0%}"
             for t0, s0, t1, s1 in windows if busy_share(s0, s1) < args.below]
    shown = shlex.join(command).replace("\n", "\\n")  # one line, however the command was written
    print(f"\ncores_busy: {cpu_line()}; {shown}: exit {code}, {samples[-1][0] - start:.1f} s wall, "
          f"all cores busy {busy_share(samples[0][1], samples[-1][1]):.1%} of the time "
          f"({busy_seconds(samples[0][1], samples[-1][1]):,.1f} core-seconds of work; {len(windows)} windows of "
          f"{args.interval:g} s)", flush=True)
    print(f"cores_busy: windows under {args.below:.0%}: " + (", ".join(quiet) if quiet else "none"), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
