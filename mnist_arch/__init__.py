"""mnist-arch: declared facts about MNIST CNNs, proven fast."""

__version__ = "0.1.0"  # the one place: packaging reads it (pyproject.toml), release.yml checks the tag
#: mnist-arch's own GitHub repository, owner/name: the one place. setup.py makes the project URLs from it, `init`'s
#: messages read it, and tests/test_docs.py checks that every mention of it in the README, action.yml,
#: .pre-commit-hooks.yaml and docs/ says the same. OWNER is a placeholder until the repository is published: change
#: it here, and that test names each line to change with it. (`OWNER/REPOSITORY` and `OWNER/REPO` elsewhere stand
#: for the user's own repository, and stay.)
REPOSITORY = "OWNER/mnist-arch"

# Nothing here imports torch (the pytest plugin, loaded by every pytest run of anyone who installs us, imports
# this package): the registry loads the reference models, and with them torch, when first asked for them.
from mnist_arch.errors import MnistArchError  # noqa: E402
from mnist_arch.registry import create_model, get_spec, list_models, register_model  # noqa: E402
from mnist_arch.spec import Augment, Layer, Recipe, Spec  # noqa: E402

__all__ = [
    "REPOSITORY", "Augment", "Layer", "MnistArchError", "Recipe", "Spec",
    "create_model", "get_spec", "list_models", "register_model",
]
