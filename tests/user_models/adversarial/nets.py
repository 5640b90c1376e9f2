"""Badly written (not malicious) user models, each wrong in one way, for tests/test_isolation_adversarial.py.
`Small` is the well-behaved base: 90 parameters, logits (N, 10)."""

import os
import signal
import subprocess
import sys
import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 10)  # 90 parameters

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1).repeat(1, 8))


class ThreadPrintsForever(Small):
    """A daemon-less thread that keeps printing after the result."""

    def __init__(self):
        super().__init__()
        def spam():
            while True:
                print("tick", flush=True)
                time.sleep(0.01)
        threading.Thread(target=spam).start()


class SubprocessKeepsRunning(Small):
    """Starts a child process that outlives the check (writes its pid to MNIST_ARCH_TEST_PIDFILE)."""

    def __init__(self):
        super().__init__()
        proc = subprocess.Popen([sys.executable, "-c", "import time\nwhile True:\n    print('child', flush=True)\n"
                                 "    time.sleep(0.05)"])
        with open(os.environ["MNIST_ARCH_TEST_PIDFILE"], "w") as f:
            f.write(str(proc.pid))


class ClosesStdout(Small):
    def __init__(self):
        super().__init__()
        print("about to close")
        os.close(1)
        os.close(2)
        sys.stdout.close()


class Dup2sStdout(Small):
    """Points its stdout and stderr at /dev/null and prints to the original fds it saved."""

    def forward(self, x):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        print("into the void")
        return super().forward(x)


class ChangesCwdPathEnv(Small):
    def __init__(self):
        super().__init__()
        os.chdir("/")
        sys.path.insert(0, "/nonexistent")
        os.environ["MNIST_ARCH_DATA"] = "/nonexistent"


class IgnoresSigterm(Small):
    """Ignores SIGTERM and SIGINT, then hangs."""

    def __init__(self):
        super().__init__()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            time.sleep(0.1)


class ExitsWithString(Small):
    def __init__(self):
        super().__init__()
        sys.exit("fatal: no GPU found")


class ExitsWithNone(Small):
    def forward(self, x):
        raise SystemExit(None)


class _BadStr(Exception):
    def __str__(self):
        raise ValueError("str() of this exception fails")


class StrRaises(Small):
    def forward(self, x):
        raise _BadStr()


class _BadStrBase(BaseException):
    def __str__(self):
        raise ValueError("str() of this exception fails")


class BaseStrRaises(Small):
    def forward(self, x):
        raise _BadStrBase()


class HugeMultilineError(Small):
    def forward(self, x):
        raise ValueError("line\n" * 200_000)


class ReturnsTuple(Small):
    def forward(self, x):
        return super().forward(x), "aux"


class ReturnsDict(Small):
    def forward(self, x):
        return {"logits": super().forward(x)}


class ReturnsNone(Small):
    def forward(self, x):
        return None


class ReturnsString(Small):
    def forward(self, x):
        return "ten classes"


class ReturnsMeta(Small):
    def forward(self, x):
        return torch.empty(x.shape[0], 10, device="meta")


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("cannot pickle this")


class ReturnsUnpicklable(Small):
    def forward(self, x):
        return [super().forward(x), _Unpicklable()]


class DelPrintsAndExits(Small):
    def __del__(self):
        print("goodbye from __del__")
        os._exit(7)


class AtexitPrints(Small):
    def __init__(self):
        super().__init__()
        import atexit

        atexit.register(lambda: print("goodbye from atexit"))
        atexit.register(lambda: os._exit(9))


class PrintsTenMegabytes(Small):
    def forward(self, x):
        sys.stdout.write("x" * 10_000_000 + "\n")
        return super().forward(x)


class PrintsTenMegabytesThenFails(Small):
    def forward(self, x):
        sys.stdout.write("y" * 10_000_000 + "\n")
        raise RuntimeError("after printing a lot")


class Recurses(Small):
    def forward(self, x):
        return self.forward(x)


class LayersOnlyInTraining(nn.Module):
    """Builds its classifier only on the first training-mode call; eval mode before that returns junk."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = None

    def forward(self, x):
        x = F.relu(self.conv(x)).flatten(1)
        if self.training and self.head is None:
            self.head = nn.Linear(x.shape[1], 10)
        if self.head is None:
            return x[:, :10]
        return self.head(x)


def compiled():
    return torch.compile(Small())


class DataDependent(Small):
    def forward(self, x):
        keep = x.flatten(1)[:, x.flatten(1).sum(0) > x.numel() / x.shape[0] / 2 / 784]  # a data-dependent width
        return super().forward(x) + keep.sum() * 0


class Segfaults(Small):
    def forward(self, x):
        import ctypes

        ctypes.string_at(0)
        return super().forward(x)


class KillsItself(Small):
    def forward(self, x):
        os.kill(os.getpid(), signal.SIGKILL)


class ForksAndReturns(Small):
    """os.fork() without exec: the fork continues as a second copy of the worker."""

    def __init__(self):
        super().__init__()
        pid = os.fork()
        if pid == 0:
            time.sleep(20)
            os._exit(0)
        with open(os.environ["MNIST_ARCH_TEST_PIDFILE"], "w") as f:
            f.write(str(pid))


class ReadsStdin(Small):
    def __init__(self):
        super().__init__()
        input("press enter to build the model: ")


class SetsDtypeAndGrad(Small):
    """Global state a badly written model changes: default dtype and grad mode."""

    def __init__(self):
        super().__init__()
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        self.fc = nn.Linear(8, 10)
