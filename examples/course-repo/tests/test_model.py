"""The repository's own tests, as course repositories have them; mnist-arch's items run beside them."""

import torch
from model import Net


def test_output_shape():
    assert Net()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
