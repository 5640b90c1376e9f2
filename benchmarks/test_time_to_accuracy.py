"""Time to 99.0% test accuracy for micro_cnn: our quick recipe, whole process, against the way the
reference repositories train (torchvision's MNIST dataset and a DataLoader with per-sample transforms).

Both sides are timed end to end by pytest-benchmark (one round: a run is seconds to minutes long).
They run only with real timing (`pytest benchmarks --benchmark-only`); plain `pytest` skips them, since a
smoke run would still have to train. `extra_info` records the accuracy each side reached.

    pytest benchmarks/test_time_to_accuracy.py --benchmark-only --benchmark-json tta.json
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_arch import create_model, get_spec

TARGET = 0.99
NAME = "micro_cnn"


@pytest.fixture
def real_timing(benchmark, mnist_root):
    if benchmark.disabled:
        pytest.skip("time-to-accuracy trains for seconds to minutes; run with --benchmark-only")
    return benchmark


@pytest.mark.benchmark(group="time-to-accuracy")
def test_quick_recipe_whole_process(real_timing, mnist_root):
    """`mnist-arch train micro_cnn` as a user runs it: interpreter start-up, imports, data load, training
    and evaluation, all inside the timed call."""
    exe = Path(sys.executable).parent / "mnist-arch"
    cmd = [str(exe), "train", NAME, "--device", "cpu", "--format", "json", "--data-dir", str(mnist_root)]
    runs = []

    def run():
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        runs.append(json.loads(proc.stdout))

    real_timing.pedantic(run, rounds=1, iterations=1)
    accuracy = runs[-1]["test_accuracy"]
    real_timing.extra_info.update(test_accuracy=accuracy, train_seconds=runs[-1]["seconds"], target=TARGET,
                                  threads=torch.get_num_threads())
    assert accuracy >= TARGET


def _reference_style(root: Path, max_epochs: int = 3) -> tuple[float, int]:
    """The reference repositories' loop: per-sample ToTensor + Normalize in a DataLoader, fp32 eager, the
    same network and optimizer as the quick recipe, evaluated after each epoch until TARGET is reached."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from mnist_arch.train import compute_loss, make_optimizer

    recipe = get_spec(NAME).recipes["quick"]
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*recipe.normalize)])
    train = DataLoader(datasets.MNIST(root, train=True, transform=tf), batch_size=recipe.batch_size, shuffle=True)
    test = DataLoader(datasets.MNIST(root, train=False, transform=tf), batch_size=1000)
    torch.manual_seed(0)
    model = create_model(NAME)
    optimizer = make_optimizer(model, recipe)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, epochs=max_epochs, steps_per_epoch=len(train),
                                                    **recipe.schedule_kwargs)
    accuracy = 0.0
    for epoch in range(1, max_epochs + 1):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            compute_loss(recipe, model(x), y).backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in test)
        accuracy = correct / len(test.dataset)
        if accuracy >= TARGET:
            return accuracy, epoch
    return accuracy, max_epochs


@pytest.mark.benchmark(group="time-to-accuracy")
def test_reference_style_dataloader(real_timing, mnist_root):
    start = time.perf_counter()
    result = real_timing.pedantic(_reference_style, args=(mnist_root,), rounds=1, iterations=1)
    accuracy, epochs = result
    real_timing.extra_info.update(test_accuracy=accuracy, epochs=epochs, target=TARGET,
                                  seconds=time.perf_counter() - start, threads=torch.get_num_threads())
    assert accuracy >= TARGET
