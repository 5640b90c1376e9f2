import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))  # CI and dev machines have 2 cores

ROOT = Path(__file__).resolve().parents[1]
USER_MODELS = Path(__file__).resolve().parent / "user_models"


@pytest.fixture
def user_models() -> Path:
    return USER_MODELS


def _default_data_root() -> Path | None:
    for candidate in (os.environ.get("MNIST_ARCH_DATA"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding MNIST/raw; tests that need real data skip without it."""
    root = _default_data_root()
    if root is None:
        pytest.skip("no MNIST copy: set MNIST_ARCH_DATA to a folder containing MNIST/raw/ "
                    "(CI uses ../shared/data)")
    return root
