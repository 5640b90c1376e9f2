"""Issue 27, "Fast": what the trainer chooses for the machine where a recipe leaves it open, and that the choice
changes the speed, not the training. The memory layout (`train.choose_layout`: channels_last on a CPU whose
convolutions oneDNN runs, unless the model's forward fails in it) and the allocator (`machine.keep_freed_memory`:
glibc keeps freed memory for reuse). Each choice is named in the run's setting. Speed itself is measured in
benchmarks/test_course_epoch.py, not here."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mnist_arch.data import MNIST, load_mnist
from mnist_arch.machine import keep_freed_memory
from mnist_arch.spec import Augment, Recipe
from mnist_arch.train import RunOptions, choose_layout, prepare_model, train_model

ONEDNN = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
#: The course recipe of issue 27, on a few steps: SGD with momentum, rotation, NLL on log_softmax, layout open.
COURSE = Recipe(epochs=2, batch_size=128, optimizer="sgd", lr=0.05, optimizer_kwargs={"momentum": 0.9}, loss="nll",
                augment=Augment(degrees=7.0), normalize=(0.1307, 0.3081), min_accuracy=0.5)


class SmallCourseNet(nn.Module):
    """Conv, ReLU, batch norm, dropout twice, a 1x1 transition, max pooling, a linear head, log_softmax."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, bias=False), nn.ReLU(), nn.BatchNorm2d(8), nn.Dropout(0.05),
            nn.Conv2d(8, 16, 3, bias=False), nn.ReLU(), nn.BatchNorm2d(16), nn.Dropout(0.05),
            nn.Conv2d(16, 8, 1, bias=False), nn.MaxPool2d(2))
        self.head = nn.Linear(8 * 12 * 12, 10)  # learns in a few steps, where GAP would need epochs

    def forward(self, x):
        return F.log_softmax(self.head(self.features(x).flatten(1)), dim=1)


class ViewNet(nn.Module):
    """The classic `x.view(-1, 320)` flatten after the convolutions: it raises on channels_last activations."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)  # 28 -> 26
        self.conv = nn.Conv2d(4, 20, 3, stride=2)  # 26 -> 12
        self.pool = nn.MaxPool2d(3)  # 12 -> 4
        self.fc = nn.Linear(320, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv(F.relu(self.conv1(x)))))
        return F.log_softmax(self.fc(x.view(-1, 320)), dim=1)


@pytest.fixture(scope="module")
def small(mnist_root):
    data = load_mnist(mnist_root)
    return MNIST(data.train_images[:2048], data.train_labels[:2048], data.test_images[:1000], data.test_labels[:1000])


def _images() -> torch.Tensor:
    return torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@ONEDNN
def test_an_open_layout_is_channels_last_on_a_onednn_cpu():
    model = prepare_model(SmallCourseNet(), COURSE)
    model, recipe, note = choose_layout(model, COURSE, _images())
    assert recipe.channels_last is True and recipe == dataclasses.replace(COURSE, channels_last=True)
    assert note == ", channels_last (chosen: oneDNN runs this CPU's convolutions)"
    assert model.features[4].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("declared", [False, True])
def test_a_declared_layout_is_kept_and_not_named(declared):
    recipe = dataclasses.replace(COURSE, channels_last=declared)
    model = prepare_model(SmallCourseNet(), recipe)
    assert choose_layout(model, recipe, _images()) == (model, recipe, "")


def test_without_a_convolution_there_is_nothing_to_choose():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert choose_layout(model, COURSE, _images()) == (model, dataclasses.replace(COURSE, channels_last=False), "")


@ONEDNN
def test_a_model_that_fails_in_channels_last_trains_contiguous_and_says_why(small):
    torch.manual_seed(0)
    model = ViewNet()
    result = train_model(model, COURSE, small, RunOptions(threads=1))
    assert result.setting.startswith("fp32, contiguous (its forward raised in channels_last: RuntimeError: view size")
    assert model.conv.weight.is_contiguous() and not model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert result.test_accuracy > 0.3  # it trained (a tenth is chance), in the layout its code works in


@ONEDNN
def test_the_layout_check_leaves_the_model_and_the_random_streams_as_they_were():
    model = prepare_model(SmallCourseNet(), COURSE).train()
    norm = model.features[2]
    stats = norm.running_mean.clone(), norm.running_var.clone(), int(norm.num_batches_tracked)
    rng = torch.get_rng_state()
    model, _, note = choose_layout(model, COURSE, _images())
    assert "channels_last" in note and model.training and all(m.training for m in model.modules())
    assert torch.equal(norm.running_mean, stats[0]) and torch.equal(norm.running_var, stats[1])
    assert int(norm.num_batches_tracked) == stats[2] and torch.equal(torch.get_rng_state(), rng)


@ONEDNN
def test_the_chosen_layout_trains_like_the_contiguous_one(small):
    """Same model, seed and batches: only the kernels' summation order differs, so the accuracy is the same
    within noise; the setting names every choice."""
    runs = {}
    for declared in (False, None):
        torch.manual_seed(0)
        runs[declared] = train_model(SmallCourseNet(), dataclasses.replace(COURSE, channels_last=declared), small,
                                     RunOptions(seed=0, threads=1))
    plain, chosen = runs[False], runs[None]
    assert plain.test_accuracy > 0.6 and abs(plain.test_accuracy - chosen.test_accuracy) < 0.02, (
        plain.test_accuracy, chosen.test_accuracy)
    assert "channels_last (chosen" in chosen.setting and "channels_last" not in plain.setting
    assert chosen.setting.endswith(keep_freed_memory())  # ", freed memory kept for reuse (glibc)" under glibc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keeping_freed_memory_is_set_once_in_the_process_that_trains():
    """Under glibc, `keep_freed_memory` sets both mallopt parameters (each call returns 1) and says so in words;
    a second call changes nothing and says the same. Its effect, page faults a step before and after, is a
    noisy count (glibc adapts its own threshold) measured over rounds in benchmarks/test_page_faults.py."""
    code = textwrap.dedent("""
        import ctypes, json
        from mnist_arch import machine
        calls = []
        libc = ctypes.CDLL(None)
        real = libc.mallopt

        class Counting:
            def __getattr__(self, name):
                return getattr(libc, name)

            def mallopt(self, option, value):
                calls.append((option, value))
                return real(option, value)

        machine.ctypes = type("C", (), {"CDLL": staticmethod(lambda _: Counting())})
        first, second = machine.keep_freed_memory(), machine.keep_freed_memory()
        print(json.dumps({"first": first, "second": second, "calls": calls,
                          "glibc": hasattr(libc, "gnu_get_libc_version")}))
    """)
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.splitlines()[-1])
    if not out["glibc"]:
        pytest.skip("not glibc: nothing is changed")
    assert out["first"] == out["second"] == ", freed memory kept for reuse (glibc)"
    assert out["calls"] == [[-3, 32 << 20], [-1, 256 << 20]]  # M_MMAP_THRESHOLD, then M_TRIM_THRESHOLD; once
