"""mnist-arch: declared facts about MNIST CNNs, proven fast."""

__version__ = "0.1.0"  # the one place: packaging reads it (pyproject.toml), release.yml checks the tag

# Nothing here imports torch (the pytest plugin, loaded by every pytest run of anyone who installs us, imports
# this package): the registry loads the reference models, and with them torch, when first asked for them.
from mnist_arch.errors import MnistArchError  # noqa: E402
from mnist_arch.registry import create_model, get_spec, list_models, register_model  # noqa: E402
from mnist_arch.spec import Augment, Layer, Recipe, Spec  # noqa: E402

__all__ = [
    "Augment", "Layer", "MnistArchError", "Recipe", "Spec",
    "create_model", "get_spec", "list_models", "register_model",
]
