"""The chapter "The β-VAE": the book's VAE trained on distortion + β·rate, and
what the sweep measures.

Distortion D = -E_q[log p(x|z)] and rate R = KL(q(z|x) ‖ p(z)), both in nats
per image: the negative ELBO is D + R, and the β-VAE minimises D + β R (β = 1
is the VAE). The chapter writes out ``train_beta_vae``; its trained models are
``vaecourse.zoo``'s ``beta-vae-<β>``.
"""

from __future__ import annotations

import torch

from vaecourse.chapters.kl import gaussian_kl_standard
from vaecourse.chapters.vae import negative_elbo, train_vae
from vaecourse.data import binarize_static

BETAS = (0.1, 0.3, 1.0, 2.0, 4.0, 10.0)  # the chapter's sweep


def train_beta_vae(
    model,
    images,
    *,
    beta,
    epochs,
    batch_size=256,
    lr=5e-3,
    kl_warmup=0.3,
    seed=0,
):
    """Train a Bernoulli-decoder VAE on grey ``images`` by minimising
    distortion + β·rate: the VAE chapter's recipe (``train_vae``) with the KL
    weight warmed up from 0 to ``beta``, not to 1. Returns ``fit``'s history:
    per epoch the loss, the distortion (``reconstruction``) and the rate
    (``kl``), in nats per image."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (beta = 1 is the VAE), got {beta}")
    return train_vae(
        model,
        images,
        epochs=epochs,
        beta=beta,
        batch_size=batch_size,
        lr=lr,
        kl_warmup=kl_warmup,
        seed=seed,
        desc=f"β-VAE, β = {beta:g}",
    )


@torch.no_grad()
def rate_distortion(model, images, seed=0, batch_size=1000):
    """Mean distortion and rate (nats per image) of ``model`` on ``images``,
    binarized once with ``binarize_static(images, seed)``; the distortion is a
    one-sample Monte Carlo estimate with a fixed seed. Returns a dict with
    ``distortion``, ``rate`` and ``kl_per_dim``, the rate of each latent
    dimension (a tensor that sums to ``rate``), and the per-image values
    ``distortion_per_image`` and ``rate_per_image`` (for standard errors and
    paired comparisons between models on the same images).
    """
    if len(images) == 0:
        raise ValueError("rate_distortion needs at least one image")
    device = next(model.parameters()).device
    x = binarize_static(images, seed=seed).flatten(1)
    distortions, kls = [], []
    # the seed reseeds every generator, a GPU's too: fork_rng restores them
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            d, _ = negative_elbo(model, xb)
            mu, logvar = model.encode(xb)
            # per-image values on the CPU, whatever the model's device
            distortions.append(d.cpu())
            kls.append(gaussian_kl_standard(mu, logvar).cpu())
    distortion, kl = torch.cat(distortions), torch.cat(kls)
    kl_per_dim = kl.mean(0)
    return {
        "distortion": float(distortion.mean()),
        "rate": float(kl_per_dim.sum()),
        "kl_per_dim": kl_per_dim,
        "distortion_per_image": distortion,
        "rate_per_image": kl.sum(1),
    }


def active_dimensions(kl_per_dim, threshold=0.01):
    """The latent dimensions whose average KL(q(z_j|x) ‖ p(z_j)) exceeds
    ``threshold`` nats: a dimension below it carries (almost) no information
    about x, because its posterior is the prior for every image. Returns a
    boolean tensor."""
    if not threshold >= 0:
        raise ValueError(
            f"the threshold is a KL in nats, >= 0; got {threshold}"
        )
    return torch.as_tensor(kl_per_dim) > threshold


@torch.no_grad()
def traversal(model, image, values):
    """Latent traversals of one image: start from its posterior mean, set one
    dimension at a time to each of ``values`` and decode. Returns images of
    shape (latent_dim, len(values), 1, 28, 28), row j varying dimension j only.
    """
    device = next(model.parameters()).device
    mu, _ = model.encode(image.reshape(1, 784).to(device))
    values = torch.as_tensor(values, dtype=mu.dtype, device=device)
    d = model.latent_dim
    z = mu.repeat(d, len(values), 1)  # (d, k, d)
    dims = torch.arange(d, device=device)
    z[dims, :, dims] = values
    images = torch.sigmoid(model.decoder(z))
    return images.view(d, len(values), 1, 28, 28).cpu()  # CPU images
