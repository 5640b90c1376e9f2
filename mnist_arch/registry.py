"""The model registry: register, create, list (timm's three verbs), plus each model's declared spec.

A model file defines a builder and decorates it with `@register_model(spec)`; the builder's
function name is the registry name. Importing `mnist_arch.models` registers the five references.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING

from mnist_arch.errors import MnistArchError
from mnist_arch.spec import Spec

if TYPE_CHECKING:  # the references import torch when they are first needed (`_ensure_loaded`), not before
    import torch.nn as nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_SPECS: dict[str, Spec] = {}


def register_model(spec: Spec) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        _SPECS[name] = dataclasses.replace(spec, source=spec.source or f"{builder.__module__}.{name}")
        return builder

    return decorate


def _ensure_loaded() -> None:
    import mnist_arch.models  # noqa: F401  (registers the reference architectures)


def _known(name: str) -> None:
    _ensure_loaded()
    if name not in _BUILDERS:
        raise MnistArchError(
            f"No registered model is named {name!r}; known models: {', '.join(sorted(_BUILDERS))}."
        )


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    _ensure_loaded()
    return sorted(n for n in _BUILDERS if fnmatch.fnmatchcase(n, pattern))


def create_model(name: str, num_classes: int = 10) -> nn.Module:
    """A registered architecture, built with fresh weights (every reference takes its number of classes)."""
    _known(name)
    return _BUILDERS[name](num_classes=num_classes)


def get_spec(name: str) -> Spec:
    _known(name)
    return _SPECS[name]


def builder_target(name: str) -> str:
    """The registered builder as a loader target, package.module:function: a registered model is built
    through the same door as a user's."""
    _known(name)
    builder = _BUILDERS[name]
    return f"{builder.__module__}:{builder.__name__}"


def declarations() -> list[tuple[str, str, Spec, str | None]]:
    """Every registered model as (name, builder target, spec, the loss of its recipe): plain records, from
    which `mnist_arch.project` makes its declarations. Importing this module imports no torch; calling this
    does (the references), so a process without torch yet calls it in a worker (`project.registered_models_here`)."""
    models = []
    for name in list_models():
        spec = get_spec(name)
        recipe = spec.recipes.get("full") or spec.recipes.get("quick")
        models.append((name, builder_target(name), spec, recipe.loss if recipe else None))
    return models
