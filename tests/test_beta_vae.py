"""Tests of vaecourse.chapters.beta_vae: the β-weighted objective, the rate and distortion
it reports, active dimensions and traversals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from vaecourse.chapters import beta_vae
from vaecourse.chapters.vae import VAE, gaussian_negative_elbo
from vaecourse.data import binarize_static


def small_vae(latent_dim=3, seed=0):
    torch.manual_seed(seed)
    return VAE(latent_dim=latent_dim, hidden=(16,))


def grey_images(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 28, 28, generator=gen)
    return (images > 0.7).float() * 0.9 + 0.05


def test_rate_and_distortion_match_independent_formulas():
    """Distortion = summed binary cross-entropy at a posterior draw, rate = the closed-form
    KL to N(0, I); their sum is the negative ELBO and kl_per_dim sums to the rate."""
    model = small_vae()
    images = grey_images(7)
    result = beta_vae.rate_distortion(model, images, seed=3, batch_size=3)
    x = binarize_static(images, seed=3).flatten(1)
    mu, logvar = model.encode(x)
    q = D.Normal(mu, torch.exp(0.5 * logvar))
    kl = D.kl_divergence(q, D.Normal(0.0, 1.0))
    assert result["rate"] == pytest.approx(
        float(kl.sum(1).mean().detach()), rel=1e-5
    )
    torch.testing.assert_close(result["kl_per_dim"], kl.mean(0).detach())
    # the distortion with one draw per image; same seed, batches of 3 as above
    torch.manual_seed(3)
    bce = []
    for start in range(0, 7, 3):
        xb = x[start : start + 3]
        m, lv = model.encode(xb)
        z = m + torch.exp(0.5 * lv) * torch.randn(1, *m.shape)
        logits = model.decoder(z[0])
        bce.append(
            F.binary_cross_entropy_with_logits(logits, xb, reduction="none")
        )
    expected = float(torch.cat(bce).sum(1).mean().detach())
    assert result["distortion"] == pytest.approx(expected, rel=1e-5)
    # the per-image values, for paired comparisons
    torch.testing.assert_close(
        result["distortion_per_image"], torch.cat(bce).sum(1).detach()
    )
    torch.testing.assert_close(result["rate_per_image"], kl.sum(1).detach())


def test_rate_distortion_is_seeded_and_leaves_the_caller_alone():
    model = small_vae()
    images = grey_images(5)
    torch.manual_seed(1)
    before = torch.rand(1)
    torch.manual_seed(1)
    a = beta_vae.rate_distortion(model, images)
    assert torch.equal(before, torch.rand(1))
    assert (
        a["distortion"]
        == beta_vae.rate_distortion(model, images)["distortion"]
    )
    with pytest.raises(ValueError, match="at least one image"):
        beta_vae.rate_distortion(model, images[:0])


def test_squared_error_plus_beta_kl_is_a_gaussian_decoder_with_two_sigma_squared_beta():
    """||x - x̂||² + β KL = 2σ² (-ELBO of N(x̂, σ² I)) - const when β = 2σ²: source 002's
    β-VAE loss and a Gaussian-decoder VAE have the same minimiser."""
    model = small_vae()
    x = grey_images(4).flatten(1)
    sigma = 0.4
    beta = 2 * sigma**2
    torch.manual_seed(0)
    rec, kl = gaussian_negative_elbo(model, x, sigma)
    torch.manual_seed(0)
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar)[0]
    squared = ((x - torch.sigmoid(model.decoder(z))) ** 2).sum(1)
    constant = 784 / 2 * math.log(2 * math.pi * sigma**2)
    torch.testing.assert_close(
        squared + beta * kl, 2 * sigma**2 * (rec + kl - constant)
    )


def test_active_dimensions_counts_kl_above_the_threshold():
    kl = torch.tensor([0.0, 0.005, 0.02, 3.0])
    assert beta_vae.active_dimensions(kl).tolist() == [
        False,
        False,
        True,
        True,
    ]
    assert beta_vae.active_dimensions(kl, threshold=0.001).sum() == 3
    with pytest.raises(ValueError, match="threshold"):
        beta_vae.active_dimensions(kl, threshold=-1)


def test_traversal_changes_one_dimension_per_row():
    model = small_vae()
    image = grey_images(1)
    values = [-2.0, 0.0, 2.0]
    out = beta_vae.traversal(model, image, values)
    assert out.shape == (3, 3, 1, 28, 28)
    mu, _ = model.encode(image.flatten(1))
    for j in range(3):
        for k, v in enumerate(values):
            z = mu.clone()
            z[0, j] = v
            expected = torch.sigmoid(model.decoder(z)).view(1, 28, 28)
            torch.testing.assert_close(out[j, k], expected.detach())


@pytest.mark.usefixtures("full_mode")
def test_train_beta_vae_weights_the_rate_by_beta():
    """After training with a large β the rate is far smaller than with a small β, and the
    logged loss is distortion + β rate once the warm-up is over."""
    images = grey_images(512)
    rates = {}
    for beta in (0.1, 10.0):
        model = small_vae(latent_dim=4)
        history = beta_vae.train_beta_vae(
            model, images, beta=beta, epochs=3, batch_size=64, kl_warmup=0.3
        )
        last = history[-1]
        assert last["loss"] == pytest.approx(
            last["reconstruction"] + beta * last["kl"], rel=0.02
        )
        rates[beta] = beta_vae.rate_distortion(model, images)["rate"]
    assert rates[10.0] < 0.5 * rates[0.1]
    with pytest.raises(ValueError, match="beta must be > 0"):
        beta_vae.train_beta_vae(small_vae(), images, beta=0, epochs=1)
