"""Classifier heads of the kinds course repositories write, for the `gap` and `fc` words (tests/test_head.py).

Every body is the same: one conv 1->16 with a 4x4 kernel and stride 4 turns the 28x28 image into a 16x7x7 map.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Body(nn.Module):
    def __init__(self, channels: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 4, stride=4)  # 28x28 -> 7x7

    def features(self, x):
        return F.relu(self.conv(x))


class SE(nn.Module):
    """Squeeze-excitation: a global average pool and two Linears whose result gates the map it read."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels, 4)
        self.fc2 = nn.Linear(4, channels)

    def forward(self, x):
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(x).flatten(1)))))
        return x * w.view(x.size(0), -1, 1, 1)


class SEFlatten(Body):
    """The issue's case: an SE block, then the classifier flattens the 16x7x7 map into Linear(784, 10). A GAP
    module is defined and never called."""

    def __init__(self):
        super().__init__()
        self.se = SE()
        self.gap = nn.AdaptiveAvgPool2d(1)  # defined, never called
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        return self.fc(self.se(self.features(x)).flatten(1))


class SEGapConv(Body):
    """An SE block, then GAP and a 1x1 convolution to the classes: GAP, and its only Linears are the gate's."""

    def __init__(self):
        super().__init__()
        self.se = SE()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.out = nn.Conv2d(16, 10, 1)

    def forward(self, x):
        return self.out(self.gap(self.se(self.features(x)))).flatten(1)


class GapHead(Body):
    """One GAP head per `form`, each followed only by per-position layers."""

    FORMS = ("adaptive_module", "avgpool_module", "avg_pool2d", "mean", "adaptive_function", "mean_keepdim",
             "flatten_then_mean")

    def __init__(self, form: str = "adaptive_module"):
        super().__init__()
        self.form = form
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.avg = nn.AvgPool2d(7)  # covers the 7x7 map
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(16, 10)
        self.out = nn.Conv2d(16, 10, 1)

    def forward(self, x):
        x = self.features(x)
        if self.form == "adaptive_module":  # AdaptiveAvgPool2d, Flatten, Dropout, Linear
            return self.fc(self.drop(self.pool(x).flatten(1)))
        if self.form == "avgpool_module":  # AvgPool2d covering the map, a 1x1 conv, view, log_softmax
            return F.log_softmax(self.out(self.avg(x)).view(-1, 10), dim=1)
        if self.form == "avg_pool2d":  # F.avg_pool2d over the whole map, BatchNorm1d, ReLU, Linear, softmax
            return F.softmax(self.fc(F.relu(self.bn(F.avg_pool2d(x, x.shape[2:]).flatten(1)))), dim=1)
        if self.form == "mean":  # x.mean((2, 3)) into a Linear
            return self.fc(x.mean((2, 3)))
        if self.form == "adaptive_function":  # F.adaptive_avg_pool2d, a 1x1 conv, flatten
            return self.out(F.adaptive_avg_pool2d(x, 1)).flatten(1)
        if self.form == "mean_keepdim":  # in-place ops after the pool, a tuple output
            pooled = torch.mean(x, dim=[2, 3], keepdim=True)
            pooled += 1
            logits = F.relu(self.out(pooled), inplace=True).reshape(x.size(0), 10)
            return logits, x
        if self.form == "flatten_then_mean":  # the view is read by the mean, the pool
            return self.fc(x.view(x.size(0), 16, -1).mean(dim=2))
        raise ValueError(self.form)


class AvgPool2x2(Body):
    """A 2x2 average pool passed off as GAP: 16x7x7 -> 16x3x3, flattened into Linear(144, 10). An FC head."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 3 * 3, 10)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


class MaxHead(Body):
    """Neither GAP nor FC: a global max pool of a 10-channel map is the output."""

    def __init__(self):
        super().__init__(10)
        self.pool = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        return self.pool(self.features(x)).flatten(1)


class CentreHead(Body):
    """Neither: the scores are one position of a 10-channel map."""

    def __init__(self):
        super().__init__(10)

    def forward(self, x):
        return self.features(x)[:, :, 3, 3]


class TwoHeads(Body):
    """A GAP branch and a flatten branch summed: not every path passes the pool."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 10)
        self.flat = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = self.features(x)
        return self.fc(x.mean((2, 3))) + self.flat(x.flatten(1))


class WholeMapConv(Body):
    """FC without a Linear: a conv whose 7x7 kernel covers the whole 16x7x7 map."""

    def __init__(self):
        super().__init__()
        self.out = nn.Conv2d(16, 10, 7)

    def forward(self, x):
        return self.out(self.features(x)).flatten(1)


class NoMap(nn.Module):
    """No spatial map of its own: an MLP on the flattened image."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.view(-1, 784))))


class ConstantOut(nn.Module):
    """Ignores its input: the scores are a parameter broadcast over the batch."""

    def __init__(self):
        super().__init__()
        self.scores = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return self.scores.expand(x.size(0), 10)


class Untraced(Body):
    """Its scores come from NumPy, which the recorded pass does not see."""

    def forward(self, x):
        import numpy as np

        self.features(x)
        return torch.from_numpy(np.zeros((x.shape[0], 10), dtype=np.float32))


class DictOut(GapHead):
    """Returns a dict; the first tensor in it is the scores."""

    def forward(self, x):
        return {"logits": super().forward(x)}
