"""slim_cnn: 9,956 parameters, two Conv-BN-ReLU-MaxPool blocks and a dropout FC head ending in Softmax.

Reference: course README `001_*.txt` (docs/architectures.md) (98.04% test accuracy after 150 epochs of SGD).
The Softmax output is kept because the reference has it; the reference then trains it with
CrossEntropyLoss, which applies log-softmax again. The engine's lint reports exactly that.
"""

import torch.nn as nn

from mnist_arch.registry import register_model
from mnist_arch.spec import Layer, Recipe, Spec


class SlimCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.layer2 = nn.Sequential(nn.Conv2d(3, 3, 5), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2, 2))
        self.layer3 = nn.Sequential(
            nn.Flatten(),
            nn.Linear(48, 164),
            nn.Dropout(0.5),
            nn.ReLU(),
            nn.Linear(164, num_classes),
            nn.Softmax(dim=1),
        )

    def forward(self, x):
        return self.layer3(self.layer2(self.layer1(x)))


SPEC = Spec(
    min_receptive_field=12,
    exact_params=9_956,
    max_params=9_999,  # the README's budget: fewer than 10,000
    exact_mult_adds=48_446,
    require=frozenset({"batchnorm", "dropout", "fc"}),
    final_activation="softmax",
    layers=(
        Layer("layer1", (3, 13, 13), 36),
        Layer("layer2", (3, 4, 4), 234),
        Layer("layer3.1", (164,), 8_036),
        Layer("layer3", (10,), 9_686),
    ),
    recipes={
        # CPU tier (ours), loss fixed: the NLL of the log of the Softmax output's probabilities, which is what
        # CrossEntropyLoss computes on logits. The published CrossEntropyLoss on the probabilities (a double
        # softmax) reached 96.7-96.9% in the same three epochs (docs/training.md). fp32: bf16 and
        # channels_last do not pay on 3-channel convolutions.
        "quick": Recipe(
            epochs=3, batch_size=128, optimizer="adam", lr=0.001, loss="nll_probs",
            schedule="onecycle", schedule_kwargs=dict(max_lr=0.01, pct_start=0.25),
            min_accuracy=0.97, threshold_note="5 seeds 97.43-97.85% (AVX-512), 97.45-97.75% (AVX2); worst - spread",
            channels_last=False,
        ),
        # The README's recipe, Softmax output into CrossEntropyLoss included (the lint reports it).
        # ReduceLROnPlateau('min') steps on the epoch's test loss (the README does not say which loss).
        "full": Recipe(
            epochs=150, batch_size=64, optimizer="sgd", lr=0.01, schedule="plateau",
            schedule_kwargs=dict(mode="min"), loss="cross_entropy",
            min_accuracy=0.963, channels_last=False,
            threshold_note="5 CPU seeds 97.13-97.90%; worst - spread (README: 98.04% after 150 epochs)",
        ),
    },
)


@register_model(SPEC)
def slim_cnn(num_classes: int = 10) -> SlimCNN:
    return SlimCNN(num_classes)
