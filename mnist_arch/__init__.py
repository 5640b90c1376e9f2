"""mnist-arch: declared facts about MNIST CNNs, proven fast."""

# Nothing here imports torch (the pytest plugin, loaded by every pytest run of anyone who installs us, imports
# this package): the registry loads the reference models, and with them torch, when first asked for them.
from mnist_arch.errors import MnistArchError
from mnist_arch.registry import create_model, get_spec, list_models, register_model
from mnist_arch.spec import Augment, Layer, Recipe, Spec

__all__ = [
    "Augment", "Layer", "MnistArchError", "Recipe", "Spec",
    "create_model", "get_spec", "list_models", "register_model",
]
__version__ = "0.1.0"  # the one place: packaging reads it (pyproject.toml), release.yml checks the tag
