"""pytest plugin (entry point pytest11): markers for now; the compliance collection comes with issue 5."""


def pytest_configure(config):
    config.addinivalue_line("markers", "training: trains on real MNIST (needs the data; see README)")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without it")
