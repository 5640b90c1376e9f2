"""Models written to break a judge: each one misbehaves in one way (see tests/test_isolation.py)."""

import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Small(nn.Module):
    """conv 1*4*9+4 = 40, fc 4*10+10 = 50: 90 parameters, GAP, logits."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


class ExitsWhileBuilt(Small):
    def __init__(self):
        super().__init__()
        sys.exit(0)


class OsExitInForward(Small):
    def forward(self, x):
        os._exit(0)


class ExitsInForward(Small):
    def forward(self, x):
        raise SystemExit(3)


class InterruptsInForward(Small):
    def forward(self, x):
        raise KeyboardInterrupt


class PrintsInForward(Small):
    def forward(self, x):
        print("hello from forward")
        print("to stderr too", file=sys.stderr)
        return super().forward(x)


class SleepsInForward(Small):
    def forward(self, x):
        time.sleep(3600)


class LoopsInInit(Small):
    def __init__(self):
        super().__init__()
        while True:
            pass


class Allocates(Small):
    def forward(self, x):
        hog = torch.empty(64 * 2**30, dtype=torch.uint8)  # 64 GiB
        hog.fill_(1)
        return super().forward(x)


class BuildsOnFirstCall(nn.Module):
    """A shell of 40 parameters (the first conv) until the first forward, which adds
    conv 4*8*9+8 = 296 and fc 8*26*26... no: fc on the 8x24x24 map flattened, 4,608*10+10... see below."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)  # 40
        self.rest = None

    def forward(self, x):
        x = self.conv(x).relu()
        if self.rest is None:
            # conv 4*8*9+8 = 296; fc 8*24*24*5+5 = 23,045... the test computes the total independently
            self.rest = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 24 * 24, 10))
        return self.rest(x)


class GrowsEveryCall(Small):
    def __init__(self):
        super().__init__()
        self.extra = nn.ParameterList()

    def forward(self, x):
        self.extra.append(nn.Parameter(torch.zeros(3)))
        return super().forward(x)


class GrowingBuffer(Small):
    def __init__(self):
        super().__init__()
        self.register_buffer("seen", torch.zeros(0))

    def forward(self, x):
        self.seen = torch.cat([self.seen, x.flatten()[:1]])
        return super().forward(x)


class OnMeta(Small):
    def __init__(self):
        super().__init__()
        self.to("meta")


def scripted():
    return torch.jit.script(Small())


def traced():
    return torch.jit.trace(Small(), torch.zeros(1, 1, 28, 28))


def weight_normed():
    model = Small()
    nn.utils.parametrizations.weight_norm(model.conv)
    return model


class Functional(nn.Module):
    """Everything through torch.nn.functional: conv 8*1*9+8 = 80, fc 8*10+10 = 90."""

    def __init__(self):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.randn(8, 1, 3, 3)), nn.Parameter(torch.zeros(8))
        self.fw, self.fb = nn.Parameter(torch.randn(10, 8)), nn.Parameter(torch.zeros(10))

    def forward(self, x):
        x = F.avg_pool2d(F.conv2d(x, self.w, self.b).relu(), 3)  # 26x26 -> 8x8: covers part of the map
        return F.linear(x.amax((2, 3)), self.fw, self.fb)


class ZeroDropout(Small):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.0)

    def forward(self, x):
        return super().forward(self.drop(x))
