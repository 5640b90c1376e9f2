"""Small models of the kinds users write, each exercising one rule of the engine.

Counts in comments are computed by hand from the layer sizes, independently of the engine.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class FunctionalDropout(nn.Module):
    """Dropout only through F.dropout; no Dropout module. Params: conv 1*4*9+4=40, fc 4*10+10=50 -> 90."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = F.dropout(x, p=0.25, training=self.training)
        return self.fc(x.mean(dim=(2, 3)))  # global average pooling by mean


class Dropout2dNet(nn.Module):
    """Dropout2d module (a plain isinstance(m, nn.Dropout) misses it) and adaptive pooling to 1x1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.drop = nn.Dropout2d(0.1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.pool(self.drop(F.relu(self.conv(x)))).flatten(1))


class ZeroDropout(nn.Module):
    """A Dropout with p=0 drops nothing: not dropout."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.0)
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(self.drop(x.flatten(1)))


class TiedWeights(nn.Module):
    """The same Linear(784, 784) applied twice through one parameter: 784*784+784 = 615,440 once,
    plus head 784*10+10 = 7,850 -> 623,290 unique parameters (torchinfo would count 1,238,730)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(784, 784)
        self.dec = nn.Linear(784, 784)
        self.dec.weight = self.enc.weight  # tied
        self.dec.bias = self.enc.bias
        self.head = nn.Linear(784, 10)

    def forward(self, x):
        return self.head(torch.relu(self.dec(torch.relu(self.enc(x.flatten(1))))))


class Frozen(nn.Module):
    """A frozen conv (1*16*9+16 = 160) and a trainable head (16*10+10 = 170): 330 total, 170 trainable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3)
        for p in self.conv.parameters():
            p.requires_grad_(False)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1))


class Lazy(nn.Module):
    """Lazy layers: LazyConv2d(6, 3) on 1 channel = 60, LazyBatchNorm2d = 12, LazyLinear(6*26*26 -> 10)
    = 40,570 -> 40,642 once materialised."""

    def __init__(self):
        super().__init__()
        self.conv = nn.LazyConv2d(6, 3)
        self.bn = nn.LazyBatchNorm2d()
        self.fc = nn.LazyLinear(10)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


class GroupNormNet(nn.Module):
    """GroupNorm and InstanceNorm are not batch norm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.gn = nn.GroupNorm(2, 8)
        self.inorm = nn.InstanceNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.inorm(self.gn(self.conv(x))).mean((2, 3)))


class FunctionalBatchNorm(nn.Module):
    """Batch norm written with F.batch_norm on its own buffers; whole-map average pool (26x26)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.register_buffer("mean", torch.zeros(4))
        self.register_buffer("var", torch.ones(4))
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = F.batch_norm(self.conv(x), self.mean, self.var, training=self.training)
        return self.fc(F.avg_pool2d(x, 26).flatten(1))


class ControlFlow(nn.Module):
    """Data-dependent branch (symbolic tracing fails on it); dropout only on one branch, which the
    engine's fixed random probe input (mean about 0.5) takes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = x.flatten(1)
        if x.mean() > 0.25:
            x = self.drop(x)
        return self.fc(x)


class SyncBN(nn.Module):
    """SyncBatchNorm runs as batch norm outside distributed training."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.SyncBatchNorm(4)
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).flatten(1))


class FourD(nn.Module):
    """Forgets to flatten: outputs (N, 10, 26, 26)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 3)

    def forward(self, x):
        return self.conv(x)


class NeedsArgs(nn.Module):
    def __init__(self, width, depth=2):
        super().__init__()
        self.fc = nn.Linear(784, width)


def build_needs_args():
    """A builder taking no arguments, the fix the error message suggests."""
    return NeedsArgs(10)


class WrongInput(nn.Module):
    """Expects 3-channel input; fails on MNIST's single channel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


class SoftmaxOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return F.softmax(self.fc(x.flatten(1)), dim=1)


def not_a_model():
    return 42


instance = Dropout2dNet()
