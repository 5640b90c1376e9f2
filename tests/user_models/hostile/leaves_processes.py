"""Models that leave processes running, for tests/test_kill.py: once the command that judges or trains them
is killed or stopped, none of what they started may still run."""

import os
import subprocess
import threading
import time

import torch.nn as nn

_started = False


def _leave_processes() -> None:
    """Once per worker: `sleep 1000` that a shell started in a session of its own and left orphaned, as a daemon
    does (outside the worker's process group and no longer its child); another in the worker's group; and a
    thread that never ends. Both sleeps' pids are written, one a line, to $MNIST_ARCH_TEST_PIDFILE."""
    global _started
    if _started:
        return
    _started = True
    shell = subprocess.run(["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                           start_new_session=True)
    pids = [int(shell.stdout), subprocess.Popen(["sleep", "1000"]).pid]

    def forever():
        while True:
            time.sleep(0.1)

    threading.Thread(target=forever).start()
    with open(os.environ["MNIST_ARCH_TEST_PIDFILE"], "a") as pidfile:
        pidfile.write("".join(f"{pid}\n" for pid in pids))


class SpawnsAndHangs(nn.Module):
    """Its forward pass starts the processes, then never returns."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        _leave_processes()
        while True:
            time.sleep(0.1)


class SpawnsAndTrains(nn.Module):
    """Logistic regression that trains slowly: each training batch of 7 (the batch size its table declares)
    takes 0.2 s more, and the first starts the processes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        if self.training and x.shape[0] == 7:
            _leave_processes()
            time.sleep(0.2)
        return self.fc(x.flatten(1))
