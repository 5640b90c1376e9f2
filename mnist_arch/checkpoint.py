"""A trained model's file: its weights, the spec it was declared with and its run's metrics (`mnist-arch train
--save`), read back with `weights_only=True` so that no code runs while loading (`bench --weights`).

Runs in a worker (it imports torch).
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn as nn

from mnist_arch.errors import MnistArchError
from mnist_arch.runs import TrainResult


def _plain(value):
    """Spec/recipe values as lists, dicts and scalars, so a checkpoint loads with weights_only=True."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items) if isinstance(value, (set, frozenset)) else items
    if hasattr(value, "__dataclass_fields__"):
        return _plain(asdict(value))
    return value


def save_checkpoint(path, model: nn.Module, spec, result: TrainResult) -> None:
    """Weights, the declared spec and the run's metrics in one file."""
    torch.save({"model": result.model, "recipe": result.recipe, "state_dict": model.state_dict(),
                "spec": _plain(spec), "metrics": result.to_dict()}, path)


def load_checkpoint(path) -> dict:
    """The dict `save_checkpoint` wrote, read with weights_only=True (no code runs while loading)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MnistArchError(f"Checkpoint {path} does not exist.") from None
    except Exception as exc:  # a foreign or truncated file: pickle, zip and torch each raise their own
        raise MnistArchError(f"Checkpoint {path} cannot be read as a mnist-arch checkpoint: "
                             f"{type(exc).__name__}: {exc}".split("\n")[0]) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "model" not in checkpoint:
        raise MnistArchError(f"Checkpoint {path} is not one `mnist-arch train --save` wrote (no model name "
                             "and state_dict).")
    return checkpoint
