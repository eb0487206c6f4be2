"""Tests of vaecourse.chapters.likelihood: the mixture density, the
importance-weighted bound, the one- and two-layer models with either prior,
the likelihood estimate, active units and the gradient SNR."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from vaecourse.chapters import likelihood as L
from vaecourse.data import binarize_static


def images(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return binarize_static(torch.rand(n, 784, generator=gen) * 0.6, seed=seed)


def model(latent=(3,), prior="normal", seed=0):
    torch.manual_seed(seed)
    return L.DeepVAE(latent, 16, prior, pseudo_inputs=5)


def mixture(mu, logvar):
    return D.MixtureSameFamily(
        D.Categorical(logits=torch.zeros(len(mu))),
        D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1),
    )


def test_log_mixture_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, 5, generator=gen) * 3
    mu, logvar = (
        torch.randn(7, 5, generator=gen),
        torch.randn(7, 5, generator=gen),
    )
    torch.testing.assert_close(
        L.log_mixture(z, mu, logvar), mixture(mu, logvar).log_prob(z)
    )


def test_log_mixture_stays_float32_under_bfloat16_autocast():
    """The squared distances cancel; in bfloat16 they would be off by nats."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(50, 64, generator=gen)
    mu, logvar = torch.randn(20, 64, generator=gen), torch.full((20, 64), -3.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = L.log_mixture(z, mu, logvar)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(
        ours, mixture(mu, logvar).log_prob(z), rtol=1e-5, atol=1e-3
    )


def test_one_layer_log_weights_are_the_joint_over_the_posterior():
    """log w = log p(x|z) + log N(z; 0, I) - log q(z|x), recomputed with
    torch.distributions from the same noise."""
    m, x = model(), images()
    torch.manual_seed(3)
    log_w, kls = m.log_weights(x, 4)
    torch.manual_seed(3)
    mu, logvar = L.gaussian(m.q_top, x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(4, *mu.shape)
    q = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = D.Independent(D.Normal(torch.zeros(3), torch.ones(3)), 1)
    lik = D.Independent(D.Bernoulli(logits=m.decoder(z)), 1).log_prob(x)
    expected = lik + p.log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(log_w, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kls[0], q.log_prob(z) - p.log_prob(z))
    assert log_w.shape == (4, 6)


def test_two_layer_log_weights_follow_the_factorization():
    """Two layers, VampPrior: log w = log p(x|z1,z2) + log p(z1|z2) + log
    p(z2) - log q(z2|x) - log q(z1|x,z2), with p(z2) the mixture of the
    encoder's posteriors at the pseudo-inputs."""
    m, x = model((3, 2), "vamp"), images()
    torch.manual_seed(5)
    log_w, kls = m.log_weights(x, 3, beta=0.5)
    torch.manual_seed(5)
    mu2, lv2 = L.gaussian(m.q_top, x)
    z2 = mu2 + torch.exp(0.5 * lv2) * torch.randn(3, *mu2.shape)
    h = m.x_features(x).expand(3, -1, -1)
    mu1, lv1 = L.gaussian(m.q_z1, h, z2)
    z1 = mu1 + torch.exp(0.5 * lv1) * torch.randn_like(mu1)
    pm1, plv1 = L.gaussian(m.p_z1, z2)
    u = torch.clamp(m.pseudo, 0, 1)
    prior = mixture(*L.gaussian(m.q_top, u))

    def normal(mu, lv):
        return D.Independent(D.Normal(mu, torch.exp(0.5 * lv)), 1)

    kl1 = normal(mu1, lv1).log_prob(z1) - normal(pm1, plv1).log_prob(z1)
    kl2 = normal(mu2, lv2).log_prob(z2) - prior.log_prob(z2)
    lik = D.Independent(
        D.Bernoulli(logits=m.decoder(torch.cat([z1, z2], -1))), 1
    ).log_prob(x)
    torch.testing.assert_close(kls[0], kl1, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kls[1], kl2, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        log_w, lik - 0.5 * (kl1 + kl2), rtol=1e-5, atol=1e-4
    )


def test_the_mean_log_weight_is_the_closed_form_elbo():
    m, x = model(), images()
    torch.manual_seed(0)
    with torch.no_grad():
        log_w, _ = m.log_weights(x, 40_000)
        mu, logvar = L.gaussian(m.q_top, x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(40_000, *mu.shape)
        recon = D.Bernoulli(logits=m.decoder(z)).log_prob(x).sum(-1).mean(0)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)
    se = log_w.std(0) / math.sqrt(40_000)
    assert ((log_w.mean(0) - (recon - kl)).abs() < 5 * se + 0.05).all()


def test_the_bound_rises_with_k_and_k_1_is_the_elbo():
    m, x = model(), images()
    torch.manual_seed(1)
    with torch.no_grad():
        log_w, _ = m.log_weights(x, 6000)
        torch.manual_seed(2)
        loss_1 = L.iwae_loss(m, x, 1)
    torch.manual_seed(2)
    with torch.no_grad():
        assert loss_1 == pytest.approx(-float(m.log_weights(x, 1)[0].mean()))
    bounds = [
        float((torch.logsumexp(log_w.view(-1, k, 6), 1) - math.log(k)).mean())
        for k in (1, 3, 30, 300)
    ]
    assert bounds == sorted(bounds) and bounds[-1] - bounds[0] > 0.1


def test_nll_is_the_seeded_importance_weighted_estimate():
    m, x = model((3, 2), "vamp"), images()
    out = L.nll(m, x, samples=30, batch_size=4, chunk=7, seed=3)
    assert out.shape == (6,) and out.dtype == torch.float64
    torch.testing.assert_close(
        out, L.nll(m, x, samples=30, batch_size=4, chunk=7, seed=3)
    )
    # one batch, one chunk: the same draws as log_weights after seeding
    torch.manual_seed(3)
    with torch.no_grad():
        log_w = m.log_weights(x, 30)[0].double()
    expected = -(torch.logsumexp(log_w, 0) - math.log(30))
    torch.testing.assert_close(
        L.nll(m, x, samples=30, batch_size=6, chunk=30, seed=3), expected
    )
    assert m.training  # restored


@pytest.mark.parametrize(
    "bad", [torch.full((2, 784), 0.5), torch.ones(2, 783)]
)
def test_nll_refuses_grey_or_misshapen_images(bad):
    with pytest.raises(ValueError, match="binary images of 784 pixels"):
        L.nll(model(), bad)


@pytest.mark.parametrize(
    "kwargs", [dict(prior="flat"), dict(latent=(2, 2, 2))]
)
def test_deep_vae_refuses_unknown_settings(kwargs):
    with pytest.raises(ValueError, match="prior must be"):
        L.DeepVAE(**kwargs)


def test_samples_are_seeded_probabilities_from_the_prior():
    for latent, prior in [((3,), "normal"), ((3, 2), "vamp")]:
        m = model(latent, prior)
        images_, top = L.sample(m, 9, seed=4)
        again, top_again = L.sample(m, 9, seed=4)
        assert images_.shape == (9, 784) and top.shape == (9, latent[-1])
        assert ((images_ >= 0) & (images_ <= 1)).all()
        torch.testing.assert_close(images_, again)
        torch.testing.assert_close(top, top_again)


def test_posterior_means_and_active_units():
    x = images(20)
    one = model()
    (means,) = L.posterior_means(one, x)
    torch.testing.assert_close(means, L.gaussian(one.q_top, x)[0])
    two = model((3, 2), "vamp")
    torch.manual_seed(0)
    low, top = L.posterior_means(two, x, draws=50)
    assert low.shape == (20, 3) and top.shape == (20, 2)
    # z1's mean averages q(z1|x, z2) over the same draws z2 ~ q(z2|x)
    torch.manual_seed(0)
    with torch.no_grad():
        mu2, lv2 = L.gaussian(two.q_top, x)
        z2 = mu2 + torch.exp(0.5 * lv2) * torch.randn(50, *mu2.shape)
        h = two.x_features(x).expand(50, -1, -1)
        direct = L.gaussian(two.q_z1, h, z2)[0].mean(0)
    torch.testing.assert_close(low, direct)
    torch.testing.assert_close(top, mu2)
    spread = torch.tensor([[0.0, 1.0, 5.0]]).repeat(10, 1) * torch.randn(10, 1)
    spread[:, 0] = 3.0  # constant: carries nothing about x
    assert L.active_units(spread).tolist() == [False, True, True]
    assert L.active_units(spread, threshold=1e9).sum() == 0


def test_gradient_snr_is_mean_over_spread_of_repeated_estimates():
    m, x = model(), images(4)
    parts = {"encoder": ["q_top"], "decoder": ["decoder"]}
    out = L.gradient_snr(m, parts, x, samples=3, repeats=6, seed=2)
    torch.manual_seed(2)
    grads = []
    for _ in range(6):
        m.zero_grad()
        L.iwae_loss(m, x, 3).backward()
        grads.append(
            torch.cat([p.grad.flatten() for p in m.q_top.parameters()])
        )
    g = torch.stack(grads)
    expected = float((g.mean(0).abs() / g.std(0)).nanmedian())
    assert out["encoder"] == pytest.approx(expected, rel=1e-5)
    assert set(out) == {"encoder", "decoder"}


def test_training_runs_and_records_the_kl_weight(monkeypatch):
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    m = model((3, 2), "vamp")
    history = L.train_deep_vae(
        m, torch.rand(64, 1, 28, 28), samples=2, epochs=1, batch_size=16
    )
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    assert 0 < history[0]["kl_weight"] <= 1


def grads(m, loss):
    m.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_dreg_keeps_the_values_and_the_decoder_gradient(prior):
    m, x = model(prior=prior), images(4)
    torch.manual_seed(3)
    plain = grads(m, L.iwae_loss(m, x, 5))
    torch.manual_seed(3)
    log_w, _ = m.log_weights(x, 5)
    torch.manual_seed(3)
    log_w_dreg, _ = m.log_weights(x, 5, dreg=True)
    torch.testing.assert_close(log_w_dreg, log_w)
    torch.manual_seed(3)
    dreg = grads(m, L.iwae_loss(m, x, 5, dreg=True))
    for name in plain:
        if name.startswith("decoder"):
            torch.testing.assert_close(dreg[name], plain[name])
    encoder = [n for n in plain if n.startswith("q_top")]
    assert any(not torch.allclose(dreg[n], plain[n]) for n in encoder)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_dreg_encoder_gradient_is_the_squared_weight_surrogate(beta):
    # Tucker et al.'s estimator written out: path derivatives only (q's
    # parameters detached in log q), weighted by the squared normalized
    # weights (during the warm-up, w̃ ((1 - beta) + beta w̃)), against the hook
    # in log_weights
    m, x = model(), images(4)
    torch.manual_seed(4)
    ours = grads(m, L.iwae_loss(m, x, 6, beta, dreg=True))
    torch.manual_seed(4)
    mu, logvar = L.gaussian(m.q_top, x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(6, *mu.shape)
    log_prior = D.Independent(
        D.Normal(torch.zeros(3), torch.ones(3)), 1
    ).log_prob(z)
    log_q = D.Independent(
        D.Normal(mu.detach(), torch.exp(0.5 * logvar.detach())), 1
    ).log_prob(z)
    log_w = D.Independent(D.Bernoulli(logits=m.decoder(z)), 1).log_prob(
        x
    ) - beta * (log_q - log_prior)
    w_tilde = torch.softmax(log_w.detach(), 0)
    weights = w_tilde * ((1 - beta) + beta * w_tilde)
    surrogate = -(weights * log_w).sum(0).mean()
    expected = grads(m, surrogate)
    for name in ours:
        if name.startswith("q_top"):
            torch.testing.assert_close(ours[name], expected[name])


@pytest.mark.parametrize("beta", [1.0, 0.3, 0.0])
def test_dreg_is_unbiased_for_the_encoder_gradient(beta):
    # the same expectation as the ordinary gradient of L_k, within Monte
    # Carlo error over many independent estimates; during the KL warm-up too
    m, x = model(), images(2)
    runs = {False: [], True: []}
    torch.manual_seed(5)
    for _ in range(400):
        for dreg in (False, True):
            g = grads(m, L.iwae_loss(m, x, 4, beta, dreg))
            runs[dreg].append(g["q_top.4.bias"])  # the means and log-variances
    plain, dreg = torch.stack(runs[False]), torch.stack(runs[True])
    se = torch.sqrt(plain.var(0) / 400 + dreg.var(0) / 400)
    z = (plain.mean(0) - dreg.mean(0)).abs() / se
    assert z.max() < 4.5
    if beta == 1.0:  # and less noisy, the point of it (at beta = 0 there is
        # no score term, and the two estimators are the same)
        assert dreg.var(0).sum() < plain.var(0).sum()


def test_dreg_refuses_two_layers():
    with pytest.raises(ValueError, match="one stochastic layer"):
        model((3, 2)).log_weights(images(2), 2, dreg=True)


def test_free_bits_clamp_each_layers_batch_mean_kl():
    m, x = model((3, 2), "vamp"), images(4)
    torch.manual_seed(6)
    log_w, kls = m.log_weights(x, 1, 0.5)
    reconstruction = (log_w + 0.5 * sum(kls)).mean()
    for free_bits in (1e-3, 1e4):
        torch.manual_seed(6)
        loss = L.free_bits_loss(m, x, free_bits, 0.5)
        # floors of λ nats per unit: 3 units in the first layer, 2 on top
        kl = sum(
            max(free_bits * d, k.mean().item())
            for k, d in zip(kls, (3, 2), strict=True)
        )
        assert loss.item() == pytest.approx(0.5 * kl - reconstruction.item())
    # below the floor a layer's KL gives the encoder no gradient at all: with
    # a floor above both layers' KL, only the reconstruction trains q
    torch.manual_seed(6)
    g = grads(m, L.free_bits_loss(m, x, 1e4))
    torch.manual_seed(6)
    log_w, kls = m.log_weights(x, 1)
    expected = grads(m, -(log_w + sum(kls)).mean())
    for name in g:
        torch.testing.assert_close(g[name], expected[name])
    with pytest.raises(ValueError, match="samples=1"):
        L.train_deep_vae(m, x, samples=2, epochs=1, free_bits=1.0)
