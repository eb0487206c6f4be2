"""Tests of vaecourse.chapters.regularized: the closed-form contractive penalty against
autograd, the sparsity penalty against the Bernoulli KL written out, the losses the
chapter trains with against their definitions, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.chapters.autoencoders import mlp
from vaecourse.chapters.regularized import (
    CAE_WEIGHT,
    KL_WEIGHT,
    L1_WEIGHT,
    RHO,
    TOY_SIGMA,
    SigmoidAutoencoder,
    bce,
    contractive_loss,
    contractive_penalty,
    denoising_loss,
    jacobian_frobenius_sq,
    kl_loss,
    l1_loss,
    plain_loss,
    sparsity_kl,
    toy_loss,
)

GEN = torch.Generator().manual_seed(0)


pytestmark = pytest.mark.usefixtures("float64")


def small_model(code_size=7, data_size=11):
    torch.manual_seed(0)
    model = SigmoidAutoencoder(code_size, data_size)
    with (
        torch.no_grad()
    ):  # larger weights than the default, so h(1-h) varies a lot
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
    with pytest.raises(
        ValueError, match="code_size and data_size must be positive"
    ):
        SigmoidAutoencoder(0)


def test_contractive_closed_form_matches_autograd():
    model = small_model()
    x = torch.rand(6, 11, generator=GEN)
    closed = contractive_penalty(model.encode(x), model.encoder.weight)
    # the Jacobian built row by row with torch.autograd.grad, independently of torch.func
    for n in range(len(x)):
        xi = x[n : n + 1].clone().requires_grad_(True)
        z = model.encode(xi)[0]
        rows = [
            torch.autograd.grad(z[j], xi, retain_graph=True)[0]
            for j in range(7)
        ]
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
    half = torch.full(
        (1, 3), 0.5
    )  # h(1-h) = 1/4 is the largest possible slope
    expected = (weight**2).sum() / 16
    torch.testing.assert_close(contractive_penalty(half, weight)[0], expected)


def test_contractive_penalty_rejects_mismatched_shapes():
    with pytest.raises(
        ValueError, match="codes \\(batch, k\\) and encoder weights"
    ):
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
    exact = (
        eps**2 * contractive_penalty(model.encode(x), model.encoder.weight)[0]
    )
    assert monte_carlo.item() == pytest.approx(exact.item(), rel=0.02)


# --- the losses the chapter trains with ------------------------------------------------


def model_and_images(seed=0):
    torch.manual_seed(seed)
    model = SigmoidAutoencoder(6, 784)
    gen = torch.Generator().manual_seed(seed + 1)
    return model, torch.rand(5, 784, generator=gen)


def per_image_bce(logits, x):
    """-Σ_i [x_i log σ(l_i) + (1 - x_i) log(1 - σ(l_i))] per image, written out."""
    return -(x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(1)


def test_bce_is_nats_per_image():
    _, x = model_and_images()
    logits = torch.randn(5, 784, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(bce(logits, x), per_image_bce(logits, x).mean())


def test_plain_loss_is_the_reconstruction_alone():
    model, x = model_and_images()
    terms = plain_loss(model, (x,))
    expected = per_image_bce(model(x)[1], x).mean()
    torch.testing.assert_close(terms["loss"], expected)
    torch.testing.assert_close(terms["rec"], expected)


@pytest.mark.parametrize("weight", [None, 0.3])
def test_l1_loss_adds_weight_times_the_summed_absolute_code(weight):
    """penalty = weight · Σ_j |z_j|, averaged over the batch (L1_WEIGHT by default)."""
    model, x = model_and_images()
    terms = (
        l1_loss(model, (x,))
        if weight is None
        else l1_loss(model, (x,), weight)
    )
    z, logits = model(x)
    w = L1_WEIGHT if weight is None else weight
    penalty = w * sum(z[n].abs().sum() for n in range(len(z))) / len(z)
    torch.testing.assert_close(terms["l1"], penalty)
    torch.testing.assert_close(terms["rec"], per_image_bce(logits, x).mean())
    torch.testing.assert_close(terms["loss"], terms["rec"] + penalty)


def test_kl_loss_adds_the_sparsity_kl_of_the_batch_mean_activations():
    model, x = model_and_images()
    terms = kl_loss(model, (x,))
    z, logits = model(x)
    penalty = KL_WEIGHT * sum(
        RHO * math.log(RHO / q) + (1 - RHO) * math.log((1 - RHO) / (1 - q))
        for q in z.mean(0).tolist()
    )
    assert terms["kl"].item() == pytest.approx(penalty, rel=1e-5)
    torch.testing.assert_close(terms["loss"], terms["rec"] + terms["kl"])
    torch.testing.assert_close(terms["rec"], per_image_bce(logits, x).mean())


def test_contractive_loss_adds_the_jacobian_norm_by_autograd():
    model, x = model_and_images()
    terms = contractive_loss(model, (x,))
    penalty = CAE_WEIGHT * jacobian_frobenius_sq(model.encode, x).mean()
    torch.testing.assert_close(terms["jacobian"], penalty)
    torch.testing.assert_close(terms["loss"], terms["rec"] + penalty)


def test_denoising_loss_encodes_the_corrupted_image_and_compares_with_the_clean_one():
    model, x = model_and_images()
    seen = []

    def corrupt(images):
        seen.append(images)
        return images * (torch.arange(784) % 2)  # every other pixel set to 0

    terms = denoising_loss(model, (x,), corrupt)
    assert len(seen) == 1 and torch.equal(seen[0], x)
    corrupted = corrupt(x)
    _, logits = model(corrupted)
    torch.testing.assert_close(terms["loss"], per_image_bce(logits, x).mean())
    assert not torch.allclose(
        terms["loss"], per_image_bce(logits, corrupted).mean()
    )
    assert not torch.allclose(terms["loss"], plain_loss(model, (x,))["loss"])


def test_toy_loss_is_the_squared_distance_from_the_denoised_point_to_the_clean_one():
    torch.manual_seed(0)
    model = mlp([2, 8, 2], nn.Tanh)
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    loss = toy_loss(model, (x,))["loss"]
    torch.manual_seed(7)
    noisy = x + TOY_SIGMA * torch.randn(10, 2)
    expected = (
        sum(((model(noisy[n]) - x[n]) ** 2).sum() for n in range(10)) / 10
    )
    torch.testing.assert_close(loss, expected)
    torch.manual_seed(7)
    torch.testing.assert_close(
        toy_loss(model, (x,), sigma=0.0)["loss"],
        ((model(x) - x) ** 2).sum(1).mean(),
    )
