"""The chapter "Regularized autoencoders": a one-hidden-layer sigmoid
autoencoder, the penalties the chapter adds to its reconstruction loss, and the
losses it trains with.

The chapter writes each of these out where the reader sees it (a test keeps the
copies identical); the book's trained models (``vaecourse.zoo``) use them from
here. The closed-form contractive penalty holds only for the sigmoid encoder of
``SigmoidAutoencoder``; ``jacobian_frobenius_sq`` computes the same quantity
with autograd for any encoder, which is how the closed form is checked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.chapters.kl import bernoulli_kl

L1_WEIGHT = 1.0  # lambda of the L1 penalty
RHO = 0.05  # the KL penalty's target mean activation
KL_WEIGHT = 3.0  # beta of the KL penalty
CAE_WEIGHT = 0.5  # lambda of the contractive penalty
SIGMA = 0.3  # Gaussian noise: for training and for the robustness tests
MASK_LEVELS = (0.1, 0.4, 0.7)  # the masking models' destruction proportions
TOY_SIGMA = 0.3  # the noise of the two-dimensional denoising example


class SigmoidAutoencoder(nn.Module):
    """A d-k-d autoencoder with code z = sigmoid(Wx + b) and logits Vz + c.

    One hidden layer of sigmoid units is the setting of the sparse (KL) and
    contractive penalties: activations in (0, 1) read as firing probabilities,
    and the encoder's Jacobian has a closed form. ``forward`` returns the code
    and the decoder's logits (their sigmoid is the reconstruction).
    """

    def __init__(self, code_size: int, data_size: int = 784):
        super().__init__()
        if code_size < 1 or data_size < 1:
            raise ValueError(
                "code_size and data_size must be positive, "
                f"got {code_size} and {data_size}"
            )
        self.encoder = nn.Linear(data_size, code_size)
        self.decoder = nn.Linear(code_size, data_size)

    def encode(self, x):
        return torch.sigmoid(self.encoder(x.flatten(1)))

    def forward(self, x):
        z = self.encode(x)
        return z, self.decoder(z)


def sparsity_kl(z, rho):
    """Σ_j KL(Ber(rho) ‖ Ber(rho_hat_j)) over the code units, where rho_hat_j
    is the mean activation of unit j over the batch (not over one image)."""
    if z.dim() != 2:
        raise ValueError(f"z must be codes of shape (batch, k), not {z.shape}")
    if not 0 < rho < 1:
        raise ValueError(f"the target rate rho must be in (0, 1), got {rho}")
    rho_hat = z.mean(dim=0)
    return bernoulli_kl(torch.full_like(rho_hat, rho), rho_hat).sum()


def contractive_penalty(z, weight):
    """‖J_f(x)‖²_F per example for the encoder z = sigmoid(W x + b), in closed
    form: dz_j/dx_i = z_j (1 - z_j) W_ji, so
    ‖J‖²_F = Σ_j (z_j (1 - z_j))² Σ_i W_ji²."""
    if z.dim() != 2 or weight.dim() != 2 or z.shape[1] != weight.shape[0]:
        raise ValueError(
            "need codes (batch, k) and encoder weights (k, d); "
            f"got {tuple(z.shape)} and {tuple(weight.shape)}"
        )
    return (z * (1 - z)) ** 2 @ (weight**2).sum(dim=1)


def jacobian_frobenius_sq(encode, x):
    """‖J_f(x)‖²_F per example for any differentiable encoder, with autograd.

    Builds the full Jacobian (k × d per example) with ``torch.func``: exact,
    but k times the cost of one backward pass; for checks and small batches.
    """
    from torch.func import jacrev, vmap

    flat = x.flatten(1)

    def one(xi):
        return encode(xi.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(one))(flat)
    return (jac**2).sum(dim=(1, 2))


def bce(logits, x):
    """Binary cross-entropy summed over the pixels, averaged over the batch:
    nats per image."""
    return F.binary_cross_entropy_with_logits(
        logits, x, reduction="sum"
    ) / len(x)


def plain_loss(model, batch):
    """The plain autoencoder: reconstruction only."""
    (x,) = batch
    z, logits = model(x)
    rec = bce(logits, x)
    return {"loss": rec, "rec": rec}


def l1_loss(model, batch, weight=L1_WEIGHT):
    """Reconstruction + weight · Σ_j |z_j|, averaged over the batch."""
    (x,) = batch
    z, logits = model(x)
    rec = bce(logits, x)
    penalty = weight * z.abs().sum(dim=1).mean()
    return {"loss": rec + penalty, "rec": rec, "l1": penalty}


def kl_loss(model, batch, rho=RHO, weight=KL_WEIGHT):
    """Reconstruction + weight · Σ_j KL(Ber(rho) ‖ Ber(rho_hat_j))."""
    (x,) = batch
    z, logits = model(x)
    rec = bce(logits, x)
    penalty = weight * sparsity_kl(z, rho)
    return {"loss": rec + penalty, "rec": rec, "kl": penalty}


def denoising_loss(model, batch, corrupt):
    """Reconstruct the clean image from ``corrupt(image)``."""
    (x,) = batch
    z, logits = model(corrupt(x))  # the encoder sees the corrupted image ...
    rec = bce(logits, x)  # ... the loss compares with the clean one
    return {"loss": rec, "rec": rec}


def contractive_loss(model, batch, weight=CAE_WEIGHT):
    """Reconstruction + weight · ‖J_f(x)‖²_F, averaged over the batch."""
    (x,) = batch
    z, logits = model(x)
    rec = bce(logits, x)
    penalty = weight * contractive_penalty(z, model.encoder.weight).mean()
    return {"loss": rec + penalty, "rec": rec, "jacobian": penalty}


def toy_loss(model, batch, sigma=TOY_SIGMA):
    """Denoising in the plane: the squared distance from r(x + sigma · eps)
    to the clean x."""
    (x,) = batch
    rec = ((model(x + sigma * torch.randn_like(x)) - x) ** 2).sum(dim=1).mean()
    return {"loss": rec}
