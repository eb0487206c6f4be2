"""The chapter "The variational autoencoder": the model, its loss, its training
recipe and its test log-likelihood.

The chapter writes these out and explains them (a test keeps the copies
identical); later chapters (the β-VAE, the conditional VAE, the comparison)
import them from here. All quantities are in nats per image (natural logarithm,
summed over the 784 pixels and the latent units, averaged over images), never
per pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.chapters.autoencoders import mlp
from vaecourse.chapters.kl import gaussian_kl_standard
from vaecourse.data import binarize_dynamic
from vaecourse.prob import (
    iw_bound,
    log_bernoulli,
    log_normal,
    log_standard_normal,
)
from vaecourse.train import fast_dtype, fit, total_steps


class VAE(nn.Module):
    """A VAE with MLP encoder and decoder.

    The encoder maps an image to the mean and log-variance of q(z|x); the
    decoder maps a latent code to 784 logits (Bernoulli decoder) or, through a
    sigmoid, to the mean grey levels of a Gaussian decoder.
    """

    def __init__(self, latent_dim=32, hidden=(512, 256), activation=nn.ReLU):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp([784, *hidden, 2 * latent_dim], activation)
        self.decoder = mlp([latent_dim, *reversed(hidden), 784], activation)

    def encode(self, x):
        """Mean and log-variance of q(z|x), each of shape (batch, latent_dim);
        float32 even under bfloat16 autocast, so that the KL term is computed
        at full precision."""
        mu, logvar = self.encoder(x.flatten(1)).float().chunk(2, dim=-1)
        return mu, logvar

    def reparameterize(self, mu, logvar, samples=1):
        """``samples`` draws z = mu + sigma * eps, eps ~ N(0, I): shape
        (samples, *mu.shape).

        The noise is an input; z is a differentiable function of mu and logvar.
        """
        eps = torch.randn(
            (samples, *mu.shape), dtype=mu.dtype, device=mu.device
        )
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x):
        """Logits of p(x|z) for one sample z ~ q(z|x), and the parameters of
        q."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)[0]
        return self.decoder(z), mu, logvar


def negative_elbo(model, x, samples=1):
    """The negative ELBO of a Bernoulli-decoder VAE, per image, in nats, as two
    terms:

    reconstruction = -E_q[log p(x|z)], estimated with ``samples`` draws of z
    (L), and kl = KL(q(z|x) ‖ p(z)), in closed form. Returns (reconstruction,
    kl), each of shape (batch,); the loss is their sum, averaged over the
    batch.
    """
    x = x.flatten(1)
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar, samples)
    reconstruction = (
        -log_bernoulli(x.expand(len(z), -1, -1), model.decoder(z))
        .sum(-1)
        .mean(0)
    )
    kl = gaussian_kl_standard(mu, logvar).sum(-1)
    return reconstruction, kl


def gaussian_negative_elbo(model, x, sigma, samples=1):
    """The negative ELBO with a Gaussian decoder p(x|z) =
    N(sigmoid(decoder(z)), sigma² I) on grey levels, per image, in nats:
    returns (reconstruction, kl), each (batch,).

    -log p(x|z) = ||x - mean||² / (2 sigma²) + (784 / 2) log(2 pi sigma²):
    squared error weighted by 1 / (2 sigma²), so sigma sets the balance against
    the KL term.
    """
    if not sigma > 0:
        raise ValueError(
            f"the decoder's standard deviation sigma must be > 0, got {sigma}"
        )
    x = x.flatten(1)
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar, samples)
    mean = torch.sigmoid(model.decoder(z))
    squared_error = ((x - mean) ** 2).sum(-1).mean(0)
    reconstruction = squared_error / (2 * sigma**2) + 784 / 2 * math.log(
        2 * math.pi * sigma**2
    )
    kl = gaussian_kl_standard(mu, logvar).sum(-1)
    return reconstruction, kl


def log_weights(model, x, samples):
    """log w = log p(x|z) + log p(z) - log q(z|x) for ``samples`` draws z ~
    q(z|x), of shape (samples, batch). Their mean is the Monte Carlo ELBO;
    their log-mean-exp is the importance-weighted bound, which approaches log
    p(x) as the number of samples grows.
    """
    x = x.flatten(1)
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar, samples)
    log_px_z = log_bernoulli(x.expand(len(z), -1, -1), model.decoder(z)).sum(
        -1
    )
    return (
        log_px_z
        + log_standard_normal(z).sum(-1)
        - log_normal(z, mu, logvar).sum(-1)
    )


def iw_nll(model, x, samples=1000, batch_size=100, chunk=50, seed=0):
    """The importance-weighted estimate of -log p(x) for each binary image in
    ``x``, in nats (Burda et al.): -log (1/K) sum_k w_k with K = ``samples``
    draws from q(z|x).

    An upper bound on -log p(x) in expectation that tightens as K grows; with K
    = 1 it is the negative ELBO. Images go ``batch_size`` at a time and the
    samples ``chunk`` at a time (the log-weights of an image are combined with
    logsumexp), to bound memory; small chunks keep the decoder's outputs in the
    CPU's cache, which makes 50 almost twice as fast as 500. Seeded, so the
    same model and images give the same numbers.
    """
    x = x.flatten(1)
    if min(samples, batch_size, chunk) < 1:
        raise ValueError(
            "samples, batch_size and chunk must be >= 1, got "
            f"{samples}, {batch_size}, {chunk}"
        )
    if x.shape[1] != 784 or not ((x == 0) | (x == 1)).all():
        raise ValueError(
            "iw_nll needs binary images of 784 pixels, shape (N, 784) or "
            f"(N, 1, 28, 28): got shape {tuple(x.shape)}; binarize grey "
            "images first (binarize_static)"
        )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # the seed reseeds every generator, a GPU's too: fork_rng restores them
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        try:
            out = []
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size].to(device)
                with torch.no_grad():  # an evaluation: no graph needed
                    log_w = torch.cat(
                        [
                            log_weights(model, xb, min(chunk, samples - j))
                            for j in range(0, samples, chunk)
                        ]
                    )
                # per-image values on the CPU, whatever the model's device
                out.append(-iw_bound(log_w, dim=0).cpu())
        finally:
            model.train(was_training)
    return torch.cat(out)


def train_vae(
    model,
    images,
    *,
    epochs,
    labels=None,
    terms=negative_elbo,
    beta=1.0,
    binarize=True,
    batch_size=256,
    lr=4e-3,
    kl_warmup=0.3,
    mixed_precision=False,
    seed=0,
    desc="VAE",
):
    """Train ``model`` on ``images`` with the book's recipe: minimise
    (reconstruction + weight * kl).mean(), where ``terms(model, x)`` returns
    the two terms per image (``negative_elbo`` by default). Returns ``fit``'s
    history: per epoch, the loss and the two terms in nats per image, the mean
    KL weight and the learning rate.

    - ``beta``: the KL weight after the warm-up (1, the negative ELBO; the
      β-VAE chapter uses others). ``labels``: passed on as ``terms(model, x,
      y)`` (the conditional VAE).
    - Dynamic binarization (``binarize=True``): a fresh binary sample of every
      grey image at every step. With ``binarize=False`` the grey levels go in
      as they are.
    - KL warm-up: the weight rises linearly from 0 to ``beta`` over the first
      ``kl_warmup`` fraction of the steps, so the decoder learns to use z
      before the KL term pulls q(z|x) onto the prior; after that (beta = 1) the
      loss is the negative ELBO.
    - Learning rate: a warm-up over the first 2% of the steps to ``lr``, then a
      cosine decay to almost 0 (``fit``'s one-cycle schedule).
    - ``mixed_precision``: the networks' matrix products run in bfloat16 under
      ``torch.autocast`` where the CPU multiplies it natively (``fast_dtype``);
      the weights, the optimiser and the loss stay float32.
    """
    warmup_steps = kl_warmup * total_steps(len(images), batch_size, epochs)
    dtype = fast_dtype() if mixed_precision else torch.float32
    step = 0

    def loss_fn(model, batch):
        nonlocal step
        x = binarize_dynamic(batch[0]) if binarize else batch[0]
        weight = beta * min(1.0, step / warmup_steps) if warmup_steps else beta
        step += 1
        with torch.autocast(
            x.device.type, dtype=dtype, enabled=dtype != torch.float32
        ):
            reconstruction, kl = terms(model, x, *batch[1:])
        return {
            "loss": (reconstruction + weight * kl).mean(),
            "reconstruction": reconstruction.mean(),
            "kl": kl.mean(),
            "kl_weight": torch.tensor(weight),
        }

    data = (images,) if labels is None else (images, labels)
    return fit(
        model,
        loss_fn,
        data,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup=0.02,
        seed=seed,
        desc=desc,
    )


def ae_terms(model, x):
    """A plain autoencoder's terms in ``train_vae``'s format: the VAE's
    reconstruction term for the code itself (no noise), and no KL."""
    x = x.flatten(1)
    reconstruction = -log_bernoulli(x, model.decoder(model.encode(x))).sum(1)
    return reconstruction, torch.zeros_like(reconstruction)


def train_official_recipe(model, images, seconds, batch_size=128, lr=1e-3):
    """The official PyTorch example's recipe: Adam at a constant learning rate
    on the negative ELBO, in float32, in batches of 128, for ``seconds`` of
    training (the training time of the model it is compared with)."""

    def loss_fn(model, batch):
        reconstruction, kl = negative_elbo(model, binarize_dynamic(batch[0]))
        return {"loss": (reconstruction + kl).mean()}

    return fit(
        model,
        loss_fn,
        (images,),
        epochs=None,
        time_limit=seconds,
        batch_size=batch_size,
        lr=lr,
        desc="official recipe",
    )


@torch.no_grad()
def sample(model, n, seed=0):
    """``n`` images generated by ``model``: z ~ N(0, I), decoded to the
    Bernoulli means sigmoid(decoder(z)), shape (n, 1, 28, 28) in [0, 1].
    Seeded."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    z = torch.randn(
        n, model.latent_dim, generator=torch.Generator().manual_seed(seed)
    )
    # z drawn on the CPU (the same codes on every device), decoded on the
    # model's device; CPU images
    device = next(model.parameters()).device
    images = torch.sigmoid(model.decoder(z.to(device)))
    return images.view(n, 1, 28, 28).cpu()


class ReferenceVAE(nn.Module):
    """The VAE of source 001 (784-32-2 with ReLU, heads for mu and gamma = log
    sigma², decoder 2-32-784 ending in a sigmoid), written for current PyTorch.
    """

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 32), nn.ReLU())
        self.mu = nn.Linear(32, 2)
        self.gamma = nn.Linear(32, 2)  # gamma = log sigma^2
        self.decoder = nn.Sequential(
            nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 784), nn.Sigmoid()
        )

    def encode(self, x):
        h = self.encoder(x.flatten(1))
        return self.mu(h), self.gamma(h)

    def reparameterize(self, mu, gamma):
        if self.training:
            return mu + torch.exp(0.5 * gamma) * torch.randn_like(mu)
        return mu  # at evaluation time: the posterior mean, no noise

    def forward(self, x):
        mu, gamma = self.encode(x)
        return self.decoder(self.reparameterize(mu, gamma)), mu, gamma


def reference_loss(x, output, mu, gamma):
    """Source 001's loss: BCE averaged over the batch and the pixels, plus the
    KL summed over the batch and divided by batch · 784: the negative ELBO in
    nats per pixel."""
    # mean over batch AND pixels
    bce = F.binary_cross_entropy(output, x.flatten(1))
    kld = -0.5 * torch.sum(1 + gamma - mu.pow(2) - gamma.exp())
    return bce + kld / (len(x) * 784)


def reference_fit_loss(model, batch):
    """``reference_loss`` on a dynamically binarized batch, in ``fit``'s
    format."""
    x = binarize_dynamic(batch[0])
    return {"loss": reference_loss(x, *model(x))}
