"""Tests of vaecourse.chapters.diffusion: the schedules, the closed-form forward process against the
step-by-step chain, the posterior q(x_{t-1} | x_t, x0) against Gaussian conditioning and
Monte Carlo, the KL = weighted noise-error identity, the loss and the sampler."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaecourse.chapters import diffusion
from vaecourse.chapters.diffusion import (
    DDPM,
    Denoiser,
    alpha_bars,
    check_betas,
    cosine_schedule,
    ddpm_loss,
    elbo_weight,
    linear_schedule,
    p_mean,
    posterior_mean_variance,
    q_sample,
    q_step,
    sample,
    train_ddpm,
    train_latent_ddpm,
)
from vaecourse.chapters.kl import gaussian_kl
from vaecourse.train import QUICK_BATCHES

SCHEDULES = [linear_schedule, cosine_schedule]


@pytest.mark.parametrize("make", SCHEDULES)
def test_schedules_are_valid_and_destroy_the_signal(make):
    betas = make(200)
    ab = alpha_bars(betas)
    assert betas.shape == (201,) and betas.dtype == torch.float64
    assert betas[0] == 0 and ((betas[1:] > 0) & (betas[1:] < 1)).all()
    assert ab[0] == 1 and (ab[1:] < ab[:-1]).all()  # the signal only fades
    assert ab[-1] < 1e-3  # x_T is (almost) pure noise
    assert ab[1] > 0.99  # the first step adds little noise


def test_linear_schedule_matches_ho_et_al_at_t_1000_and_scales_with_t():
    betas = linear_schedule(1000)
    assert betas[1].item() == pytest.approx(1e-4) and betas[
        -1
    ].item() == pytest.approx(0.02)
    assert linear_schedule(200)[-1].item() == pytest.approx(0.1)


def test_cosine_schedule_follows_its_formula_where_not_capped():
    T, s = 200, 0.008
    ab = alpha_bars(cosine_schedule(T, s=s))
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    assert torch.allclose(ab[:-1], (f / f[0])[:-1], rtol=1e-10, atol=1e-12)
    assert cosine_schedule(T)[-1].item() == pytest.approx(
        0.999
    )  # the capped last step


def test_bad_schedules_raise_clear_errors():
    with pytest.raises(ValueError, match="T >= 2"):
        cosine_schedule(1)
    with pytest.raises(ValueError, match="leave"):
        linear_schedule(10)  # scaled beta_T = 2
    with pytest.raises(ValueError, match="betas\\[0\\]"):
        check_betas(torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="between 0 and 1"):
        check_betas(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="schedule must be"):
        DDPM("quadratic")


@pytest.mark.parametrize("make", SCHEDULES)
def test_closed_form_variance_is_the_chains_exactly(make):
    """The chain x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps_t gives x_t =
    sqrt(ab_t) x0 + (sum of independent noises); their variances add up to 1 - ab_t."""
    betas = make(100)
    ab = alpha_bars(betas)
    for t in [1, 2, 50, 100]:
        var = sum(
            betas[s] * torch.prod(1 - betas[s + 1 : t + 1])
            for s in range(1, t + 1)
        )
        assert float(var) == pytest.approx(float(1 - ab[t]), rel=1e-12)
        assert float(torch.prod(1 - betas[1 : t + 1]).sqrt()) == pytest.approx(
            float(ab[t].sqrt()), rel=1e-12
        )


@pytest.mark.parametrize("make", SCHEDULES)
def test_closed_form_matches_the_step_by_step_chain_by_monte_carlo(make):
    betas = make(100)
    ab = alpha_bars(betas)
    gen = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    x = x0
    for t in range(1, 101):
        x = q_step(
            x, t, betas, torch.randn(n, generator=gen, dtype=torch.float64)
        )
        if t in (10, 50, 100):
            ts = torch.full((n,), t)
            closed = q_sample(
                x0, ts, ab, torch.randn(n, generator=gen, dtype=torch.float64)
            )
            se_mean = math.sqrt(float(1 - ab[t]) / n)
            assert abs(x.mean() - math.sqrt(ab[t]) * 0.7) < 5 * se_mean
            assert abs(x.var() - (1 - ab[t])) < 0.02 * (1 - ab[t])
            assert abs(x.mean() - closed.mean()) < 5 * math.sqrt(2) * se_mean
            assert abs(x.var() - closed.var()) < 0.03 * (1 - ab[t])


@pytest.mark.parametrize("make", SCHEDULES)
def test_posterior_formulas_equal_gaussian_conditioning(make):
    """x_{t-1} ~ N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}) and x_t = sqrt(alpha_t) x_{t-1} +
    sqrt(beta_t) eps are jointly Gaussian; condition x_{t-1} on x_t directly."""
    betas = make(100)
    ab = alpha_bars(betas)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    x_t = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    for step in [1, 2, 37, 100]:
        t = torch.full((4,), step)
        mean, var = posterior_mean_variance(x0, x_t, t, betas)
        a = 1 - betas[step]
        cov = a.sqrt() * (1 - ab[step - 1])  # Cov(x_{t-1}, x_t)
        var_t = 1 - ab[step]  # Var(x_t)
        direct_mean = ab[step - 1].sqrt() * x0 + cov / var_t * (
            x_t - ab[step].sqrt() * x0
        )
        direct_var = (1 - ab[step - 1]) - cov**2 / var_t
        assert torch.allclose(mean, direct_mean, rtol=1e-10, atol=1e-12)
        assert torch.allclose(
            var, direct_var.expand_as(var), rtol=1e-8, atol=1e-12
        )


def test_posterior_matches_monte_carlo_regression():
    """Sample (x_{t-1}, x_t) pairs from the chain for one x0; regress x_{t-1} on x_t:
    the slope, intercept and residual variance are the posterior's."""
    betas = cosine_schedule(50)
    ab = alpha_bars(betas)
    gen = torch.Generator().manual_seed(2)
    n, step, x0 = 400_000, 20, 0.5
    prev = ab[step - 1].sqrt() * x0 + (1 - ab[step - 1]).sqrt() * torch.randn(
        n, generator=gen, dtype=torch.float64
    )
    x_t = q_step(
        prev, step, betas, torch.randn(n, generator=gen, dtype=torch.float64)
    )
    slope = ((prev - prev.mean()) * (x_t - x_t.mean())).mean() / x_t.var()
    intercept = prev.mean() - slope * x_t.mean()
    residual = (prev - intercept - slope * x_t).var()
    t = torch.tensor([step])
    x0s = torch.tensor([x0], dtype=torch.float64)
    at0, var = posterior_mean_variance(
        x0s, torch.zeros(1, dtype=torch.float64), t, betas
    )
    at1, _ = posterior_mean_variance(
        x0s, torch.ones(1, dtype=torch.float64), t, betas
    )
    assert float(slope) == pytest.approx(float(at1 - at0), abs=0.01)
    assert float(intercept) == pytest.approx(float(at0), abs=0.01)
    assert float(residual) == pytest.approx(float(var), rel=0.02)


@pytest.mark.parametrize("make", SCHEDULES)
def test_kl_term_is_the_weighted_noise_error(make):
    """KL(q(x_{t-1}|x_t,x0) ‖ N(mu_theta, var_t)) = lambda_t ‖eps - eps_theta‖²."""
    betas = make(100)
    ab = alpha_bars(betas)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 784, generator=gen, dtype=torch.float64)
    eps = torch.randn(5, 784, generator=gen, dtype=torch.float64)
    eps_theta = eps + 0.3 * torch.randn(
        5, 784, generator=gen, dtype=torch.float64
    )
    for step in [2, 30, 100]:
        t = torch.full((5,), step)
        x_t = q_sample(x0, t, ab, eps)
        mean, var = posterior_mean_variance(x0, x_t, t, betas)
        mu_theta = (x_t - betas[step] / (1 - ab[step]).sqrt() * eps_theta) / (
            1 - betas[step]
        ).sqrt()
        logvar = var.log().expand_as(mean)
        kl = gaussian_kl(mean, logvar, mu_theta, logvar).sum(1)
        weighted = elbo_weight(step, betas) * ((eps - eps_theta) ** 2).sum(1)
        assert torch.allclose(kl, weighted, rtol=1e-8)
    with pytest.raises(ValueError, match="t >= 2"):
        elbo_weight(1, betas)


class Oracle(nn.Module):
    """A 'denoiser' that knows x0, so it returns the exact noise: the loss must be 0."""

    def __init__(self, x0, schedule="linear", T=50):
        super().__init__()
        self.T, self.x0 = T, x0
        betas = (
            linear_schedule(T) if schedule == "linear" else cosine_schedule(T)
        )
        self.register_buffer("betas", betas.float())
        self.register_buffer("alpha_bar", alpha_bars(betas).float())

    def forward(self, x_t, t):
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * self.x0) / (1 - a).sqrt()


def test_loss_shape_and_values_for_known_predictors():
    torch.manual_seed(0)
    x0 = torch.rand(64, 1, 28, 28) * 2 - 1
    oracle = Oracle(x0)
    loss = ddpm_loss(oracle, x0)
    assert loss.shape == (64,)
    assert loss.max() < 1e-6
    zero = Oracle(x0)
    zero.forward = lambda x_t, t: torch.zeros_like(x_t)
    loss = ddpm_loss(zero, x0)  # E eps² = 1 per pixel
    assert loss.mean().item() == pytest.approx(1.0, abs=0.02)


def test_p_mean_without_clipping_is_the_epsilon_formula():
    torch.manual_seed(0)
    model = DDPM("linear", T=50, hidden=32, blocks=1, time_dim=8)
    x_t = torch.randn(6, 1, 28, 28)
    for step in [1, 2, 25, 50]:
        t = torch.full((6,), step)
        eps = model(x_t, t)
        b, ab = model.betas[step], model.alpha_bar[step]
        expected = (x_t - b / (1 - ab).sqrt() * eps) / (1 - b).sqrt()
        assert torch.allclose(
            p_mean(model, x_t, t, clip=False), expected, atol=1e-4
        )


def test_denoiser_and_sampler_shapes_range_and_determinism():
    torch.manual_seed(0)
    net = Denoiser(hidden=32, blocks=2, time_dim=8)
    x = torch.randn(3, 1, 28, 28)
    assert net(x, torch.tensor([1, 5, 9])).shape == (3, 1, 28, 28)
    model = DDPM("cosine", T=20, hidden=32, blocks=1, time_dim=8)
    images = sample(model, 4, seed=3)
    assert images.shape == (4, 1, 28, 28)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, sample(model, 4, seed=3))
    assert not torch.equal(images, sample(model, 4, seed=4))
    final, kept = sample(model, 2, seed=0, keep=(20, 10, 0))
    assert sorted(kept) == [0, 10, 20] and torch.equal(kept[0], final)
    assert "schedule='cosine', T=20" in repr(model)
    with pytest.raises(ValueError, match="n must be"):
        sample(model, 0)


pytestmark = pytest.mark.usefixtures("isolated")


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    images = torch.rand(256, 1, 28, 28)
    model = DDPM("cosine", T=20, hidden=64, blocks=1, time_dim=16)
    history = train_ddpm(
        model, images, epochs=3, batch_size=64, progress=False
    )
    assert len(history) == 3 and history[-1]["loss"] < history[0]["loss"]


def test_train_ddpm_trains_on_images_scaled_to_minus_one_one(monkeypatch):
    """The denoiser sees x_t built from 2 x - 1: for images of all ones, x0 = 1."""
    seen = []

    def spy(model, x0):
        seen.append(x0)
        return ddpm_loss(model, x0)

    monkeypatch.setattr(diffusion, "ddpm_loss", spy)
    model = DDPM("linear", T=50, hidden=8, blocks=1, time_dim=4)
    images = torch.ones(8, 1, 28, 28)
    images[:, :, :14] = 0.0
    train_ddpm(model, images, epochs=1, batch_size=4, progress=False)
    assert len(seen) == 2
    for x0 in seen:
        assert x0.shape == (4, 1, 28, 28)
        assert (x0[:, :, :14] == -1).all() and (x0[:, :, 14:] == 1).all()


def test_train_ddpm_fits_its_learning_rate_schedule_to_the_quick_steps(
    monkeypatch, learning_rates
):
    """In quick mode train_ddpm takes QUICK_BATCHES steps and its one-cycle learning rate
    rises to lr and decays to almost 0 within them (it once spanned the full run's steps,
    so CI's DDPMs never left the warm-up)."""
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    model = DDPM("cosine", T=20, hidden=8, blocks=1, time_dim=4)
    images = torch.rand(
        16 * 40, 1, 28, 28, generator=torch.Generator().manual_seed(0)
    )
    train_ddpm(model, images, epochs=2, batch_size=16, lr=2e-3, progress=False)
    assert len(learning_rates) == QUICK_BATCHES
    peak = max(range(QUICK_BATCHES), key=learning_rates.__getitem__)
    assert learning_rates[peak] == pytest.approx(2e-3)
    assert 0 < peak < QUICK_BATCHES // 2
    assert learning_rates[0] < 2e-3 / 10 and learning_rates[-1] < 2e-3 / 100


def test_train_latent_ddpm_scales_the_codes_and_trains_the_models_ddpm(
    monkeypatch,
):
    """The codes are scaled into [-1, 1] (the model keeps the scaling) and the model's
    DDPM is trained on them through train_ddpm, which maps [0, 1] to [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(64, 3, generator=g) * torch.tensor([0.5, 2.0, 8.0]) - 1
    model = diffusion.LatentDDPM("linear", T=50, dim=3, hidden=8)
    seen = []

    def spy(ddpm, x0):
        seen.append(x0)
        return ddpm_loss(ddpm, x0)

    monkeypatch.setattr(diffusion, "ddpm_loss", spy)
    before = [p.detach().clone() for p in model.ddpm.parameters()]
    history = train_latent_ddpm(
        model, codes, epochs=2, batch_size=16, desc="t"
    )
    assert len(history) == 2 and len(seen) == 8
    scaled = (codes - codes.mean(0)) / (codes - codes.mean(0)).abs().amax(0)
    torch.testing.assert_close(model.center, codes.mean(0))
    torch.testing.assert_close(torch.cat(seen).abs().amax(0), torch.ones(3))
    first_epoch = torch.cat(seen[:4])  # every code once, shuffled
    torch.testing.assert_close(
        first_epoch.sort(0).values, scaled.sort(0).values, rtol=1e-5, atol=1e-6
    )
    assert all(
        not torch.equal(a, b)
        for a, b in zip(before, model.ddpm.parameters(), strict=True)
    )


def test_the_denoiser_and_sampler_work_on_latent_codes():
    torch.manual_seed(0)
    model = diffusion.DDPM(
        "linear", T=50, hidden=16, blocks=1, time_dim=8, dim=3
    )
    assert model(torch.randn(4, 3), torch.tensor([1, 2, 30, 50])).shape == (
        4,
        3,
    )
    out = diffusion.sample(model, 6, shape=(3,))
    assert out.shape == (6, 3) and out.min() >= 0 and out.max() <= 1


def test_latent_scaling_maps_each_dimension_onto_minus_one_to_one_and_back():
    g = torch.Generator().manual_seed(0)
    codes = (
        torch.randn(500, 4, generator=g) * torch.tensor([0.1, 1.0, 3.0, 10.0])
        + 5
    )
    model = diffusion.LatentDDPM("cosine", T=5, dim=4, hidden=8)
    scaled = model.fit_scaling(codes)
    torch.testing.assert_close(scaled.abs().amax(0), torch.ones(4))
    torch.testing.assert_close(
        scaled.mean(0), torch.zeros(4), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        scaled * model.scale + model.center, codes, rtol=1e-5, atol=1e-5
    )
    assert set(model.state_dict()) >= {
        "center",
        "scale",
    }  # saved with the weights


def test_decoded_latent_samples_are_images():
    torch.manual_seed(0)
    model = diffusion.LatentDDPM("linear", T=50, dim=2, hidden=8)
    decoder = torch.nn.Linear(2, 784)
    images = diffusion.decode_latent_samples(model, decoder, 5)
    assert (
        images.shape == (5, 1, 28, 28)
        and 0 <= images.min() <= images.max() <= 1
    )
