"""Regularized autoencoders: a one-hidden-layer sigmoid autoencoder and the
penalties that the chapter "Regularized autoencoders" adds to its reconstruction loss.

The chapter writes each of these out where the reader sees it; later chapters import
them from here. The closed-form contractive penalty holds only for the sigmoid encoder
of ``SigmoidAutoencoder``; ``jacobian_frobenius_sq`` computes the same quantity with
autograd for any encoder, which is how the closed form is checked.
"""

from __future__ import annotations

import torch
from torch import nn

from vaecourse.divergences import bernoulli_kl


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
