"""Tests of vaecourse.vae: shapes, the loss terms against independent formulas, and the
importance-weighted log-likelihood against a likelihood computed exactly by quadrature."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

from vaecourse.data import binarize_static
from vaecourse.divergences import elbo_from_log_weights, iw_bound
from vaecourse.vae import (
    VAE,
    gaussian_negative_elbo,
    iw_nll,
    log_weights,
    mlp,
    negative_elbo,
    train_vae,
)


def binary_images(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.2), generator=gen)


def small_vae(latent_dim=3, seed=0):
    torch.manual_seed(seed)
    return VAE(latent_dim=latent_dim, hidden=(16,))


def test_mlp_is_a_plain_sequential_without_a_final_activation():
    net = mlp([5, 7, 3], nn.GELU)
    assert [type(m) for m in net] == [nn.Linear, nn.GELU, nn.Linear]
    assert net(torch.zeros(2, 5)).shape == (2, 3)


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
    assert ((-log_w.mean(0) - (rec + kl).detach()).abs() < 5 * error + 1e-3).all()


def exact_nll(model, x):
    """-log p(x) of a model with one latent dimension, by quadrature over z:
    p(x) = ∫ p(x|z) N(z; 0, 1) dz on a fine grid of [-10, 10], in double precision, with
    log Ber(x; sigmoid(l)) = x l - log(1 + e^l) written out independently of the package."""
    z = torch.linspace(-10, 10, 40001, dtype=torch.float64).unsqueeze(1)
    dz = float(z[1] - z[0])
    with torch.no_grad():
        logits = model.decoder(z.float()).double()  # (grid, 784)
    x = x.flatten(1).double()  # (N, 784)
    log_px_z = logits @ x.T - F.softplus(logits).sum(1, keepdim=True)  # (grid, N)
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
    assert torch.equal(before, after), "iw_nll changed the caller's random stream"
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
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        return torch.stack(grads).var(0).sum().item()

    torch.manual_seed(0)
    one, four = total_variance(1), total_variance(4)
    assert 4 * 0.8 < one / four < 4 * 1.25


def test_per_pixel_loss_is_the_per_image_loss_divided_by_784():
    """Source 001's loss, BCE averaged over batch and pixels plus KL / (batch * 784), is
    the batch mean of the per-image negative ELBO divided by 784 (for the same draw)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.bernoulli(torch.full((8, 784), 0.3), generator=gen)
    probs = torch.rand(8, 784, generator=gen) * 0.98 + 0.01
    mu, logvar = torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen)
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    per_pixel = F.binary_cross_entropy(probs, x) + kld / (8 * 784)
    per_image = (
        F.binary_cross_entropy(probs, x, reduction="none").sum(1)
        + D.kl_divergence(
            D.Normal(mu, torch.exp(0.5 * logvar)), D.Normal(0.0, 1.0)
        ).sum(1)
    ).mean()
    torch.testing.assert_close(784 * per_pixel, per_image)


def test_prior_mass_inside_radius_two_is_one_minus_e_to_the_minus_two():
    """|z|² of a 2-D standard normal is chi-square with 2 degrees of freedom:
    P(|z| < 2) = 1 - exp(-2), the number the chapter's 2-D latent figure uses."""
    from scipy import stats

    assert stats.chi2(2).cdf(4.0) == pytest.approx(1 - math.exp(-2), rel=1e-12)


@pytest.mark.usefixtures("full_mode")
def test_train_vae_lowers_the_negative_elbo_and_logs_both_terms():
    """Three epochs of the recipe on 512 images lower the loss; the history has the two
    terms, and with the KL warm-up over, the last epoch's loss is close to their sum."""
    torch.manual_seed(0)
    images = torch.rand(512, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    images = (images > 0.7).float() * 0.9 + 0.05
    model = VAE(latent_dim=4, hidden=(32,))
    x = binarize_static(images, seed=1)
    torch.manual_seed(2)
    start = float(sum(negative_elbo(model, x)).mean())
    history = train_vae(
        model, images, epochs=3, batch_size=64, lr=3e-3, kl_warmup=0.3, seed=0
    )
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert {"loss", "reconstruction", "kl"} <= history[-1].keys()
    torch.manual_seed(2)
    end = float(sum(negative_elbo(model, x)).mean())
    assert end < start - 20
    last = history[-1]
    assert last["loss"] == pytest.approx(last["reconstruction"] + last["kl"], rel=1e-6)
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


def test_quick_mode_fits_the_schedules_to_the_quick_steps(monkeypatch):
    """In quick mode fit runs QUICK_BATCHES steps; the one-cycle schedule must span those
    steps (not the full run's), or CI's models would never leave the warm-up."""
    from vaecourse.train import QUICK_BATCHES

    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    seen = {}
    real = torch.optim.lr_scheduler.OneCycleLR

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim.lr_scheduler, "OneCycleLR", spy)
    images = torch.rand(64 * 40, 784, generator=torch.Generator().manual_seed(0))
    train_vae(VAE(latent_dim=2, hidden=(8,)), images, epochs=3, batch_size=64, desc="t")
    assert seen["total_steps"] == QUICK_BATCHES


def vae_chapter_code():
    """The code cells of the VAE chapter, joined."""
    import json

    root = Path(__file__).resolve().parents[1]
    nb = json.loads((root / "book" / "vae.ipynb").read_text())
    return "\n".join(
        "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"
    )


@pytest.mark.parametrize("loader", ["trained_main_vae", "trained_plain_autoencoder"])
def test_the_vae_chapter_trains_its_shared_models_with_the_loaders(loader):
    """Later chapters load the VAE chapter's main VAE and plain autoencoder through
    vaecourse's loaders. The chapter must show those very functions (the copy check holds
    them identical) and call them, or later chapters would retrain under another key."""
    code = vae_chapter_code()
    assert f"# Also in vaecourse: vaecourse.vae.{loader}\n" in code
    assert f"{loader}()" in code.replace(f"def {loader}()", "")


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


def test_mixed_precision_training_runs_bfloat16_products_and_float32_weights(full_mode):
    """train_vae(dtype=torch.bfloat16): the linear layers compute in bfloat16, the
    weights and the logged terms stay float32, and the loss still falls."""
    seen = set()
    model = VAE(latent_dim=2, hidden=(16,))
    model.decoder[0].register_forward_hook(lambda m, i, out: seen.add(out.dtype))
    images = torch.rand(256, 784, generator=torch.Generator().manual_seed(0))
    history = train_vae(
        model, images, epochs=3, batch_size=64, dtype=torch.bfloat16, desc="t"
    )
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert history[-1]["loss"] < history[0]["loss"]


def test_fast_dtype_is_bfloat16_only_where_the_cpu_has_it():
    from vaecourse.train import fast_dtype

    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert fast_dtype() == (torch.bfloat16 if native else torch.float32)


def test_the_plain_autoencoder_has_the_main_vaes_networks(monkeypatch):
    """The VAE chapter compares its VAE with "a plain autoencoder of the same size": the
    two loaders must build the same layers and activation (the encoder differs only in its
    last layer, which outputs the code itself instead of a mean and a log-variance)."""
    from vaecourse import vae as vae_module

    monkeypatch.setattr(vae_module, "train_cached", lambda *args, **kwargs: None)
    monkeypatch.setattr(vae_module, "load_mnist", lambda split: (None, None))
    vae, ae = vae_module.trained_main_vae(), vae_module.trained_plain_autoencoder()
    assert repr(ae.decoder) == repr(vae.decoder)
    assert repr(ae.encoder[:-1]) == repr(vae.encoder[:-1])
    assert ae.encoder[-1].out_features == vae.latent_dim
    assert vae.encoder[-1].out_features == 2 * vae.latent_dim


class _StopAfter:
    """A stand-in for the stop event that turns set after ``n`` looks."""

    def __init__(self, n):
        self.n, self.looks = n, 0

    def is_set(self):
        self.looks += 1
        return self.looks > self.n


def test_the_official_recipe_trains_until_it_is_told_to_stop(full_mode):
    import threading

    from vaecourse.vae import train_official_recipe

    started, stop = threading.Event(), _StopAfter(5)
    model = VAE(latent_dim=2, hidden=(8,))
    before = [p.detach().clone() for p in model.parameters()]
    images = torch.rand(64 * 10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    history = train_official_recipe(model, images, started, stop, batch_size=64)
    assert started.is_set()
    # one look before the epoch and one after each step: the sixth, after step 5, stops it
    assert [row["images"] for row in history] == [5 * 64]
    assert history[0]["time"] > 0
    assert any(
        not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )


def test_the_official_recipe_is_cached_under_the_main_vaes_key(monkeypatch):
    """The official recipe trains for as long as the main VAE: its cache entry must change
    whenever the main VAE's does, so it names the main VAE's whole configuration."""
    import threading

    from vaecourse import vae as vae_module

    configs = {}

    def record(name, model, train, config):
        configs[name] = config

    monkeypatch.setattr(vae_module, "train_cached", record)
    monkeypatch.setattr(vae_module, "load_mnist", lambda split: (None, None))
    vae_module.trained_main_vae()
    vae_module.trained_official_recipe(threading.Event(), threading.Event())
    assert configs["vae-official-recipe"]["beside vae-main"] == configs["vae-main"]


def test_the_vae_chapter_trains_the_official_recipe_beside_the_main_vae():
    code = vae_chapter_code()
    assert "with on_second_core(vaecourse.vae.trained_official_recipe)" in code
    assert "# Also in vaecourse: vaecourse.vae.trained_official_recipe\n" in code
    assert "# Also in vaecourse: vaecourse.vae.train_official_recipe\n" in code
