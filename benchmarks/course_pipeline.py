"""The way course repositories train MNIST, as the baseline of `test_time_to_accuracy.py` and `test_course_epoch.py`.

torchvision's MNIST dataset and a DataLoader (batch 128, shuffled, no worker processes), per-sample
ToTensor + Normalize, eager fp32 at torch's default thread count, Adam at 1e-3, the same network
(`micro_cnn`, LogSoftmax output, so NLL loss), and the whole test set evaluated after each epoch until it
reaches the target. Run as a script, it is one whole process like `mnist-arch train`:

    python benchmarks/course_pipeline.py DATA_DIR [--target 0.99] [--max-epochs 20] [--seed 0]

and prints one JSON object: epochs, test_accuracy, history (test accuracy per epoch) and threads.

The course recipe (`course_epoch`, issue 27): a course-style network of 7,926 parameters (`CourseNet`: batch
norm, dropout, a 1x1 transition, global average pooling, the blocks of the session-6 "ERA" assignments),
RandomRotation(7) per sample in the DataLoader, SGD at 0.01 with momentum 0.9, batch 128, fp32, NLL loss on
its log_softmax, then the whole test set (batch 1000). One epoch, timed from the first batch to the last
prediction:

    python benchmarks/course_pipeline.py DATA_DIR --course-epoch [--seed 0] [--threads N]

prints one JSON object: seconds, test_accuracy, train_loss and threads.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mnist_arch import create_model


def train_until(root: str, target: float = 0.99, max_epochs: int = 20, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = DataLoader(datasets.MNIST(root, train=True, transform=tf), batch_size=128, shuffle=True)
    test = DataLoader(datasets.MNIST(root, train=False, transform=tf), batch_size=1000)
    model = create_model("micro_cnn")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history: list[float] = []
    while len(history) < max_epochs and (not history or history[-1] < target):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            F.nll_loss(model(x), y).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test)
        history.append(correct / len(test.dataset))
    return {"epochs": len(history), "test_accuracy": history[-1], "history": history,
            "threads": torch.get_num_threads()}


class CourseNet(nn.Module):
    """A course-style MNIST network, 7,926 parameters: conv blocks (3x3 conv, ReLU, batch norm, dropout)
    1->10->18 at 28x28, a 1x1 transition to 8 and max pooling, 8->16->16->16 at 12x12, global average
    pooling and a 1x1 convolution to the 10 classes, log_softmax. Parameters, counted by hand: 90+20,
    1,620+36, 144, 1,152+32, 2,304+32, 2,304+32, 160."""

    def __init__(self, dropout: float = 0.05):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, bias=False), nn.ReLU(), nn.BatchNorm2d(cout),
                                 nn.Dropout(dropout))

        self.features = nn.Sequential(
            block(1, 10), block(10, 18),                                # 28 -> 26 -> 24
            nn.Conv2d(18, 8, 1, bias=False), nn.MaxPool2d(2),          # transition: 24 -> 12
            block(8, 16), block(16, 16), block(16, 16),                # 12 -> 10 -> 8 -> 6
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 10, 1, bias=False),  # GAP, then 1x1 to the classes
        )

    def forward(self, x):
        return F.log_softmax(self.features(x).flatten(1), dim=1)


class CourseNetWithoutDropout(CourseNet):
    """`CourseNet` with every dropout's p at 0 (torch returns the input untouched): beside `CourseNet` in
    `mnist-arch bench --train`, what dropout costs a training step (docs/training.md)."""

    def __init__(self):
        super().__init__(dropout=0.0)


#: The course recipe's fields, for both sides of `benchmarks/test_course_epoch.py`.
COURSE_BATCH, COURSE_LR, COURSE_MOMENTUM, COURSE_DEGREES, COURSE_TEST_BATCH = 128, 0.01, 0.9, 7.0, 1000


def course_epoch(root: str, seed: int = 0, threads: int | None = None) -> dict:
    """One epoch of the course recipe as course repositories run it: per-sample RandomRotation(7), ToTensor
    and Normalize in a DataLoader (no worker processes), eager fp32 SGD, then the whole test set. `threads`:
    torch's thread count for it (default: torch's own)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    normalize = [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    train_tf = transforms.Compose([transforms.RandomRotation(COURSE_DEGREES), *normalize])
    train = DataLoader(datasets.MNIST(root, train=True, transform=train_tf), batch_size=COURSE_BATCH, shuffle=True)
    test = DataLoader(datasets.MNIST(root, train=False, transform=transforms.Compose(normalize)),
                      batch_size=COURSE_TEST_BATCH)
    model = CourseNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=COURSE_LR, momentum=COURSE_MOMENTUM)
    started = time.perf_counter()
    model.train()
    loss_sum, seen = 0.0, 0
    for x, y in train:
        optimizer.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        optimizer.step()
        loss_sum, seen = loss_sum + loss.item() * len(y), seen + len(y)
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test)
    return {"seconds": time.perf_counter() - started, "test_accuracy": correct / len(test.dataset),
            "train_loss": loss_sum / seen, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="folder holding MNIST/raw/")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--course-epoch", action="store_true", help="one epoch of the course recipe (CourseNet)")
    parser.add_argument("--threads", type=int, help="torch threads for --course-epoch (default: torch's own)")
    args = parser.parse_args()
    if args.course_epoch:
        print(json.dumps(course_epoch(args.data_dir, args.seed, args.threads)))
    else:
        print(json.dumps(train_until(args.data_dir, args.target, args.max_epochs, args.seed)))
