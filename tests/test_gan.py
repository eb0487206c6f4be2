"""Tests of vaecourse.chapters.gan: the losses against hand computations, their gradients, the
optimal discriminator on a 1-D toy, training and sampling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vaecourse.chapters.gan import (
    GAN,
    discriminator_loss,
    generator_loss,
    optimal_discriminator,
    sample,
    train_gan,
)
from vaecourse.train import QUICK_BATCHES


def test_discriminator_loss_is_the_binary_cross_entropy_by_hand():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.5, -3.0])
    s = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    expected = (
        -(math.log(s(2.0)) + math.log(s(-1.0))) / 2
        - (math.log(1 - s(0.5)) + math.log(1 - s(-3.0))) / 2
    )
    assert discriminator_loss(real, fake).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_generator_losses_by_hand():
    logits = torch.tensor([1.5, -2.0, 0.0])
    d = torch.sigmoid(logits).double()
    saturating = torch.log(1 - d).mean()
    non_saturating = -torch.log(d).mean()
    assert generator_loss(logits, saturating=True).item() == pytest.approx(
        saturating.item(), rel=1e-6
    )
    assert generator_loss(logits).item() == pytest.approx(
        non_saturating.item(), rel=1e-6
    )


def test_losses_stay_finite_where_naive_logs_overflow():
    logits = torch.tensor([-200.0, 200.0])
    assert torch.isfinite(discriminator_loss(logits, logits))
    assert torch.isfinite(generator_loss(logits))
    assert torch.isfinite(generator_loss(logits, saturating=True))


def test_gradients_wrt_the_logit_are_d_and_one_minus_d():
    """d/dl log(1 - sigmoid(l)) = -D and d/dl [-log sigmoid(l)] = -(1 - D): the saturating
    loss's gradient vanishes as D(G(z)) -> 0, the non-saturating one tends to -1."""
    logits = torch.tensor([-8.0, -2.0, 0.0, 3.0], requires_grad=True)
    d = torch.sigmoid(logits).detach()
    for saturating, expected in [(True, -d), (False, -(1 - d))]:
        (grad,) = torch.autograd.grad(
            generator_loss(logits, saturating) * len(logits), logits
        )
        torch.testing.assert_close(grad, expected)
    (grad,) = torch.autograd.grad(generator_loss(logits, True) * 4, logits)
    assert abs(grad[0]) < 1e-3 < abs(grad[-1])


def normal_pdf(x, mean, std):
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (
        std * math.sqrt(2 * math.pi)
    )


def test_optimal_discriminator_maximises_the_value_pointwise():
    """On a grid, free per-point discriminator values trained by gradient ascent on
    V(D) = p_data log D + p_g log(1 - D) converge to D* = p_data / (p_data + p_g)."""
    x = torch.linspace(-4, 5, 181, dtype=torch.float64)
    p_data, p_g = normal_pdf(x, 0.0, 1.0), normal_pdf(x, 1.5, 0.7)
    d_star = optimal_discriminator(p_data, p_g)
    logits = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(3000):
        d = torch.sigmoid(logits)
        value = (p_data * torch.log(d) + p_g * torch.log(1 - d)).sum()
        opt.zero_grad()
        (-value).backward()
        opt.step()
    torch.testing.assert_close(
        torch.sigmoid(logits).detach(), d_star, atol=1e-3, rtol=0
    )


def test_value_at_the_optimal_discriminator_is_minus_log4_plus_2_jsd():
    x = torch.linspace(-10, 12, 20001, dtype=torch.float64)
    dx = x[1] - x[0]
    p_data, p_g = normal_pdf(x, 0.0, 1.0), normal_pdf(x, 1.5, 0.7)
    d_star = optimal_discriminator(p_data, p_g)
    # 1 - D* = p_g / (p_data + p_g), written so: in the tails 1 - d_star rounds to 0
    one_minus = optimal_discriminator(p_g, p_data)
    torch.testing.assert_close(1 - d_star, one_minus, atol=1e-12, rtol=0)
    value = (
        (p_data * torch.log(d_star) + p_g * torch.log(one_minus)) * dx
    ).sum()
    m = (p_data + p_g) / 2
    kl = lambda p, q: (p * torch.log(p / q) * dx).sum()  # noqa: E731
    jsd = (kl(p_data, m) + kl(p_g, m)) / 2
    assert value.item() == pytest.approx(
        -math.log(4) + 2 * jsd.item(), abs=1e-6
    )
    # and when the generator matches the data, D* = 1/2 everywhere and V = -log 4
    same = optimal_discriminator(p_data, p_data)
    torch.testing.assert_close(same, torch.full_like(same, 0.5))


def test_optimal_discriminator_rejects_bad_densities():
    with pytest.raises(ValueError, match="not logs"):
        optimal_discriminator(torch.tensor([-1.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="> 0"):
        optimal_discriminator(torch.tensor([0.0]), torch.tensor([0.0]))


def test_gan_shapes_and_sample_range():
    torch.manual_seed(0)
    model = GAN(latent_dim=8, hidden=(16, 32), n_snapshots=3, n_shown=5)
    z = torch.randn(4, 8)
    assert model.generate(z).shape == (4, 1, 28, 28)
    assert model.discriminate(model.generate(z)).shape == (4,)
    x = sample(model, 6, seed=1)
    assert x.shape == (6, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    torch.testing.assert_close(x, sample(model, 6, seed=1))
    assert (
        not x.requires_grad
    )  # images to look at, detached from the generator
    with pytest.raises(ValueError, match="n must be >= 1"):
        sample(model, 0)


def test_train_gan_runs_logs_and_snapshots():
    torch.manual_seed(0)
    model = GAN(latent_dim=8, hidden=(16, 32), n_snapshots=3, n_shown=5)
    images = torch.rand(200, 1, 28, 28)
    before = [p.clone() for p in model.parameters()]
    history = train_gan(model, images, steps=10, batch_size=16, log_every=4)
    assert [row["step"] for row in history] == [4, 8, 10]
    assert all(
        0 < row["d_real"] < 1 and 0 < row["d_fake"] < 1 for row in history
    )
    assert model.snapshot_steps.tolist() == [0, 5, 10]
    assert model.snapshots.dtype == torch.uint8 and model.snapshots.shape == (
        3,
        5,
        1,
        28,
        28,
    )
    assert not torch.equal(model.snapshots[0], model.snapshots[-1])
    assert all(
        not torch.equal(a, b)
        for a, b in zip(before, model.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="steps"):
        train_gan(model, images, steps=0)


def test_train_gan_is_deterministic():
    images = torch.rand(100, 1, 28, 28)
    out = []
    for _ in range(2):
        torch.manual_seed(0)
        model = GAN(latent_dim=4, hidden=(8, 8), n_snapshots=2, n_shown=3)
        out.append(
            (train_gan(model, images, steps=5, batch_size=8), sample(model, 3))
        )
    assert out[0][0][-1]["g_loss"] == out[1][0][-1]["g_loss"]
    torch.testing.assert_close(out[0][1], out[1][1])


def test_gan_networks_are_mirrored_leaky_relu_mlps():
    model = GAN(latent_dim=8, hidden=(16, 32))

    def sizes(net):
        return [
            (m.in_features, m.out_features)
            for m in net
            if isinstance(m, nn.Linear)
        ]

    assert sizes(model.generator) == [(8, 16), (16, 32), (32, 784)]
    assert sizes(model.discriminator) == [(784, 32), (32, 16), (16, 1)]
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 4 and all(m.negative_slope == 0.2 for m in leaky)
    assert not isinstance(
        model.generator[-1], nn.LeakyReLU
    )  # tanh is in generate


def test_train_gan_takes_the_quick_steps_in_quick_mode(monkeypatch):
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    torch.manual_seed(0)
    model = GAN(latent_dim=4, hidden=(8, 8), n_snapshots=2, n_shown=3)
    history = train_gan(
        model, torch.rand(100, 1, 28, 28), steps=1500, batch_size=8
    )
    assert [row["step"] for row in history] == [QUICK_BATCHES]
    assert model.snapshot_steps.tolist() == [0, QUICK_BATCHES]
