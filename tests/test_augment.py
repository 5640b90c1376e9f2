"""Batch random affine: the same maps and pixels as torchvision's affine, drawn like RandomAffine.

Measured against torchvision.transforms.v2.functional.affine (bilinear, fill=None, 28x28 float images in
[0, 1]): matrices agree to 5e-7, pixels to a mean of 2e-7 and a max of 4e-6 (float32 rounding; both build
the same align_corners=False grid about the image centre). TOLERANCE leaves a margin over that.
RandomAffine itself passes fill=0, which in torchvision multiplies border pixels by the sampled mask once
more; on MNIST digits (black margins) that touches a few images in a thousand, at their edge pixels only.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2.functional._geometry import _get_inverse_affine_matrix

from mnist_arch.data import affine_matrices, random_affine, sample_affine_params, warp_affine
from mnist_arch.spec import Augment

TOLERANCE = 1e-5  # max abs pixel difference, [0, 1] units

# (angle, (tx, ty), scale, x-shear): each convention on its own, then together; fractional shifts too.
CASES = [
    (0.0, (0.0, 0.0), 1.0, 0.0),
    (30.0, (0.0, 0.0), 1.0, 0.0),
    (-90.0, (0.0, 0.0), 1.0, 0.0),
    (0.0, (3.0, -2.0), 1.0, 0.0),
    (0.0, (1.5, 0.25), 1.0, 0.0),
    (0.0, (0.0, 0.0), 0.8, 0.0),
    (0.0, (0.0, 0.0), 1.25, 0.0),
    (0.0, (0.0, 0.0), 1.0, 20.0),
    (17.3, (-4.0, 1.0), 0.9, -12.5),
    (-155.0, (2.0, 5.0), 1.1, 35.0),
]


def images(n: int, h: int = 28, w: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed))


def params(cases) -> tuple[torch.Tensor, ...]:
    angle, translate, scale, shear = zip(*cases, strict=True)
    return torch.tensor(angle), torch.tensor(translate), torch.tensor(scale), torch.tensor(shear)


def torchvision_affine(image, angle, translate, scale, shear, fill=None):
    return TF.affine(image, float(angle), [float(t) for t in translate], float(scale), [float(shear), 0.0],
                     interpolation=InterpolationMode.BILINEAR, fill=fill)


def test_matrices_are_torchvisions_inverse_affine_matrices():
    ours = affine_matrices(*params(CASES))
    for case, matrix in zip(CASES, ours, strict=True):
        angle, translate, scale, shear = case
        reference = _get_inverse_affine_matrix([0.0, 0.0], angle, list(translate), scale, [shear, 0.0])
        assert torch.allclose(matrix, torch.tensor(reference).view(2, 3), atol=1e-6), case


@pytest.mark.parametrize("size", [(28, 28), (20, 32)], ids=["square", "wide"])
def test_one_batch_warp_equals_torchvision_per_image(size):
    batch = images(len(CASES), *size)
    ours = warp_affine(batch, affine_matrices(*params(CASES)))
    for i, case in enumerate(CASES):
        reference = torchvision_affine(batch[i], *case)
        assert (ours[i] - reference).abs().max() < TOLERANCE, case


@settings(max_examples=40, deadline=None)
@given(
    angle=st.floats(-180, 180),
    tx=st.floats(-8, 8),
    ty=st.floats(-8, 8),
    scale=st.floats(0.5, 2.0),
    shear=st.floats(-45, 45),
)
def test_any_parameters_equal_torchvision(angle, tx, ty, scale, shear):
    image = images(1, seed=1)
    case = (angle, (tx, ty), scale, shear)
    ours = warp_affine(image, affine_matrices(*params([case])))
    assert (ours[0] - torchvision_affine(image[0], *case)).abs().max() < TOLERANCE


def test_fill_lets_augmentation_follow_normalization():
    # Augmenting normalized images with fill = -mean / std equals normalizing augmented [0, 1] images.
    # (torchvision's own fill path weights edge pixels by its mask once more, so it is not the reference.)
    batch, (mean, std) = images(4), (0.1307, 0.3081)
    matrices = affine_matrices(*params(CASES[-4:]))
    after = warp_affine((batch - mean) / std, matrices, fill=-mean / std)
    assert torch.allclose(after, (warp_affine(batch, matrices) - mean) / std, atol=1e-5)


def test_directions_rotation_clockwise_translation_right_and_down():
    batch = images(2)
    turned, shifted = warp_affine(batch, affine_matrices(*params([(90.0, (0, 0), 1, 0), (0.0, (3, 2), 1, 0)])))
    assert torch.allclose(turned, torch.rot90(batch[0], k=-1, dims=(1, 2)), atol=1e-5)  # clockwise
    expected = torch.zeros_like(batch[1])
    expected[:, 2:, 3:] = batch[1, :, :-2, :-3]
    assert torch.allclose(shifted, expected, atol=1e-5)


def test_identity_gives_the_input_back():
    batch = images(8)
    # Not bit-exact: affine_grid's pixel centres carry float32 rounding (measured max 2.5e-6).
    assert torch.allclose(warp_affine(batch, affine_matrices(*params([CASES[0]] * 8))), batch, atol=TOLERANCE)
    assert torch.allclose(random_affine(batch, Augment()), batch, atol=TOLERANCE)


def test_seeded_generator_repeats_and_matches_its_parameters():
    batch, aug = images(16), Augment(degrees=15, translate=0.1, scale=(0.9, 1.1), shear=10)
    first = random_affine(batch, aug, torch.Generator().manual_seed(7))
    assert torch.equal(first, random_affine(batch, aug, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, random_affine(batch, aug, torch.Generator().manual_seed(8)))
    drawn = sample_affine_params(16, (28, 28), aug, torch.Generator().manual_seed(7))
    assert torch.equal(first, warp_affine(batch, affine_matrices(*drawn)))


def test_parameters_are_drawn_like_random_affine():
    aug = Augment(degrees=10, translate=0.1, scale=(0.9, 1.1), shear=5)
    angle, translate, scale, shear = sample_affine_params(4000, (28, 28), aug, torch.Generator().manual_seed(0))
    assert angle.shape == scale.shape == shear.shape == (4000,) and translate.shape == (4000, 2)
    assert -10 <= angle.min() < -9.9 and 9.9 < angle.max() <= 10
    # 0.1 x 28 = 2.8 pixels, rounded to whole pixels as torchvision does: -3 ... 3 on each axis.
    assert torch.equal(translate, translate.round()) and set(translate.unique().tolist()) == set(range(-3, 4))
    assert 0.9 <= scale.min() < 0.901 and 1.099 < scale.max() <= 1.1
    assert -5 <= shear.min() < -4.99 and 4.99 < shear.max() <= 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_device_are_kept(dtype):
    batch = images(5).to(dtype)
    out = random_affine(batch, Augment(degrees=10, translate=0.1), torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.dtype == dtype and out.device == batch.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_with_a_cpu_or_cuda_generator():
    batch, aug = images(64).cuda(), Augment(degrees=10, translate=0.1, scale=(0.9, 1.1), shear=5)
    on_cpu = random_affine(batch.cpu(), aug, torch.Generator().manual_seed(3))
    on_cuda = random_affine(batch, aug, torch.Generator().manual_seed(3))  # same CPU draws
    assert on_cuda.device == batch.device and (on_cuda.cpu() - on_cpu).abs().max() < 1e-4
    out = random_affine(batch, aug, torch.Generator(device="cuda").manual_seed(3))
    assert out.device == batch.device and out.shape == batch.shape
