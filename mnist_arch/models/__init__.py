"""The reference architectures. Importing this package registers each of them."""

from mnist_arch.models import bn_dropout_cnn, micro_cnn, parallel_cnn, slim_cnn, wide_cnn  # noqa: F401
