"""Tests of the binarizations and input corruptions of vaecourse.data."""

from __future__ import annotations

import math

import pytest
import torch

from vaecourse import data

pytestmark = pytest.mark.usefixtures("isolated")

D = 28 * 28


def grey_images(n=64, seed=1234):
    """Random grey images (n, 1, 28, 28) with values in [0, 1).

    The seed differs from those given to the corruptions: drawn from the same stream, the
    uniforms of a Bernoulli sample would equal the grey levels and give only zeros.
    """
    return torch.rand(
        n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)
    )


# --- binarization ---------------------------------------------------------------------


def test_binarize_dynamic_gives_only_zeros_and_ones():
    """A dynamic binarization is binary and keeps the shape."""
    x = grey_images()
    b = data.binarize_dynamic(x)
    assert b.shape == x.shape
    assert set(b.unique().tolist()) == {0.0, 1.0}


def test_binarize_dynamic_mean_matches_the_grey_levels():
    """Each pixel is 1 with probability equal to its grey level: the means agree within
    five standard errors of the Bernoulli sum (about 200,000 pixels)."""
    x = grey_images(256)
    b = data.binarize_dynamic(x, generator=torch.Generator().manual_seed(1))
    n = x.numel()
    standard_error = math.sqrt(float((x * (1 - x)).sum())) / n
    assert abs(float(b.mean()) - float(x.mean())) < 5 * standard_error


def test_binarize_dynamic_draws_afresh_on_each_call():
    """Two calls on the same images give two different samples."""
    x = torch.full((16, 1, 28, 28), 0.5)
    assert not torch.equal(data.binarize_dynamic(x), data.binarize_dynamic(x))


def test_binarize_static_is_fixed_by_its_seed():
    """The same seed gives the same binary images; another seed, other images."""
    x = grey_images()
    a = data.binarize_static(x, seed=0)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a, data.binarize_static(x, seed=0))
    assert not torch.equal(a, data.binarize_static(x, seed=1))


@pytest.mark.parametrize(
    "binarize", [data.binarize_dynamic, data.binarize_static]
)
@pytest.mark.parametrize("bad_value", [-0.01, 1.01, 255.0])
def test_binarization_refuses_values_outside_the_unit_interval(
    binarize, bad_value
):
    """Grey levels outside [0, 1] (e.g. raw 0..255 pixels) raise ValueError."""
    x = grey_images(2)
    x[1, 0, 5, 5] = bad_value
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(x)


# --- Gaussian noise -------------------------------------------------------------------


def test_gaussian_noise_with_zero_sigma_returns_the_input():
    """sigma = 0 leaves every value as it was."""
    x = grey_images(4)
    assert torch.equal(data.gaussian_noise(x, 0.0), x)


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0])
def test_gaussian_noise_has_the_asked_standard_deviation(sigma):
    """The added noise has mean 0 and standard deviation sigma, within five standard errors
    (about 400,000 draws)."""
    x = grey_images(512)
    noise = (
        data.gaussian_noise(
            x, sigma, generator=torch.Generator().manual_seed(2)
        )
        - x
    )
    n = noise.numel()
    assert abs(float(noise.mean())) < 5 * sigma / math.sqrt(n)
    assert abs(float(noise.std()) - sigma) < 5 * sigma / math.sqrt(2 * n)


def test_gaussian_noise_keeps_shape_and_dtype():
    """The noisy images have the input's shape and dtype."""
    x = grey_images(3).double()
    y = data.gaussian_noise(x, 0.3)
    assert y.shape == x.shape and y.dtype == torch.float64
    assert not torch.equal(x, y)


@pytest.mark.parametrize("sigma", [-0.1, float("nan")])
def test_gaussian_noise_refuses_a_bad_sigma(sigma):
    """A negative or NaN noise level raises ValueError."""
    with pytest.raises(ValueError, match="sigma"):
        data.gaussian_noise(grey_images(2), sigma)


# --- masking noise --------------------------------------------------------------------


@pytest.mark.parametrize("nu", [0.1, 0.25, 0.5, 0.9])
def test_masking_noise_destroys_exactly_round_nu_d_pixels_per_image(nu):
    """On all-ones images, each image gets exactly round(nu * 784) zeros."""
    x = torch.ones(32, 1, 28, 28)
    y = data.masking_noise(x, nu)
    assert y.shape == x.shape
    zeros_per_image = (y.reshape(32, -1) == 0).sum(dim=1)
    assert zeros_per_image.tolist() == [round(nu * D)] * 32


def test_masking_noise_leaves_other_pixels_unchanged():
    """Pixels that are not destroyed keep their exact value; the input is not modified."""
    x = grey_images(16) * 0.9 + 0.1  # no zeros in the input
    before = x.clone()
    y = data.masking_noise(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    kept = y != 0
    assert torch.equal(y[kept], x[kept])
    assert (kept.reshape(16, -1).sum(dim=1) == D - round(0.3 * D)).all()


def test_masking_noise_draws_a_different_mask_per_image():
    """The destroyed pixels are chosen independently for each image."""
    y = data.masking_noise(torch.ones(4, 1, 28, 28), 0.5)
    masks = y.reshape(4, -1) == 0
    assert not torch.equal(masks[0], masks[1])


def test_masking_noise_with_nu_zero_changes_nothing():
    """nu = 0 destroys no pixel."""
    x = grey_images(4)
    assert torch.equal(data.masking_noise(x, 0.0), x)


def test_masking_noise_with_nu_one_destroys_everything():
    """nu = 1 sets every pixel to 0."""
    y = data.masking_noise(grey_images(4) + 0.5, 1.0)
    assert torch.equal(y, torch.zeros(4, 1, 28, 28))


@pytest.mark.parametrize("nu", [-0.1, 1.1, float("nan")])
def test_masking_noise_refuses_nu_outside_the_unit_interval(nu):
    """A destruction proportion outside [0, 1] raises ValueError naming nu."""
    with pytest.raises(ValueError, match="nu"):
        data.masking_noise(grey_images(2), nu)
