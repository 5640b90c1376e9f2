"""Properties every architecture must have, for any batch size 1..64 (hypothesis)."""

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_arch import create_model, get_spec, list_models

NAMES = list_models()
PROPERTY = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@functools.cache
def model(name):
    torch.manual_seed(0)
    return create_model(name).eval()


def batch(n, seed):
    return torch.rand(n, *get_spec("micro_cnn").input_shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(n=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_output_shape_and_finite(name, n, seed):
    with torch.inference_mode():
        out = model(name)(batch(n, seed))
    assert out.shape == (n, get_spec(name).num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(n=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_eval_is_deterministic(name, n, seed):
    x = batch(n, seed)
    with torch.inference_mode():
        assert torch.equal(model(name)(x), model(name)(x))


@pytest.mark.parametrize("name", NAMES)
@PROPERTY
@given(n=st.integers(2, 64), seed=st.integers(0, 2**16), data=st.data())
def test_rows_are_independent_in_eval(name, n, seed, data):
    # Row i of f(batch) equals f(row i): no information leaks across the batch in eval mode.
    # Tolerance: kernels may pick other algorithms for other batch sizes (float32 rounding).
    i = data.draw(st.integers(0, n - 1))
    x = batch(n, seed)
    with torch.inference_mode():
        whole, alone = model(name)(x)[i], model(name)(x[i : i + 1])[0]
    torch.testing.assert_close(whole, alone, rtol=1e-4, atol=1e-5)
