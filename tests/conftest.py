import os
from pathlib import Path

import pytest
import torch

# CI and dev machines have 2 cores; under pytest-xdist (`pytest -n auto`, the README's and CI's command)
# each worker gets its share, one thread on 2 cores: a second thread per worker only competes.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _WORKERS))

USER_MODELS = Path(__file__).resolve().parent / "user_models"


@pytest.fixture(autouse=True)
def _not_an_xdist_worker_inside(monkeypatch):
    """The pytest runs a test starts (pytester, subprocesses) are not xdist workers: pytest-benchmark takes
    an inherited PYTEST_XDIST_WORKER for one and refuses --benchmark-only. PYTEST_XDIST_WORKER_COUNT
    stays, so the processes a test starts still share this worker's cores (machine.choose_threads)."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_TESTRUNUID", raising=False)


@pytest.fixture(autouse=True)
def _fork_server_preload_as_it_was():
    """In-process `train` and `bench --train` runs call isolate.expect_training: no test leaves that choice
    to the tests after it (which of them starts this process's fork server depends on their order)."""
    from mnist_arch import isolate

    preload = list(isolate._PRELOAD)
    yield
    isolate._PRELOAD[:] = preload


@pytest.fixture
def user_models() -> Path:
    return USER_MODELS


def _training_work(item) -> float:
    """A `training` item's forward work, to start the longest first: epochs x images x mult-adds for the
    quick tier of a registered model, else a large constant (the example repository's training)."""
    from mnist_arch import get_spec, list_models

    name = getattr(item, "callspec", None) and item.callspec.params.get("name")
    if name not in list_models():
        return 1e12
    spec = get_spec(name)
    recipe = spec.recipes.get("quick")
    return 0 if recipe is None else recipe.epochs * (recipe.train_subset or 60_000) * (spec.exact_mult_adds or 0)


def pytest_collection_modifyitems(items):
    """The training items first, longest first. pytest-xdist hands items out in order, one at a time
    (`--maxschedchunk=1` in pyproject's addopts; by default each worker's first chunk is a quarter of its
    share, which put every training item on the first worker): the long ones start at once on both
    workers and the short ones fill in around them instead of one worker finishing alone."""
    training = [item for item in items if item.get_closest_marker("training")]
    if training:
        rest = [item for item in items if not item.get_closest_marker("training")]
        items[:] = sorted(training, key=_training_work, reverse=True) + rest
