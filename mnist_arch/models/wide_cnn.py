"""wide_cnn: 11,705,450 parameters, six 3x3/5x5 convs and a 4608-2048-1024-10 dropout head.

Reference: course README `003_*.txt` (docs/architectures.md), whose summary table fixes every layer's output shape and
parameter count; the layer table below is that table row by row. The shapes fix two details the
table's types leave open: the first conv (5x5, 832 parameters) keeps 26x26 only with padding 1, and
the last pooling goes 13x13 -> 12x12, so it is a 2x2 max-pool with stride 1.

Mult-adds: the reference says 59.61M from an older summary tool; torchinfo 1.8 counts the figure
declared below for the same layers (see docs/architectures.md for the difference).
"""

import torch.nn as nn

from mnist_arch.registry import register_model
from mnist_arch.spec import Layer, Recipe, Spec


class WideCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 96, 3, padding=1), nn.ReLU(),
            nn.Conv2d(96, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2, 1),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(32 * 12 * 12, 2048), nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(2048, 1024), nn.ReLU(),
            nn.Linear(1024, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


# The reference's summary table, one row per line: (module name, output shape, parameters).
_TABLE = [
    ("features", (32, 12, 12), None),
    ("features.0", (32, 26, 26), 832),
    ("features.1", (32, 26, 26), 0),
    ("features.2", (64, 26, 26), 18_496),
    ("features.3", (64, 26, 26), 0),
    ("features.4", (64, 13, 13), 0),
    ("features.5", (96, 13, 13), 55_392),
    ("features.6", (96, 13, 13), 0),
    ("features.7", (64, 13, 13), 55_360),
    ("features.8", (64, 13, 13), 0),
    ("features.9", (32, 13, 13), 18_464),
    ("features.10", (32, 13, 13), 0),
    ("features.11", (32, 13, 13), 9_248),
    ("features.12", (32, 13, 13), 0),
    ("features.13", (32, 12, 12), 0),
    ("classifier", (10,), None),
    ("classifier.0", (4608,), 0),
    ("classifier.1", (2048,), 9_439_232),
    ("classifier.2", (2048,), 0),
    ("classifier.3", (2048,), 0),
    ("classifier.4", (1024,), 2_098_176),
    ("classifier.5", (1024,), 0),
    ("classifier.6", (10,), 10_250),
]

SPEC = Spec(
    min_receptive_field=24,
    exact_params=11_705_450,
    max_params=11_705_450,
    exact_mult_adds=48_013_802,  # torchinfo 1.8; the README says 59.61M (see module docstring)
    require=frozenset({"dropout", "fc"}),
    final_activation="logits",
    layers=tuple(Layer(name, shape, params) for name, shape, params in _TABLE),
    recipes={
        # CPU tier (ours): one pass over the first 24,576 training images, Adam + OneCycle with label
        # smoothing, weights and optimizer in bf16 (no per-step casts of its 11.7M weights), channels_last.
        "quick": Recipe(
            epochs=1, batch_size=64, optimizer="adam", lr=0.001, loss="cross_entropy", label_smoothing=0.1,
            schedule="onecycle", schedule_kwargs=dict(max_lr=0.002, pct_start=0.25),
            precision="bf16_weights", channels_last=True, train_subset=24576,
            min_accuracy=0.983, threshold_note="10 runs (5 seeds at 1 and 2 threads) 98.62-98.87%; worst - spread",
            # Where bf16 is not native: fp32 is 23x faster than emulated bf16 but 3-4x slower than native bf16, so
            # two thirds of the images at batch 32 (about a minute on one AVX2 core).
            fp32_changes=dict(train_subset=16384, batch_size=32, min_accuracy=0.983,
                              threshold_note="fp32: 5 seeds 98.51-98.63% (no native bf16); worst - spread"),
        ),
        # The README gives Adam 1e-3, 10 epochs, CrossEntropyLoss; the batch size is ours (not stated).
        "full": Recipe(
            epochs=10, batch_size=128, optimizer="adam", lr=0.001, loss="cross_entropy", channels_last=True,
            min_accuracy=0.989,
            threshold_note="5 CPU seeds 99.19-99.41%; worst - spread (README: 99%; constant-lr Adam swings)",
        ),
    },
)


@register_model(SPEC)
def wide_cnn(num_classes: int = 10) -> WideCNN:
    return WideCNN(num_classes)
