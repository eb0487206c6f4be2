"""Tests of vaecourse.regularizers: the closed-form contractive penalty against autograd,
the sparsity penalty against the Bernoulli KL written out, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from vaecourse.regularizers import (
    SigmoidAutoencoder,
    contractive_penalty,
    jacobian_frobenius_sq,
    sparsity_kl,
)

GEN = torch.Generator().manual_seed(0)


pytestmark = pytest.mark.usefixtures("float64")


def small_model(code_size=7, data_size=11):
    torch.manual_seed(0)
    model = SigmoidAutoencoder(code_size, data_size)
    with torch.no_grad():  # larger weights than the default, so h(1-h) varies a lot
        model.encoder.weight.mul_(3.0)
    return model


def test_autoencoder_shapes_and_code_range():
    model = small_model()
    x = torch.rand(5, 1, 1, 11, generator=GEN)  # any shape that flattens to 11
    z, logits = model(x)
    assert z.shape == (5, 7) and logits.shape == (5, 11)
    assert ((z > 0) & (z < 1)).all()
    torch.testing.assert_close(model.encode(x), z)


def test_autoencoder_rejects_an_empty_code():
    with pytest.raises(ValueError, match="code_size and data_size must be positive"):
        SigmoidAutoencoder(0)


def test_contractive_closed_form_matches_autograd():
    model = small_model()
    x = torch.rand(6, 11, generator=GEN)
    closed = contractive_penalty(model.encode(x), model.encoder.weight)
    # the Jacobian built row by row with torch.autograd.grad, independently of torch.func
    for n in range(len(x)):
        xi = x[n : n + 1].clone().requires_grad_(True)
        z = model.encode(xi)[0]
        rows = [torch.autograd.grad(z[j], xi, retain_graph=True)[0] for j in range(7)]
        frob = torch.cat(rows).pow(2).sum()
        torch.testing.assert_close(closed[n], frob)
    torch.testing.assert_close(closed, jacobian_frobenius_sq(model.encode, x))


def test_contractive_penalty_by_finite_differences():
    """Σ_i ‖(f(x + h e_i) - f(x - h e_i)) / 2h‖² approximates ‖J‖²_F."""
    model = small_model()
    x = torch.rand(1, 11, generator=GEN)
    h = 1e-5
    eye = torch.eye(11)
    diffs = (model.encode(x + h * eye) - model.encode(x - h * eye)) / (2 * h)
    closed = contractive_penalty(model.encode(x), model.encoder.weight)
    assert closed.item() == pytest.approx(diffs.pow(2).sum().item(), rel=1e-8)


def test_contractive_penalty_is_zero_for_saturated_units():
    weight = torch.randn(3, 4, generator=GEN)
    z = torch.tensor([[0.0, 1.0, 1.0]])
    assert contractive_penalty(z, weight).item() == 0.0
    half = torch.full((1, 3), 0.5)  # h(1-h) = 1/4 is the largest possible slope
    expected = (weight**2).sum() / 16
    torch.testing.assert_close(contractive_penalty(half, weight)[0], expected)


def test_contractive_penalty_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="codes \\(batch, k\\) and encoder weights"):
        contractive_penalty(torch.rand(2, 3), torch.rand(4, 5))
    with pytest.raises(ValueError, match="codes"):
        contractive_penalty(torch.rand(3), torch.rand(3, 5))


def test_sparsity_kl_is_the_bernoulli_kl_written_out():
    z = torch.rand(50, 4, generator=GEN) * 0.9 + 0.05
    rho = 0.05
    q = z.mean(0)
    expected = sum(
        rho * math.log(rho / qj) + (1 - rho) * math.log((1 - rho) / (1 - qj))
        for qj in q.tolist()
    )
    assert sparsity_kl(z, rho).item() == pytest.approx(expected, rel=1e-12)


def test_sparsity_kl_vanishes_at_the_target_and_pulls_towards_it():
    rho = 0.05
    z = torch.full((10, 3), rho)
    assert sparsity_kl(z, rho).item() == pytest.approx(0.0, abs=1e-15)
    # too active units are pushed down, too quiet ones pushed up
    z = torch.tensor([[0.3, 0.01]]).repeat(8, 1).requires_grad_(True)
    sparsity_kl(z, rho).backward()
    assert z.grad[0, 0] > 0 and z.grad[0, 1] < 0


def test_sparsity_kl_uses_the_batch_mean_not_each_example():
    """Half the examples fire fully, half not at all: rho_hat = 0.5 for the unit, whatever
    the individual codes are."""
    z = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    expected = 0.05 * math.log(0.05 / 0.5) + 0.95 * math.log(0.95 / 0.5)
    assert sparsity_kl(z, 0.05).item() == pytest.approx(expected)


def test_sparsity_kl_rejects_bad_input():
    with pytest.raises(ValueError, match="rho must be in \\(0, 1\\)"):
        sparsity_kl(torch.rand(4, 3), 0.0)
    with pytest.raises(ValueError, match="codes of shape"):
        sparsity_kl(torch.rand(4), 0.05)


def test_random_perturbations_measure_the_jacobian():
    """E‖J δ‖² = ε² ‖J‖²_F for δ ~ N(0, ε² I): the chapter's link between the code
    change under noise and the contractive penalty (Monte Carlo, 200,000 draws)."""
    model = small_model()
    x = torch.rand(1, 11, generator=GEN)
    jac = torch.func.jacrev(lambda v: model.encode(v[None])[0])(x[0])
    eps = 0.1
    delta = eps * torch.randn(200_000, 11, generator=GEN)
    monte_carlo = ((delta @ jac.T) ** 2).sum(dim=1).mean()
    exact = eps**2 * contractive_penalty(model.encode(x), model.encoder.weight)[0]
    assert monte_carlo.item() == pytest.approx(exact.item(), rel=0.02)


def test_l1_penalty_of_nonnegative_codes_depends_on_unit_means_only():
    z = torch.rand(64, 5, generator=GEN)
    lam = 0.7
    batch_mean = (lam * z.abs().sum(dim=1)).mean()
    torch.testing.assert_close(batch_mean, lam * z.mean(dim=0).sum())


def test_tweedie_formula_on_the_circle():
    """E[x | x~] - x~ = σ² ∇ log p_σ(x~) for x uniform on the unit circle and
    x~ = x + σ ε: the denoising field the chapter compares its network with."""
    sigma = 0.3
    angles = torch.arange(4000) * (2 * math.pi / 4000)
    circle = torch.stack([angles.cos(), angles.sin()], dim=1)
    x = (torch.rand(50, 2, generator=GEN) * 4 - 2).requires_grad_(True)
    log_w = -((x[:, None] - circle[None]) ** 2).sum(-1) / (2 * sigma**2)
    log_p = torch.logsumexp(log_w, dim=1)
    score = torch.autograd.grad(log_p.sum(), x)[0]
    posterior_mean = torch.softmax(log_w, dim=1) @ circle
    torch.testing.assert_close(posterior_mean - x.detach(), sigma**2 * score.detach())


def test_tweedie_formula_for_a_gaussian_in_closed_form():
    """x ~ N(0, s²), x~ = x + σ ε: E[x | x~] = s²/(s² + σ²) x~ and
    p_σ = N(0, s² + σ²), so both sides equal -σ² x~ / (s² + σ²)."""
    s2, sigma2 = 2.0, 0.5
    x_tilde = torch.linspace(-3, 3, 13, dtype=torch.float64).requires_grad_(True)
    log_p = -(x_tilde**2) / (2 * (s2 + sigma2))
    score = torch.autograd.grad(log_p.sum(), x_tilde)[0]
    posterior_mean = s2 / (s2 + sigma2) * x_tilde.detach()
    torch.testing.assert_close(posterior_mean - x_tilde.detach(), sigma2 * score)
