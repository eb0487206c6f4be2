"""Checks for the exercises of the chapter "Regularized autoencoders"."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vaecourse.chapters.regularized import RHO, bce, sparsity_kl
from vaecourse.checks import Exercise, Mistake

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _uniform(*shape, low=0.0, high=1.0):
    return low + (high - low) * torch.rand(*shape, generator=_gen, dtype=f64)


def _normal(*shape, scale=1.0):
    return scale * torch.randn(*shape, generator=_gen, dtype=f64)


# 1. The gradient of the KL sparsity penalty with respect to the codes ------


def _kl_gradient(z, rho):
    z = z.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(sparsity_kl(z, rho), z)
    return gradient


def _slope(rho_hat, rho):
    """d KL(rho ‖ rho_hat) / d rho_hat."""
    return -rho / rho_hat + (1 - rho) / (1 - rho_hat)


def _kl_gradient_swapped(z, rho):
    rho_hat = z.mean(0)
    slope = torch.log(rho_hat / rho) - torch.log((1 - rho_hat) / (1 - rho))
    return (slope / len(z)).expand_as(z)


_chapter_codes = torch.tensor([[0.0, 0.2, 0.9], [0.1, 0.0, 0.7]], dtype=f64)
_quiet = _uniform(5, 4, high=0.04)  # mean activations about 0.02

sparsity_kl_gradient = Exercise(
    name="sparsity_kl_gradient",
    question="The gradient of the KL sparsity penalty Σ_j KL(ρ ‖ ρ̂_j) with "
    "respect to every code value z_nj of a batch, in closed form.",
    reference=_kl_gradient,
    cases=[
        (_uniform(4, 3), RHO),
        (_uniform(8, 5, high=0.3), 0.1),
        (_chapter_codes, RHO),
        (_quiet, RHO),
        (torch.full((3, 2), 0.2, dtype=f64), 0.2),
    ],
    labels=[
        "a batch of 4 codes of 3 units, ρ = 0.05",
        "a batch of 8 codes of 5 units, ρ = 0.1",
        "the chapter's two codes [[0, 0.2, 0.9], [0.1, 0, 0.7]], ρ = 0.05",
        "5 codes of 4 quiet units (mean activations near 0.02), ρ = 0.05",
        "every activation equal to ρ = 0.2",
    ],
    mistakes=[
        Mistake(
            "the 1/B of the batch mean left out",
            lambda z, rho: _kl_gradient(z, rho) * len(z),
            "ρ̂_j is the mean of B activations, so ∂ρ̂_j / ∂z_nj = 1/B: "
            "multiply the slope of the KL by 1/B.",
        ),
        Mistake(
            "the KL on each activation",
            lambda z, rho: _slope(z, rho),
            "The penalty is on the batch mean ρ̂_j, not on each activation: "
            "compute ρ̂_j = z.mean(0) first. Every code value of a unit gets "
            "the same gradient.",
        ),
        Mistake(
            "KL(ρ̂ ‖ ρ) differentiated",
            _kl_gradient_swapped,
            "You differentiated KL(ρ̂ ‖ ρ), whose slope is log-shaped; the "
            "penalty is KL(ρ ‖ ρ̂), whose slope -ρ/ρ̂ + (1 - ρ)/(1 - ρ̂) is "
            "what revives a quiet unit.",
        ),
        Mistake(
            "the sign flipped",
            lambda z, rho: -_kl_gradient(z, rho),
            "Check the sign: for a quiet unit (ρ̂_j < ρ) the penalty falls as "
            "the activation rises, so the gradient must be negative there.",
        ),
        Mistake(
            "the (1 - ρ) term left out",
            lambda z, rho: (-rho / z.mean(0) / len(z)).expand_as(z),
            "KL(ρ ‖ ρ̂) has two terms, for firing and for not firing: the "
            "slope is -ρ/ρ̂ + (1 - ρ)/(1 - ρ̂), and it is zero at ρ̂ = ρ.",
        ),
    ],
    fallback="Differentiate in two steps: the slope of KL(ρ ‖ ρ̂_j) in ρ̂_j, "
    "times ∂ρ̂_j/∂z_nj; compare with torch.autograd.grad on sparsity_kl.",
)


# 2. The contractive penalty of a tanh encoder ------------------------------


def _tanh_penalty(z, weight):
    return (1 - z**2) ** 2 @ (weight**2).sum(dim=1)


_w = _normal(4, 7)

tanh_contractive_penalty = Exercise(
    name="tanh_contractive_penalty",
    question="‖J_f(x)‖²_F per example for a tanh encoder z = tanh(Wx + b), "
    "in closed form from the codes and the weights.",
    reference=_tanh_penalty,
    cases=[
        (torch.tanh(_normal(5, 4)), _w),
        (torch.tanh(_normal(3, 6, scale=2.0)), _normal(6, 10)),
        (torch.zeros(2, 4, dtype=f64), _w),
        (torch.tensor([[1.0, -1.0, 0.5, -0.5]], dtype=f64), _w),
    ],
    labels=[
        "5 codes of 4 units, weights of shape (4, 7)",
        "3 codes of 6 units, weights of shape (6, 10)",
        "z = 0 (every unit at its steepest)",
        "z = [1, -1, 0.5, -0.5] (two saturated units, two on either side)",
    ],
    mistakes=[
        Mistake(
            "the sigmoid's slope",
            lambda z, weight: (z * (1 - z)) ** 2 @ (weight**2).sum(dim=1),
            "z(1 - z) is the derivative of the sigmoid; the derivative of "
            "tanh is 1 - tanh², so ∂z_j/∂x_i = (1 - z_j²) W_ji.",
        ),
        Mistake(
            "tanh applied to the code again",
            lambda z, weight: (
                (1 - torch.tanh(z) ** 2) ** 2 @ (weight**2).sum(dim=1)
            ),
            "z is already the code tanh(Wx + b), not the pre-activation: the "
            "slope of unit j is 1 - z_j², not 1 - tanh(z_j)².",
        ),
        Mistake(
            "the slope not squared",
            lambda z, weight: (1 - z**2) @ (weight**2).sum(dim=1),
            "Each entry of the Jacobian is (1 - z_j²) W_ji, and the penalty "
            "sums its square: square the slope as well as the weights.",
        ),
        Mistake(
            "the row norms not squared",
            lambda z, weight: (1 - z**2) ** 2 @ weight.norm(dim=1),
            "Σ_i W_ji² is the squared norm of row j: use (weight ** "
            "2).sum(dim=1), not weight.norm(dim=1).",
        ),
        Mistake(
            "the norm, not its square",
            lambda z, weight: _tanh_penalty(z, weight).sqrt(),
            "The penalty is the squared Frobenius norm ‖J‖²_F: do not take "
            "the square root.",
        ),
        Mistake(
            "a mean over the batch",
            lambda z, weight: _tanh_penalty(z, weight).mean(),
            "Return one value per example (shape (batch,)); the loss averages "
            "over the batch later.",
        ),
    ],
    fallback="Apply the chain rule to z_j = tanh(w_jᵀx + b_j), write tanh' in "
    "terms of z_j, then sum the squares of all k × d entries; "
    "jacobian_frobenius_sq checks it.",
)


# 3. The emphasized denoising loss of Vincent et al. (2010) -----------------


def _emphasized(logits, x, destroyed, alpha, beta):
    weights = alpha * destroyed + beta * (1 - destroyed)
    loss = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return (weights * loss).sum() / len(x)


def _destroyed(n, d, nu):
    return (_uniform(n, d) < nu).to(f64)


_logits, _x = _normal(4, 20, scale=2.0), _uniform(4, 20)
_mask = _destroyed(4, 20, 0.3)

emphasized_bce = Exercise(
    name="emphasized_bce",
    question="The emphasized denoising loss: the BCE against the clean image, "
    "weighted α on the destroyed pixels and β on the others.",
    reference=_emphasized,
    cases=[
        (_logits, _x, _mask, 2.0, 0.5),
        (
            _normal(3, 784, scale=3.0),
            _uniform(3, 784),
            _destroyed(3, 784, 0.4),
            1.5,
            1.0,
        ),
        (_logits, _x, _mask, 1.0, 1.0),
        (_logits, _x, torch.zeros(4, 20, dtype=f64), 3.0, 0.7),
        (_logits, _x, _mask, 1.0, 0.0),
    ],
    labels=[
        "4 images of 20 pixels, 30% destroyed, α = 2, β = 0.5",
        "3 images of 784 pixels, 40% destroyed, α = 1.5, β = 1",
        "α = β = 1 (the chapter's bce)",
        "nothing destroyed, α = 3, β = 0.7",
        "α = 1, β = 0 (only the destroyed pixels count)",
    ],
    mistakes=[
        Mistake(
            "α and β swapped",
            lambda logits, x, destroyed, alpha, beta: _emphasized(
                logits, x, destroyed, beta, alpha
            ),
            "α weights the destroyed pixels (destroyed = 1), β the pixels the "
            "corruption left intact; yours are the other way round.",
        ),
        Mistake(
            "the corrupted image as the target",
            lambda logits, x, destroyed, alpha, beta: _emphasized(
                logits, x * (1 - destroyed), destroyed, alpha, beta
            ),
            "Compare the reconstruction with the clean image x, not with the "
            "masked input: a target with the holes in it trains the model to "
            "reproduce the holes.",
        ),
        Mistake(
            "a mean over the pixels",
            lambda logits, x, destroyed, alpha, beta: (
                _emphasized(logits, x, destroyed, alpha, beta) / x.shape[1]
            ),
            "Like the chapter's bce, sum over the pixels and average over the "
            "images only: nats per image.",
        ),
        Mistake(
            "a sigmoid before the loss",
            lambda logits, x, destroyed, alpha, beta: _emphasized(
                torch.sigmoid(logits), x, destroyed, alpha, beta
            ),
            "binary_cross_entropy_with_logits applies the sigmoid itself: "
            "pass it the logits, not sigmoid(logits).",
        ),
        Mistake(
            "β left out",
            lambda logits, x, destroyed, alpha, beta: _emphasized(
                logits, x, destroyed, alpha, 0.0
            ),
            "The intact pixels count too, with weight β: only with β = 0 does "
            "the loss ignore them.",
        ),
    ],
    fallback="Give every pixel its weight (α where destroyed is 1, β where it "
    "is 0), weight the per-pixel BCE against the clean x with it, and reduce "
    "as the chapter's bce does: with α = β = 1 you must get bce(logits, x).",
)

# the reference reduces to the chapter's loss when α = β = 1
assert torch.allclose(
    _emphasized(_logits, _x, _mask, 1.0, 1.0), bce(_logits, _x), rtol=1e-12
)
