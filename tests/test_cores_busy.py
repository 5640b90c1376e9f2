"""benchmarks/cores_busy.py, the measurement behind docs/testing.md's "both cores busy": the kernel's counters
read right, and a run reports the command's exit code and a busy share that a spinning command raises."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cores_busy.py"
sys.path.insert(0, str(SCRIPT.parent))
import cores_busy  # noqa: E402  (benchmarks/cores_busy.py)


def test_the_first_line_of_proc_stat_splits_into_busy_and_idle(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 5 20 800 50 1 2 3 7 0\ncpu0 50 2 10 400 25 0 1 1 3 0\n")
    assert cores_busy.read_stat(str(stat)) == (100 + 5 + 20 + 1 + 2 + 3, 981)
    assert cores_busy.busy_share((131, 981), (231, 1181)) == 0.5
    assert cores_busy.busy_share((1, 10), (1, 10)) == 0.0  # no tick passed: nothing to divide
    assert cores_busy.busy_seconds((131, 981), (231, 1181)) == 100 / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="no /proc/stat on this system")
def test_a_run_reports_the_commands_exit_code_and_its_busy_share():
    spin = "import time, sys\nend = time.perf_counter() + 1.5\nwhile time.perf_counter() < end: pass\nsys.exit(3)"
    run = subprocess.run([sys.executable, str(SCRIPT), "--interval", "0.5", "--below", "1.01", "--",
                          sys.executable, "-c", spin], capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stderr
    summary, windows = run.stdout.strip().splitlines()[-2:]
    assert "exit 3" in summary and "s wall" in summary and "CPU " in summary
    share = float(summary.split("all cores busy ")[1].split("%")[0])
    assert 100 / os.cpu_count() * 0.8 <= share <= 100  # at least the one core it spun on
    work = float(summary.split("(")[-1].split(" core-seconds")[0].replace(",", ""))
    wall = float(summary.split(" s wall")[0].split(", ")[-1])
    assert 1.5 * 0.8 <= work <= wall * os.cpu_count() + 0.1  # it spun 1.5 s on one core
    assert windows.startswith("cores_busy: windows under 101%: 0.0-")  # every window is under 101%


def test_without_a_command_it_says_so():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "give the command to run after --" in run.stderr


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="no /proc/stat on this system")
def test_a_signal_ends_the_command_and_the_summary_still_comes():
    """A command a signal ended exits 128 + its number, as a shell says it; a SIGTERM sent to this script goes on to
    the command, and the summary is printed after it ends. A command that cannot start: one line, 127."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--interval", "0.5", "--", "sh", "-c", "kill -TERM $$"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 143 and "exit 143" in run.stdout, run.stderr
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--interval", "0.5", "--", "sleep", "30"],
                            stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)  # the script has started the command
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 143 and "sleep 30: exit 143" in out
    run = subprocess.run([sys.executable, str(SCRIPT), "--", "no-such-command-here"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 127 and run.stderr.strip() == ("cores_busy: cannot run 'no-such-command-here': No such "
                                                            "file or directory")
