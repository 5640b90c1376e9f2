"""The training step's preparation for timing: one step of the trainer (forward, loss, backward, optimizer
step) on a static random batch, as a `bench_prepare.Prepared` callable that `mnist-arch bench --train` and
`benchmarks/test_throughput.py` time. It lives with the trainer: the step is `mnist_arch.train.optimize`, set
up as `mnist_arch.train` sets up a run (the recipe fitted to the device, its memory layout and weight dtype).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn

from mnist_arch.bench_prepare import Prepared, Subject, build
from mnist_arch.machine import resolve_device
from mnist_arch.spec import Recipe
from mnist_arch.train import (
    choose_layout,
    fit_recipe,
    make_optimizer,
    model_input,
    optimize,
    prepare_model,
    recipe_call,
)

TRAIN_BATCH_SIZE = 128  # when the model declares no recipe


def train_recipe(spec: Any) -> Any:
    """The recipe a training benchmark follows: "full", else "quick", else None."""
    recipes = getattr(spec, "recipes", None) or {}
    return recipes.get("full") or recipes.get("quick")


def prepare_train_step(model: str | nn.Module | Subject, batch_size: int | None = None,
                       device: str | torch.device = "cpu", *, recipe: Any = None,
                       seed: int = 0) -> Prepared:
    """One training step (forward, loss, backward, optimizer step) on a static random batch: the trainer's
    own (`mnist_arch.train.optimize`, without data loading and augmentation).

    Follows the model's recipe when it has one (optimizer, lr, loss, batch size, precision, memory layout),
    as it trains on this device (`mnist_arch.train.fit_recipe`: fp32 where bf16 is not native);
    otherwise SGD(lr=0.01, momentum=0.9), batch size `TRAIN_BATCH_SIZE` and cross-entropy.
    """
    dev = resolve_device(device)
    started = time.perf_counter()
    net, name, shape, spec = build(model, seed)
    recipe = recipe if recipe is not None else train_recipe(spec)
    if recipe is None:  # a model without a recipe: plain SGD with momentum on logits
        recipe = Recipe(epochs=1, batch_size=batch_size or TRAIN_BATCH_SIZE, optimizer="sgd", lr=0.01,
                        min_accuracy=0.0, optimizer_kwargs={"momentum": 0.9})
    recipe, setting = fit_recipe(recipe, dev)
    batch_size = batch_size or recipe.batch_size
    # the recipe's memory layout and weight dtype, as it trains
    net = recipe_call("precision", recipe, prepare_model, net, recipe, dev).train()
    if shape[0] == 1:  # the layout the trainer chooses where the recipe leaves it open (MNIST's one channel)
        net, recipe, chosen = choose_layout(net, recipe, torch.zeros(2, *shape[1:], dtype=torch.uint8, device=dev))
        setting += chosen
    optimizer = recipe_call("optimizer", recipe, make_optimizer, net, recipe)
    generator = torch.Generator().manual_seed(seed)
    x = model_input(torch.rand(batch_size, *shape, generator=generator).to(dev), recipe)
    num_classes = getattr(spec, "num_classes", 10)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(dev)

    def step() -> torch.Tensor:
        return optimize(net, optimizer, recipe, x, y)[0]

    step()  # optimizer state (Adam moments, ...) is allocated on the first step, not timed
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return Prepared(name=name, path="train", device=dev, dtype=recipe.compute_dtype,
                    batch_size=batch_size, input=x, step=step, model=net, input_shape=shape,
                    setup_s=time.perf_counter() - started, kind="train",
                    extra={"optimizer": recipe.optimizer, "loss": recipe.loss, "precision": setting})

