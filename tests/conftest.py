from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))  # CI and dev machines have 2 cores

USER_MODELS = Path(__file__).resolve().parent / "user_models"


@pytest.fixture
def user_models() -> Path:
    return USER_MODELS
