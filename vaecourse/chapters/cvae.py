"""The conditional VAE: the book's VAE with the label y as a second input of
both networks.

q(z|x, y) = N(μ, diag σ²) from the encoder's input concat(x, one_hot(y));
p(x|z, y) a Bernoulli decoder whose input is concat(z, one_hot(y)); the prior
p(z) = N(0, I) does not depend on y. The chapter "The conditional VAE" writes
out the same definitions (a test keeps the copies identical); its trained
models are ``vaecourse.zoo``'s ``cvae-8d`` and ``cvae-2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.chapters.autoencoders import mlp
from vaecourse.chapters.kl import gaussian_kl_standard
from vaecourse.chapters.vae import VAE, train_vae
from vaecourse.prob import log_bernoulli


class CVAE(nn.Module):
    """A conditional VAE with MLP encoder and decoder; the class enters both as
    a one-hot vector concatenated to the input. ``decoder`` is a plain
    ``nn.Sequential`` of concat(z, one_hot(y)), so the site's explorer can run
    it."""

    def __init__(
        self, latent_dim=8, hidden=(256,), classes=10, activation=nn.ReLU
    ):
        super().__init__()
        self.latent_dim, self.classes = latent_dim, classes
        self.encoder = mlp(
            [784 + classes, *hidden, 2 * latent_dim], activation
        )
        self.decoder = mlp(
            [latent_dim + classes, *reversed(hidden), 784], activation
        )

    def one_hot(self, y):
        if y.dtype != torch.long or y.min() < 0 or y.max() >= self.classes:
            raise ValueError(
                "labels must be a long tensor of classes "
                f"0..{self.classes - 1}; got dtype {y.dtype} with values "
                f"{y.min()}..{y.max()}"
            )
        return F.one_hot(y, self.classes).float()

    def encode(self, x, y):
        """Mean and log-variance of q(z|x, y), each (batch, latent_dim)."""
        h = torch.cat([x.flatten(1), self.one_hot(y)], dim=-1)
        return self.encoder(h).chunk(2, dim=-1)

    reparameterize = VAE.reparameterize  # z = mu + sigma * eps, as in the VAE

    def decode(self, z, y):
        """Logits of p(x|z, y); z may carry leading sample dimensions."""
        c = self.one_hot(y).expand(*z.shape[:-1], self.classes)
        return self.decoder(torch.cat([z, c], dim=-1))

    def forward(self, x, y):
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar)[0]
        return self.decode(z, y), mu, logvar


def cvae_negative_elbo(model, x, y, samples=1):
    """-ELBO of log p(x|y) per image, in nats, as (reconstruction, kl), each
    (batch,): reconstruction = -E_q[log p(x|z, y)] with ``samples`` draws, kl =
    KL(q(z|x,y) ‖ p(z))."""
    x = x.flatten(1)
    mu, logvar = model.encode(x, y)
    z = model.reparameterize(mu, logvar, samples)
    logits = model.decode(z, y)
    reconstruction = (
        -log_bernoulli(x.expand(len(z), -1, -1), logits).sum(-1).mean(0)
    )
    kl = gaussian_kl_standard(mu, logvar).sum(-1)
    return reconstruction, kl


def train_cvae(
    model,
    images,
    labels,
    *,
    epochs,
    batch_size=256,
    lr=5e-3,
    kl_warmup=0.3,
    seed=0,
):
    """Train a CVAE with the VAE chapter's recipe (``train_vae``: dynamic
    binarization, KL warm-up from 0 to 1, one-cycle learning rate), the labels
    going to both networks through ``cvae_negative_elbo``; return ``fit``'s
    history (nats per image)."""
    return train_vae(
        model,
        images,
        labels=labels,
        epochs=epochs,
        terms=cvae_negative_elbo,
        batch_size=batch_size,
        lr=lr,
        kl_warmup=kl_warmup,
        seed=seed,
        desc=f"CVAE, {model.latent_dim}-D latent",
    )


@torch.no_grad()
def sample(model, n, seed=0, labels=None):
    """``n`` generated images, shape (n, 1, 28, 28) in [0, 1] (Bernoulli
    means): z ~ N(0, I) decoded with ``labels`` (a long tensor of n classes; by
    default 0, 1, ..., 9, 0, ...)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if labels is None:
        labels = torch.arange(n) % model.classes
    if len(labels) != n:
        raise ValueError(
            f"need one label per image: n = {n}, {len(labels)} labels"
        )
    z = torch.randn(
        n, model.latent_dim, generator=torch.Generator().manual_seed(seed)
    )
    # z drawn on the CPU (the same codes on every device), decoded on the
    # model's device; CPU images
    device = next(model.parameters()).device
    images = torch.sigmoid(model.decode(z.to(device), labels.to(device)))
    return images.view(n, 1, 28, 28).cpu()


def transfer(model, x_style, y_style, y_content):
    """Style transfer x̂ = g(f(x_style, y_style), y_content): encode each style
    image with its own label (posterior mean), decode with every label of
    ``y_content``. Returns images of shape (len(x_style), len(y_content), 1,
    28, 28) in [0, 1]."""
    device = next(model.parameters()).device
    with torch.no_grad():
        mu, _ = model.encode(x_style.to(device), y_style.to(device))
        k = len(y_content)
        z = mu[:, None, :].expand(-1, k, -1)
        y = y_content.to(device)[None, :].expand(len(mu), -1)
        logits = model.decoder(torch.cat([z, model.one_hot(y)], dim=-1))
    # CPU images, like the samplers'
    return torch.sigmoid(logits).view(len(mu), k, 1, 28, 28).cpu()
