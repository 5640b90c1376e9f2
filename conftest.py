"""Repository-wide pytest set-up, for tests/ and benchmarks/."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see mnist_arch._forkserver


def pytest_configure(config):
    # pyproject's addopts pass --benchmark-disable so that plain `pytest` runs each benchmark body once,
    # as a smoke test. Asking for --benchmark-only means real timings are wanted, so it turns benchmarking
    # back on (pytest-benchmark, configured after us, would otherwise refuse the pair).
    if config.getoption("benchmark_only", default=False):
        config.option.benchmark_enable = True


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
