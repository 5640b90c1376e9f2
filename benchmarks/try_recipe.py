"""Try a variant of a declared recipe: the same seeded runs and table as `mnist-arch train --format
markdown`, with some fields changed. How the quick recipes in docs/training.md were chosen.

    python benchmarks/try_recipe.py wide_cnn --seed 0-4 --set train_subset=16384 --set batch_size=32
    python benchmarks/try_recipe.py slim_cnn --set "loss='cross_entropy'" --set "schedule_kwargs={'max_lr': 0.02}"

Each --set is FIELD=VALUE with a Python literal; schedule_kwargs and optimizer_kwargs are merged into the
declared ones. Prints the markdown table of the runs (threads as the trainer chooses, or --threads) and
the images each run saw.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses

import torch

from mnist_arch import create_model, get_spec
from mnist_arch.data import load_mnist
from mnist_arch.runs import runs_table
from mnist_arch.spec import Augment
from mnist_arch.train import RunOptions, fit_recipe, train_model


def seeds(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--recipe", default="quick")
    parser.add_argument("--seed", type=seeds, default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    recipe = get_spec(args.name).recipes[args.recipe]
    changes = {}
    for item in args.set:
        field, _, value = item.partition("=")
        changes[field] = (Augment(**ast.literal_eval(value)) if field == "augment" and value != "None"
                          else ast.literal_eval(value))
    for table in ("schedule_kwargs", "optimizer_kwargs"):
        if table in changes:
            changes[table] = {**getattr(recipe, table), **changes[table]}
    recipe = dataclasses.replace(recipe, **changes)
    data = load_mnist(args.data_dir)
    results = []
    for seed in args.seed:
        torch.manual_seed(seed)
        options = RunOptions(name=args.name, recipe_name=args.recipe, seed=seed, threads=args.threads)
        results.append(train_model(create_model(args.name), recipe, data, options))
    fitted, setting = fit_recipe(recipe)  # as the trainer runs it on this CPU
    images = (fitted.train_subset or len(data.train_images)) * fitted.epochs
    print(f"{args.name} `{args.recipe}` with {', '.join(args.set) or 'no changes'}, {setting}: {images:,} training "
          f"images per run ({fitted.epochs} epoch(s), batch {fitted.batch_size})\n")
    print(runs_table(results, args.seed, recipe))


if __name__ == "__main__":
    main()
