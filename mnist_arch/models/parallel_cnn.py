"""parallel_cnn: a conv stem, two parallel conv branches joined, two sequential wide convs, FC 1000-500-10.

Reference: course README `000_*.txt` (docs/architectures.md) gives only a layer table (name and output dimension). The
reading implemented here, the most faithful one we found:

    conv1    3x3 conv, padding 1, 1 -> 32 channels, ReLU            28x28x32
             2x2 max-pool                                             14x14x32
    conv2_1  3x3 conv, padding 1, 32 -> 64, ReLU, on that input      14x14x64   } both branches read the
    conv2_2  3x3 conv, padding 1, 32 -> 64, ReLU, on that input      14x14x64   } same tensor ("parallel")
             the branches joined by channel concatenation            14x14x128
             2x2 max-pool                                              7x7x128
    conv3_1  3x3 conv, padding 1, 128 -> 512, ReLU                    7x7x512   } one after the other
    conv3_2  3x3 conv, padding 1, 512 -> 512, ReLU                    7x7x512   } ("sequential")
    fc1      flatten 7*7*512 = 25,088 -> 1000, ReLU
    fc2      1000 -> 500, ReLU
    output_layer  500 -> 10 (logits)

Concatenation keeps both branches' 64 channels (a sum would make the second branch redundant in
the table's terms); no pooling after conv3 because the table gives conv3_2 as 7x7 and nothing
between it and fc1. That reading yields 28,581,966 parameters, 88% of them in fc1.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from mnist_arch.registry import register_model
from mnist_arch.spec import Augment, Layer, Recipe, Spec


class ParallelCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2_1 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv2_2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3_1 = nn.Conv2d(128, 512, 3, padding=1)
        self.conv3_2 = nn.Conv2d(512, 512, 3, padding=1)
        self.fc1 = nn.Linear(7 * 7 * 512, 1000)
        self.fc2 = nn.Linear(1000, 500)
        self.output_layer = nn.Linear(500, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = torch.cat([F.relu(self.conv2_1(x)), F.relu(self.conv2_2(x))], dim=1)
        x = F.max_pool2d(x, 2)
        x = F.relu(self.conv3_2(F.relu(self.conv3_1(x))))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.output_layer(x)


SPEC = Spec(
    min_receptive_field=26,
    exact_params=28_581_966,
    max_params=28_581_966,
    exact_mult_adds=177_652_878,
    require=frozenset({"fc"}),
    final_activation="logits",
    layers=(
        Layer("conv1", (32, 28, 28), 320),
        Layer("conv2_1", (64, 14, 14), 18_496),
        Layer("conv2_2", (64, 14, 14), 18_496),
        Layer("conv3_1", (512, 7, 7), 590_336),
        Layer("conv3_2", (512, 7, 7), 2_359_808),
        Layer("fc1", (1000,), 25_089_000),
        Layer("fc2", (500,), 500_500),
        Layer("output_layer", (10,), 5_010),
    ),
    recipes={
        # CPU tier (ours): one pass over the first 16,384 training images at batch 32, AdamW + OneCycle with
        # label smoothing, weights and optimizer in bf16 (no per-step casts of its 28.6M weights),
        # channels_last.
        "quick": Recipe(
            epochs=1, batch_size=32, optimizer="adamw", lr=0.001, label_smoothing=0.1, train_subset=16384,
            schedule="onecycle", schedule_kwargs=dict(max_lr=0.001, pct_start=0.25),
            precision="bf16_weights", channels_last=True,
            min_accuracy=0.982, threshold_note="10 runs (5 seeds at 1 and 2 threads) 98.52-98.75%; worst - spread",
            # Where bf16 is not native: fp32 is 16x faster than emulated bf16 but 2-3x slower than native bf16, and
            # evaluating the 10,000 test images alone takes half a minute on one AVX2 core: a quarter of the images
            # at batch 16 with twice the peak lr, under 98% (docs/training.md has images seen against accuracy).
            fp32_changes=dict(train_subset=4096, batch_size=16, schedule_kwargs=dict(max_lr=0.002, pct_start=0.25),
                              min_accuracy=0.953,
                              threshold_note="fp32: 10 runs (5 seeds at 1 and 2 threads) 96.28-97.21% (no native "
                                             "bf16); worst - spread"),
        ),
        # Ours: the reference's SGD search collapsed to "always 1" (11.35%) in every trial. AdamW with a
        # short OneCycle warm-up trains this ReLU network without batch norm (see docs/training.md).
        "full": Recipe(
            epochs=5, batch_size=128, optimizer="adamw", lr=0.001,
            schedule="onecycle", schedule_kwargs=dict(max_lr=0.001, pct_start=0.2),
            augment=Augment(degrees=10, translate=0.1), precision="bf16", channels_last=True,
            min_accuracy=0.994,
            threshold_note="5 CPU seeds 99.53-99.63%; worst - spread (issue: >= 99.0%)",
        ),
    },
)


@register_model(SPEC)
def parallel_cnn(num_classes: int = 10) -> ParallelCNN:
    return ParallelCNN(num_classes)
