"""mnist-arch: declared facts about MNIST CNNs, proven fast."""

from mnist_arch.errors import MnistArchError
from mnist_arch.registry import create_model, get_spec, list_models, register_model
from mnist_arch.spec import Augment, Layer, Recipe, Spec

__all__ = [
    "Augment", "Layer", "MnistArchError", "Recipe", "Spec",
    "create_model", "get_spec", "list_models", "register_model",
]
__version__ = "0.1.0"
