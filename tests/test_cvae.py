"""Tests of vaecourse.chapters.cvae: the conditional VAE's shapes, its loss against
independent formulas, the label checks, generation, style transfer and training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from vaecourse.chapters import cvae
from vaecourse.explorer import export_decoder


def small_cvae(latent_dim=2, seed=0):
    torch.manual_seed(seed)
    return cvae.CVAE(latent_dim=latent_dim, hidden=(16,))


def binary_images(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.2), generator=gen)


def test_shapes_and_the_decoder_input_is_z_then_the_one_hot_label():
    model = small_cvae()
    x, y = binary_images(4), torch.tensor([0, 3, 9, 3])
    mu, logvar = model.encode(x, y)
    assert mu.shape == logvar.shape == (4, 2)
    logits, _, _ = model(x, y)
    assert logits.shape == (4, 784)
    z = torch.randn(5, 4, 2)
    assert model.decode(z, y).shape == (5, 4, 784)
    expected = model.decoder(
        torch.cat([z[0], F.one_hot(y, 10).float()], dim=1)
    )
    torch.testing.assert_close(model.decode(z[0], y), expected)
    # the decoder is exportable to the site explorer, with 2 + 10 inputs
    assert export_decoder(model.decoder, output="logits")["inputs"] == 12


def test_the_label_changes_the_output():
    model = small_cvae()
    z = torch.zeros(2, 2)
    a, b = model.decode(z, torch.tensor([1, 7])).unbind(0)
    assert not torch.allclose(a, b)


def test_negative_elbo_terms_match_independent_formulas():
    model = small_cvae()
    x, y = binary_images(6), torch.arange(6)
    torch.manual_seed(1)
    rec, kl = cvae.cvae_negative_elbo(model, x, y)
    torch.manual_seed(1)
    h = torch.cat([x.flatten(1), F.one_hot(y, 10).float()], 1)
    mu, logvar = model.encoder(h).chunk(2, dim=1)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(1, *mu.shape)
    logits = model.decoder(torch.cat([z[0], F.one_hot(y, 10).float()], 1))
    bce = F.binary_cross_entropy_with_logits(
        logits, x.flatten(1), reduction="none"
    )
    torch.testing.assert_close(rec, bce.sum(1))
    q = D.Normal(mu, torch.exp(0.5 * logvar))
    torch.testing.assert_close(
        kl, D.kl_divergence(q, D.Normal(0.0, 1.0)).sum(1)
    )


@pytest.mark.parametrize(
    "y",
    [torch.tensor([0, 10]), torch.tensor([-1, 2]), torch.tensor([0.0, 1.0])],
)
def test_bad_labels_are_refused_with_a_clear_message(y):
    with pytest.raises(ValueError, match="labels must be a long tensor"):
        small_cvae().encode(binary_images(2), y)


def test_sample_uses_the_requested_labels_and_is_seeded():
    model = small_cvae()
    a = cvae.sample(model, 12, seed=0)
    assert a.shape == (12, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, cvae.sample(model, 12, seed=0))
    labels = torch.full((12,), 4)
    z = torch.randn(12, 2, generator=torch.Generator().manual_seed(5))
    expected = torch.sigmoid(model.decode(z, labels)).view(12, 1, 28, 28)
    torch.testing.assert_close(
        cvae.sample(model, 12, seed=5, labels=labels), expected
    )
    with pytest.raises(ValueError, match="one label per image"):
        cvae.sample(model, 3, labels=torch.tensor([1]))


def test_transfer_keeps_z_and_changes_the_label():
    model = small_cvae()
    x, y = binary_images(3), torch.tensor([2, 5, 8])
    out = cvae.transfer(model, x, y, torch.arange(10))
    assert out.shape == (3, 10, 1, 28, 28)
    mu, _ = model.encode(x, y)
    for i in range(3):
        for c in (0, 7):
            expected = torch.sigmoid(
                model.decode(mu[i : i + 1], torch.tensor([c]))
            )
            torch.testing.assert_close(
                out[i, c], expected.view(1, 28, 28).detach()
            )


@pytest.mark.usefixtures("full_mode")
def test_train_cvae_lowers_the_loss():
    torch.manual_seed(0)
    images = (torch.rand(512, 1, 28, 28) > 0.7).float() * 0.9 + 0.05
    labels = torch.randint(0, 10, (512,))
    model = small_cvae(latent_dim=3)
    history = cvae.train_cvae(model, images, labels, epochs=3, batch_size=64)
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"reconstruction", "kl"} <= set(history[-1])


def test_the_loss_is_the_elbo_and_bounds_log_p_checked_by_quadrature():
    """On a 1-D latent CVAE (double precision), log p(x|y) by quadrature agrees
    with an importance-sampling estimate (q as proposal), the ELBO computed by
    ``cvae_negative_elbo`` agrees with the ELBO by quadrature, and the ELBO is
    below log p(x|y). The tolerances are Monte Carlo standard errors computed
    exactly on the grid; none of the checks holds by construction (a loss
    whose KL lacks its log-variance term fails the second, as the last lines
    show)."""
    import math

    torch.manual_seed(0)
    model = cvae.CVAE(
        latent_dim=1, hidden=(8,), activation=torch.nn.Tanh
    ).double()
    # q away from the prior (mu near 1.5, sigma² near e^0.5), so that the KL
    # term is not negligible
    with torch.no_grad():
        model.encoder[-1].bias += torch.tensor([1.5, 0.5]).double()
    x = binary_images(2).flatten(1).double()
    grid = torch.linspace(-12, 12, 24001, dtype=torch.float64).unsqueeze(1)
    dz = float(grid[1] - grid[0])
    prior = D.Normal(0.0, 1.0)
    n = 20_000

    def log_lik(xi, z, y):
        logits = model.decode(z, torch.full((len(z),), y))
        return (xi * logits - F.softplus(logits)).sum(1)

    with torch.no_grad():
        for xi, y in zip(x, [4, 6], strict=True):
            log_joint = log_lik(xi, grid, y) + prior.log_prob(grid[:, 0])
            log_px = torch.logsumexp(log_joint, 0) + math.log(dz)
            mu, logvar = model.encode(xi[None], torch.tensor([y]))
            q = D.Normal(mu[0, 0], torch.exp(0.5 * logvar[0, 0]))
            log_q = q.log_prob(grid[:, 0])
            mass = log_q.exp() * dz
            elbo = (mass * (log_joint - log_q)).sum()
            # importance sampling with q as proposal
            torch.manual_seed(1)
            z = q.sample((n, 1))
            log_w = (
                log_lik(xi, z, y)
                + prior.log_prob(z[:, 0])
                - q.log_prob(z[:, 0])
            )
            log_px_is = torch.logsumexp(log_w, 0) - math.log(n)
            w2 = torch.logsumexp(log_q + 2 * (log_joint - log_q), 0)
            se_is = math.sqrt(
                (math.exp(w2 + math.log(dz) - 2 * log_px) - 1) / n
            )
            assert abs(float(log_px_is - log_px)) < 4 * se_is
            # the training loss, averaged over n draws of z
            torch.manual_seed(2)
            rec, kl = cvae.cvae_negative_elbo(
                model, xi[None], torch.tensor([y]), samples=n
            )
            ll = log_lik(xi, grid, y)
            var = (mass * (ll - (mass * ll).sum()) ** 2).sum()
            se = math.sqrt(var / n)
            assert 4 * se < 0.1  # precise enough to catch a wrong term
            assert abs(float(-(rec + kl)[0] - elbo)) < 4 * se
            # the bound, with a real gap for an untrained encoder
            assert elbo < log_px - 0.01
            # a loss with the KL's log-variance term dropped would fail
            wrong_kl = 0.5 * (mu.pow(2) + logvar.exp() - 1).sum()
            assert abs(float(-(rec[0] + wrong_kl) - elbo)) > 4 * se
