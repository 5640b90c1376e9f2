"""The way course repositories train MNIST, as the baseline of `test_time_to_accuracy.py`.

torchvision's MNIST dataset and a DataLoader (batch 128, shuffled, no worker processes), per-sample
ToTensor + Normalize, eager fp32 at torch's default thread count, Adam at 1e-3, the same network
(`micro_cnn`, LogSoftmax output, so NLL loss), and the whole test set evaluated after each epoch until it
reaches the target. Run as a script, it is one whole process like `mnist-arch train`:

    python benchmarks/course_pipeline.py DATA_DIR [--target 0.99] [--max-epochs 20] [--seed 0]

and prints one JSON object: epochs, test_accuracy, history (test accuracy per epoch) and threads.
"""

from __future__ import annotations

import argparse
import json

import torch
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="folder holding MNIST/raw/")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(train_until(args.data_dir, args.target, args.max_epochs, args.seed)))
