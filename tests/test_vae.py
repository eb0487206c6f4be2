"""Tests of vaecourse.chapters.vae: shapes, the loss terms against independent formulas,
the importance-weighted log-likelihood against a likelihood computed exactly by
quadrature, the training recipes, sampling, and the reference VAE of source 001."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

from vaecourse import train
from vaecourse.chapters import vae as vae_module
from vaecourse.chapters.autoencoders import Autoencoder
from vaecourse.chapters.vae import (
    VAE,
    ReferenceVAE,
    ae_terms,
    gaussian_negative_elbo,
    iw_nll,
    log_weights,
    negative_elbo,
    reference_fit_loss,
    reference_loss,
    sample,
    train_official_recipe,
    train_vae,
)
from vaecourse.data import binarize_dynamic, binarize_static
from vaecourse.prob import elbo_from_log_weights, iw_bound
from vaecourse.train import QUICK_BATCHES


def binary_images(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.2), generator=gen)


def small_vae(latent_dim=3, seed=0):
    torch.manual_seed(seed)
    return VAE(latent_dim=latent_dim, hidden=(16,))


def test_shapes():
    model = small_vae()
    x = binary_images(4)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, 3)
    assert model.reparameterize(mu, logvar, samples=5).shape == (5, 4, 3)
    logits, mu2, _ = model(x)
    assert logits.shape == (4, 784) and torch.equal(mu, mu2)
    rec, kl = negative_elbo(model, x, samples=2)
    assert rec.shape == kl.shape == (4,)
    assert log_weights(model, x, 7).shape == (7, 4)
    assert iw_nll(model, x, samples=10).shape == (4,)


def test_negative_elbo_terms_match_independent_formulas():
    model = small_vae()
    x = binary_images(6)
    torch.manual_seed(1)
    rec, kl = negative_elbo(model, x)
    torch.manual_seed(1)
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(1, *mu.shape)
    bce = F.binary_cross_entropy_with_logits(
        model.decoder(z[0]), x.flatten(1), reduction="none"
    ).sum(1)
    torch.testing.assert_close(rec, bce)
    q = D.Normal(mu, torch.exp(0.5 * logvar))
    expected_kl = D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(kl, expected_kl)


def test_gaussian_reconstruction_is_the_normal_log_density():
    model = small_vae()
    x = torch.rand(5, 784, generator=torch.Generator().manual_seed(3))
    sigma = 0.3
    torch.manual_seed(2)
    rec, kl = gaussian_negative_elbo(model, x, sigma)
    torch.manual_seed(2)
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar)[0]
    mean = torch.sigmoid(model.decoder(z))
    expected = -D.Normal(mean, sigma).log_prob(x).sum(1)
    torch.testing.assert_close(rec, expected)
    assert (kl >= 0).all()


def test_more_samples_average_the_reconstruction_term():
    """With L samples the reconstruction term is the mean over the L draws."""
    model = small_vae()
    x = binary_images(3)
    torch.manual_seed(5)
    rec_l, _ = negative_elbo(model, x, samples=4)
    torch.manual_seed(5)
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar, 4)
    per_draw = F.binary_cross_entropy_with_logits(
        model.decoder(z), x.flatten(1).expand(4, -1, -1), reduction="none"
    ).sum(-1)
    torch.testing.assert_close(rec_l, per_draw.mean(0))


def test_importance_weighted_estimate_with_one_sample_is_the_elbo_estimate():
    model = small_vae()
    x = binary_images(8)
    torch.manual_seed(0)
    log_w = log_weights(model, x, 1)
    torch.testing.assert_close(iw_bound(log_w), elbo_from_log_weights(log_w))
    # and iw_nll with k = 1 returns minus that same estimate (same seed, same draw)
    torch.manual_seed(11)
    expected = -log_weights(model, x, 1)[0]
    torch.testing.assert_close(iw_nll(model, x, samples=1, seed=11), expected)


def test_mean_log_weight_is_the_elbo():
    """E_q[log w] = E_q[log p(x|z)] - KL(q ‖ p): the Monte Carlo mean of log w agrees with
    the loss, whose KL is in closed form, within Monte Carlo error."""
    model = small_vae()
    x = binary_images(4)
    torch.manual_seed(0)
    log_w = log_weights(model, x, 5000).detach()
    rec, kl = negative_elbo(model, x, samples=5000)
    error = log_w.std(0) / math.sqrt(5000)
    assert (
        (-log_w.mean(0) - (rec + kl).detach()).abs() < 5 * error + 1e-3
    ).all()


def exact_nll(model, x):
    """-log p(x) of a model with one latent dimension, by quadrature over z:
    p(x) = ∫ p(x|z) N(z; 0, 1) dz on a fine grid of [-10, 10], in double precision, with
    log Ber(x; sigmoid(l)) = x l - log(1 + e^l) written out independently of the package."""
    z = torch.linspace(-10, 10, 40001, dtype=torch.float64).unsqueeze(1)
    dz = float(z[1] - z[0])
    with torch.no_grad():
        logits = model.decoder(z.float()).double()  # (grid, 784)
    x = x.flatten(1).double()  # (N, 784)
    log_px_z = logits @ x.T - F.softplus(logits).sum(
        1, keepdim=True
    )  # (grid, N)
    log_prior = -0.5 * (math.log(2 * math.pi) + z**2)
    return -(torch.logsumexp(log_px_z + log_prior, dim=0) + math.log(dz))


def test_importance_weighted_estimate_converges_to_the_exact_likelihood():
    torch.manual_seed(0)
    model = VAE(latent_dim=1, hidden=(8,), activation=nn.Tanh)
    with torch.no_grad():  # a gentler decoder, so 5,000 samples are plenty
        model.decoder[-1].weight.mul_(0.5)
    x = binary_images(5, seed=1)
    exact = exact_nll(model, x).float()
    many = iw_nll(model, x, samples=5000, seed=0)
    torch.testing.assert_close(many, exact, atol=0.1, rtol=0)
    # The ELBO (the mean log-weight) is a looser bound: above -log p(x) by the KL from
    # q(z|x) to the true posterior, which this untrained encoder does not match.
    torch.manual_seed(0)
    negative_elbo_estimate = -log_weights(model, x, 5000).mean(0)
    assert (negative_elbo_estimate > exact + 0.1).all()
    assert (many < negative_elbo_estimate).all()


def test_iw_nll_is_seeded_and_leaves_the_caller_alone():
    model = small_vae()
    model.train()
    x = binary_images(3)
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a = iw_nll(model, x, samples=50, chunk=20, seed=3)
    after = torch.rand(1)
    assert torch.equal(before, after), (
        "iw_nll changed the caller's random stream"
    )
    assert torch.equal(a, iw_nll(model, x, samples=50, chunk=20, seed=3))
    assert model.training, "iw_nll must restore training mode"


@pytest.mark.parametrize(
    "x, k, message",
    [
        (torch.full((2, 784), 0.5), 10, "binary images"),
        (torch.zeros(2, 100), 10, "784 pixels"),
        (torch.zeros(2, 784), 0, ">= 1"),
    ],
)
def test_iw_nll_rejects_bad_input(x, k, message):
    with pytest.raises(ValueError, match=message):
        iw_nll(small_vae(), x, samples=k)


def test_gaussian_decoder_needs_a_positive_sigma():
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_negative_elbo(small_vae(), torch.zeros(1, 784), 0.0)


def test_gradient_variance_falls_as_one_over_the_number_of_samples():
    """The L-sample gradient is the mean of L independent one-sample gradients, so its
    variance (over the noise, for a fixed batch) is the one-sample variance divided by L."""
    model = small_vae(latent_dim=4)
    x = binary_images(16)

    def total_variance(samples, repeats=300):
        grads = []
        for _ in range(repeats):
            model.zero_grad()
            rec, kl = negative_elbo(model, x, samples)
            (rec + kl).mean().backward()
            grads.append(
                torch.cat([p.grad.flatten() for p in model.parameters()])
            )
        return torch.stack(grads).var(0).sum().item()

    torch.manual_seed(0)
    one, four = total_variance(1), total_variance(4)
    assert 4 * 0.8 < one / four < 4 * 1.25


@pytest.mark.usefixtures("full_mode")
def test_train_vae_lowers_the_negative_elbo_and_logs_both_terms():
    """Three epochs of the recipe on 512 images lower the loss; the history has the two
    terms, and with the KL warm-up over, the last epoch's loss is close to their sum."""
    torch.manual_seed(0)
    images = torch.rand(
        512, 1, 28, 28, generator=torch.Generator().manual_seed(0)
    )
    images = (images > 0.7).float() * 0.9 + 0.05
    model = VAE(latent_dim=4, hidden=(32,))
    x = binarize_static(images, seed=1)
    torch.manual_seed(2)
    start = float(sum(negative_elbo(model, x)).mean().detach())
    history = train_vae(
        model, images, epochs=3, batch_size=64, lr=3e-3, kl_warmup=0.3, seed=0
    )
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert {"loss", "reconstruction", "kl"} <= history[-1].keys()
    torch.manual_seed(2)
    end = float(sum(negative_elbo(model, x)).mean().detach())
    assert end < start - 20
    last = history[-1]
    assert last["loss"] == pytest.approx(
        last["reconstruction"] + last["kl"], rel=1e-6
    )
    # during the warm-up epoch the KL weight was below 1
    first = history[0]
    assert first["loss"] < first["reconstruction"] + first["kl"]


def test_train_vae_is_deterministic():
    images = torch.rand(128, 784, generator=torch.Generator().manual_seed(0))

    def weights():
        torch.manual_seed(0)
        model = VAE(latent_dim=2, hidden=(8,))
        train_vae(model, images, epochs=1, batch_size=32, seed=3)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(), weights())


def test_train_vae_binarizes_unless_told_not_to_and_uses_the_given_terms():
    images = torch.full((64, 784), 0.5)
    seen = []

    def terms(model, x):
        seen.append(x)
        return negative_elbo(model, x)

    for binarize in (True, False):
        seen.clear()
        torch.manual_seed(0)
        train_vae(
            VAE(latent_dim=2, hidden=(8,)),
            images,
            epochs=1,
            batch_size=32,
            terms=terms,
            binarize=binarize,
            desc="test",
        )
        assert len(seen) == 2
        values = torch.cat(seen).unique()
        if binarize:
            assert set(values.tolist()) == {0.0, 1.0}
        else:
            assert values.tolist() == [0.5]


def test_iw_nll_does_not_depend_on_the_chunk_size():
    """The chunk size only trades memory for speed: the same draws, the same numbers.
    (PyTorch's CPU generator fills normals 16 at a time, so the draws split identically
    across chunks when each chunk holds a multiple of 16 numbers, as with 16 latents.)"""
    model, x = small_vae(latent_dim=16), binary_images(3)
    a = iw_nll(model, x, samples=60, chunk=7, seed=1)
    b = iw_nll(model, x, samples=60, chunk=60, seed=1)
    assert torch.allclose(a, b, atol=1e-4)


def test_encode_gives_float32_under_bfloat16_autocast():
    """The KL term is computed from encode's outputs: they stay float32 even when the
    network's matrix products run in bfloat16."""
    model = small_vae()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.encoder(binary_images(4).flatten(1))
        mu, logvar = model.encode(binary_images(4))
    assert hidden.dtype == torch.bfloat16  # autocast is on
    assert mu.dtype == logvar.dtype == torch.float32


@pytest.mark.parametrize("fast", [torch.bfloat16, torch.float32])
def test_mixed_precision_runs_the_products_in_the_fast_dtype_and_keeps_float32_weights(
    full_mode, monkeypatch, fast
):
    """train_vae(mixed_precision=True): the linear layers compute in fast_dtype() (bfloat16
    where the CPU has it, else float32: then nothing changes), the weights and the logged
    terms stay float32, and the loss still falls. Without it, float32 throughout."""
    monkeypatch.setattr(vae_module, "fast_dtype", lambda: fast)
    images = torch.rand(256, 784, generator=torch.Generator().manual_seed(0))
    for mixed, expected in [(True, {fast}), (False, {torch.float32})]:
        seen = set()
        torch.manual_seed(0)
        model = VAE(latent_dim=2, hidden=(16,))
        model.decoder[0].register_forward_hook(
            lambda m, i, out, seen=seen: seen.add(out.dtype)
        )
        history = train_vae(
            model,
            images,
            epochs=3,
            batch_size=64,
            mixed_precision=mixed,
            desc="t",
        )
        assert seen == expected
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert history[-1]["loss"] < history[0]["loss"]


def test_train_vae_fits_its_learning_rate_schedule_to_the_quick_steps(
    monkeypatch, learning_rates
):
    """In quick mode train_vae takes QUICK_BATCHES steps, and its one-cycle learning rate
    rises to lr and decays to almost 0 within them, not over the full run's steps (or
    CI's models would never leave the warm-up)."""
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    images = torch.rand(
        64 * 40, 784, generator=torch.Generator().manual_seed(0)
    )
    model = VAE(latent_dim=2, hidden=(8,))
    train_vae(model, images, epochs=3, batch_size=64, lr=4e-3, desc="t")
    assert len(learning_rates) == QUICK_BATCHES
    peak = max(range(len(learning_rates)), key=learning_rates.__getitem__)
    assert learning_rates[peak] == pytest.approx(4e-3)
    assert 0 < peak < QUICK_BATCHES // 2
    assert learning_rates[0] < 4e-3 / 10
    assert learning_rates[-1] < 4e-3 / 100


def test_ae_terms_are_the_reconstruction_of_the_code_and_no_kl():
    torch.manual_seed(0)
    model = Autoencoder(3, (16,))
    x = binary_images(5)
    reconstruction, kl = ae_terms(model, x)
    logits = model.decoder(model.encode(x))
    bce = F.binary_cross_entropy_with_logits(
        logits, x.flatten(1), reduction="none"
    )
    torch.testing.assert_close(reconstruction, bce.sum(1))
    assert torch.equal(kl, torch.zeros(5))


@pytest.mark.usefixtures("full_mode")
def test_train_vae_trains_a_plain_autoencoder_with_ae_terms():
    torch.manual_seed(0)
    model = Autoencoder(4, (32,))
    images = torch.rand(256, 784, generator=torch.Generator().manual_seed(1))
    history = train_vae(
        model, images, epochs=3, batch_size=64, terms=ae_terms, desc="t"
    )
    assert all(row["kl"] == 0 for row in history)
    assert history[-1]["loss"] == pytest.approx(history[-1]["reconstruction"])
    assert history[-1]["loss"] < history[0]["loss"]


def test_the_autoencoder_of_the_same_size_has_the_vaes_networks():
    """The VAE chapter compares its VAE with "a plain autoencoder of the same size": built
    with the same arguments, the two have the same layers and activation, the encoder
    differing only in its last layer (the code itself, not a mean and a log-variance)."""
    vae = VAE(8, (64, 32), nn.SiLU)
    ae = Autoencoder(8, (64, 32), nn.SiLU)
    assert repr(ae.decoder) == repr(vae.decoder)
    assert repr(ae.encoder[:-1]) == repr(vae.encoder[:-1])
    assert ae.encoder[-1].out_features == 8
    assert vae.encoder[-1].out_features == 2 * 8


def test_sample_decodes_prior_draws_to_bernoulli_means():
    model = small_vae()
    a = sample(model, 6, seed=2)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    expected = torch.sigmoid(model.decoder(z)).view(6, 1, 28, 28).detach()
    torch.testing.assert_close(a, expected)
    assert a.shape == (6, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert not a.requires_grad
    assert torch.equal(a, sample(model, 6, seed=2))
    assert not torch.equal(a, sample(model, 6, seed=3))
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample(model, 0)


class StepClock:
    """A stand-in for ``time`` in vaecourse.train: one second passes per training step."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def tick(self, *args):
        self.now += 1.0


def test_the_official_recipe_trains_until_its_time_is_up(
    full_mode, monkeypatch
):
    """train_official_recipe(model, images, seconds) trains for ``seconds`` (the training
    time of the model it is compared with), across epochs, then stops: here a clock that
    advances one second per step, so 5.5 seconds are 6 steps."""
    clock = StepClock()
    monkeypatch.setattr(
        train, "time", SimpleNamespace(perf_counter=clock.perf_counter)
    )
    torch.manual_seed(0)
    model = VAE(latent_dim=2, hidden=(8,))
    model.encoder.register_forward_pre_hook(
        clock.tick
    )  # one encoding per step
    before = [p.detach().clone() for p in model.parameters()]
    images = torch.rand(
        4 * 64, 1, 28, 28, generator=torch.Generator().manual_seed(0)
    )
    history = train_official_recipe(model, images, 5.5, batch_size=64)
    assert [row["images"] for row in history] == [4 * 64, 2 * 64]
    assert all(
        not torch.equal(a, b)
        for a, b in zip(before, model.parameters(), strict=True)
    )
    assert not model.training


def test_the_official_recipe_uses_a_constant_learning_rate(
    full_mode, learning_rates
):
    model = VAE(latent_dim=2, hidden=(8,))
    images = torch.rand(
        3 * 32, 784, generator=torch.Generator().manual_seed(0)
    )
    train_official_recipe(model, images, 0.0, batch_size=32, lr=2e-3)
    assert learning_rates and set(learning_rates) == {2e-3}


def test_the_official_recipe_takes_the_quick_steps_in_quick_mode(monkeypatch):
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    model = VAE(latent_dim=2, hidden=(8,))
    images = torch.rand(
        40 * 16, 784, generator=torch.Generator().manual_seed(0)
    )
    history = train_official_recipe(model, images, 3600.0, batch_size=16)
    assert [row["images"] for row in history] == [QUICK_BATCHES * 16]


# --- the reference VAE of source 001 ----------------------------------------------------


def test_reference_vae_shapes_and_its_evaluation_code_is_the_posterior_mean():
    torch.manual_seed(0)
    model = ReferenceVAE()
    x = binary_images(4)
    output, mu, gamma = model(x)
    assert output.shape == (4, 784) and mu.shape == gamma.shape == (4, 2)
    assert ((output > 0) & (output < 1)).all()
    model.eval()
    output, mu, _ = model(x)
    torch.testing.assert_close(output, model.decoder(mu))


def test_reference_loss_is_the_per_image_negative_elbo_divided_by_784():
    """Source 001's loss, BCE averaged over batch and pixels plus KL / (batch · 784), is
    the batch mean of the per-image negative ELBO divided by 784, for the same noise."""
    torch.manual_seed(0)
    model = ReferenceVAE().train()
    x = binary_images(8).flatten(1)
    torch.manual_seed(1)
    loss = reference_loss(x, *model(x))
    torch.manual_seed(1)
    mu, gamma = model.encode(x)
    z = mu + torch.exp(0.5 * gamma) * torch.randn_like(mu)
    probs = model.decoder(z)
    log_px_z = D.Bernoulli(probs=probs).log_prob(x).sum(1)
    q = D.Normal(mu, torch.exp(0.5 * gamma))
    kl = D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(1)
    per_image = (-log_px_z + kl).mean()
    torch.testing.assert_close(784 * loss, per_image)


def test_reference_fit_loss_binarizes_the_batch_dynamically():
    torch.manual_seed(0)
    model = ReferenceVAE().train()
    images = torch.rand(
        6, 1, 28, 28, generator=torch.Generator().manual_seed(2)
    )
    torch.manual_seed(3)
    got = reference_fit_loss(model, (images,))
    assert set(got) == {"loss"}
    torch.manual_seed(3)
    x = binarize_dynamic(images)
    torch.testing.assert_close(got["loss"], reference_loss(x, *model(x)))
