"""The book's variational autoencoder: the model, its loss and its test log-likelihood.

The chapter "The variational autoencoder" writes these out and explains them; later
chapters (the beta-VAE, the conditional VAE, the comparison) import them from here. All
quantities are in nats per image (natural logarithm, summed over the 784 pixels and the
latent units, averaged over images), never per pixel.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from vaecourse.cache import train_cached
from vaecourse.data import batches, binarize_dynamic, load_mnist
from vaecourse.divergences import (
    gaussian_kl_standard,
    iw_bound,
    log_bernoulli,
    log_normal,
    log_standard_normal,
)
from vaecourse.train import QUICK_BATCHES, fast_dtype, fit, quick_mode, threads


def mlp(sizes, activation=nn.ReLU):
    """Linear layers of the given sizes with ``activation`` between them (not after the
    last): a plain ``nn.Sequential``, which the browser explorers can run as it is."""
    layers = [nn.Linear(sizes[0], sizes[1])]
    for n_in, n_out in zip(sizes[1:-1], sizes[2:], strict=True):
        layers += [activation(), nn.Linear(n_in, n_out)]
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """A VAE with MLP encoder and decoder.

    The encoder maps an image to the mean and log-variance of q(z|x); the decoder maps a
    latent code to 784 logits (Bernoulli decoder) or, through a sigmoid, to the mean grey
    levels of a Gaussian decoder.
    """

    def __init__(self, latent_dim=32, hidden=(512, 256), activation=nn.ReLU):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp([784, *hidden, 2 * latent_dim], activation)
        self.decoder = mlp([latent_dim, *reversed(hidden), 784], activation)

    def encode(self, x):
        """Mean and log-variance of q(z|x), each of shape (batch, latent_dim); float32
        even under bfloat16 autocast, so that the KL term is computed at full precision."""
        mu, logvar = self.encoder(x.flatten(1)).float().chunk(2, dim=-1)
        return mu, logvar

    def reparameterize(self, mu, logvar, samples=1):
        """``samples`` draws z = mu + sigma * eps, eps ~ N(0, I): shape (samples, *mu.shape).

        The noise is an input; z is a differentiable function of mu and logvar.
        """
        eps = torch.randn((samples, *mu.shape), dtype=mu.dtype, device=mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x):
        """Logits of p(x|z) for one sample z ~ q(z|x), and the parameters of q."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)[0]
        return self.decoder(z), mu, logvar


def negative_elbo(model, x, samples=1):
    """The negative ELBO of a Bernoulli-decoder VAE, per image, in nats, as two terms:

    reconstruction = -E_q[log p(x|z)], estimated with ``samples`` draws of z (L), and
    kl = KL(q(z|x) ‖ p(z)), in closed form. Returns (reconstruction, kl), each of shape
    (batch,); the loss is their sum, averaged over the batch.
    """
    x = x.flatten(1)
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar, samples)
    reconstruction = (
        -log_bernoulli(x.expand(len(z), -1, -1), model.decoder(z)).sum(-1).mean(0)
    )
    kl = gaussian_kl_standard(mu, logvar).sum(-1)
    return reconstruction, kl


def gaussian_negative_elbo(model, x, sigma, samples=1):
    """The negative ELBO with a Gaussian decoder p(x|z) = N(sigmoid(decoder(z)), sigma² I)
    on grey levels, per image, in nats: returns (reconstruction, kl), each (batch,).

    -log p(x|z) = ||x - mean||² / (2 sigma²) + (784 / 2) log(2 pi sigma²): squared error
    weighted by 1 / (2 sigma²), so sigma sets the balance against the KL term.
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
    """log w = log p(x|z) + log p(z) - log q(z|x) for ``samples`` draws z ~ q(z|x), of
    shape (samples, batch). Their mean is the Monte Carlo ELBO; their log-mean-exp is the
    importance-weighted bound, which approaches log p(x) as the number of samples grows.
    """
    x = x.flatten(1)
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar, samples)
    log_px_z = log_bernoulli(x.expand(len(z), -1, -1), model.decoder(z)).sum(-1)
    return log_px_z + log_standard_normal(z).sum(-1) - log_normal(z, mu, logvar).sum(-1)


def iw_nll(model, x, samples=1000, batch_size=100, chunk=50, seed=0):
    """The importance-weighted estimate of -log p(x) for each binary image in ``x``, in nats
    (Burda et al.): -log (1/K) sum_k w_k with K = ``samples`` draws from q(z|x).

    An upper bound on -log p(x) in expectation that tightens as K grows; with K = 1 it is
    the negative ELBO. Images go ``batch_size`` at a time and the samples ``chunk`` at a
    time (the log-weights of an image are combined with logsumexp), to bound memory; small
    chunks keep the decoder's outputs in the CPU's cache, which makes 50 almost twice as
    fast as 500. Seeded, so the same model and images give the same numbers.
    """
    x = x.flatten(1)
    if min(samples, batch_size, chunk) < 1:
        raise ValueError(
            f"samples, batch_size and chunk must be >= 1, got {samples}, {batch_size}, "
            f"{chunk}"
        )
    if x.shape[1] != 784 or not ((x == 0) | (x == 1)).all():
        raise ValueError(
            "iw_nll needs binary images of 784 pixels, shape (N, 784) or (N, 1, 28, 28): "
            f"got shape {tuple(x.shape)}; binarize grey images first (binarize_static)"
        )
    was_training = model.training
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        out = []
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            with torch.no_grad():  # an evaluation: no graph needed
                log_w = torch.cat(
                    [
                        log_weights(model, xb, min(chunk, samples - j))
                        for j in range(0, samples, chunk)
                    ]
                )
            out.append(-iw_bound(log_w, dim=0))
    finally:
        torch.random.set_rng_state(state)
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
    dtype=torch.float32,
    seed=0,
    desc="VAE",
):
    """Train ``model`` on ``images`` with the book's recipe: minimise
    (reconstruction + weight * kl).mean(), where ``terms(model, x)`` returns the two terms
    per image (``negative_elbo`` by default). Returns ``fit``'s history: per epoch, the
    loss and the two terms in nats per image.

    - ``beta``: the KL weight after the warm-up (1, the negative ELBO; the β-VAE chapter
      uses others). ``labels``: passed on as ``terms(model, x, y)`` (the conditional VAE).
    - Dynamic binarization (``binarize=True``): a fresh binary sample of every grey image
      at every step. With ``binarize=False`` the grey levels go in as they are.
    - KL warm-up: the weight rises linearly from 0 to ``beta`` over the first ``kl_warmup``
      fraction of the steps, so the decoder learns to use z before the KL term pulls
      q(z|x) onto the prior; after that (beta = 1) the loss is the negative ELBO.
    - Learning rate: a warm-up over the first 2% of the steps to ``lr``, then a cosine
      decay to almost 0 (PyTorch's OneCycleLR, stepped every batch).
    - ``dtype=torch.bfloat16``: mixed precision. Under ``torch.autocast`` the networks'
      matrix products run in bfloat16, about twice as fast on a CPU that has bfloat16
      instructions (``fast_dtype``); the weights, the optimiser and the loss stay float32.
    """
    steps = epochs * -(-len(images) // batch_size)
    if quick_mode():  # fit runs only QUICK_BATCHES steps: fit both schedules to them
        steps = min(steps, QUICK_BATCHES)
    warmup_steps = kl_warmup * steps
    step = 0

    def loss_fn(model, batch):
        nonlocal step
        x = binarize_dynamic(batch[0]) if binarize else batch[0]
        weight = beta * min(1.0, step / warmup_steps) if warmup_steps else beta
        step += 1
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
            reconstruction, kl = terms(model, x, *batch[1:])
        return {
            "loss": (reconstruction + weight * kl).mean(),
            "reconstruction": reconstruction.mean(),
            "kl": kl.mean(),
        }

    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.02, cycle_momentum=False
    )
    return fit(
        model,
        loss_fn,
        (images,) if labels is None else (images, labels),
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        scheduler=scheduler,
        schedule_every="batch",
        seed=seed,
        desc=desc,
    )


class Autoencoder(nn.Module):
    # The VAE's networks without the noise: the encoder outputs the code itself.
    def __init__(self, latent_dim=32, hidden=(512, 256), activation=nn.ReLU):
        super().__init__()
        self.encoder = mlp([784, *hidden, latent_dim], activation)
        self.decoder = mlp([latent_dim, *reversed(hidden), 784], activation)

    def encode(self, x):
        return self.encoder(x.flatten(1))


def ae_terms(model, x):
    # the same reconstruction term as the VAE's, and no KL
    x = x.flatten(1)
    reconstruction = -log_bernoulli(x, model.decoder(model.encode(x))).sum(1)
    return reconstruction, torch.zeros_like(reconstruction)


def trained_main_vae():
    """The VAE chapter's main model, trained once through the checkpoint cache, so later
    chapters load the same weights. ``.trained`` holds the cache record (history, time).
    It trains on one thread, so that the official recipe can train beside it on the
    other core (``trained_official_recipe``), and so that its weights are reproducible."""
    recipe = {"batch_size": 512, "lr": 1e-2, "kl_warmup": 0.3, "dtype": fast_dtype()}
    epochs = 45
    torch.manual_seed(0)
    model = VAE(32, (512, 256), nn.SiLU)
    images = load_mnist("train")[0]
    with threads(1):
        model.trained = train_cached(
            "vae-main",
            model,
            lambda m: train_vae(m, images, epochs=epochs, **recipe),
            {
                **recipe,
                "dtype": str(recipe["dtype"]),
                "epochs": epochs,
                "seed": 0,
                "threads": 1,
            },
        )
    return model


def train_official_recipe(model, images, started, stop, batch_size=128, lr=1e-3):
    """The official PyTorch example's recipe: Adam at a constant learning rate on the
    negative ELBO, in float32, epoch after epoch until the event ``stop`` is set (the
    model it is compared with has finished). It sets the event ``started`` when its clock
    starts. Adam is fused and the binarization fast, as in ``train_vae``: the same
    implementation, the official recipe."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    history, epoch = [], 0
    started.set()
    start = time.perf_counter()
    while not stop.is_set():
        epoch, total, seen = epoch + 1, 0.0, 0
        for (x,) in batches(
            images, batch_size=batch_size, shuffle=True, generator=generator
        ):
            reconstruction, kl = negative_elbo(model, binarize_dynamic(x))
            loss = (reconstruction + kl).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(x), seen + len(x)
            if stop.is_set() or (quick_mode() and seen >= QUICK_BATCHES * batch_size):
                break
        seconds = time.perf_counter() - start
        history.append(
            {"epoch": epoch, "loss": total / seen, "images": seen, "time": seconds}
        )
        if quick_mode():
            break
    model.eval()
    return history


def trained_official_recipe(started, stop):
    """The official PyTorch example's VAE (784-400-20, ReLU), trained with its recipe until
    ``stop`` is set, through the checkpoint cache: the job that runs beside the main VAE's
    training (``on_second_core``). Its cache key names the main VAE's, since its training
    time is the main VAE's."""
    torch.manual_seed(0)
    model = VAE(20, (400,), nn.ReLU)
    images = load_mnist("train")[0]
    main_vae = {  # the main VAE's cache key (trained_main_vae): we train as long as it
        "batch_size": 512,
        "lr": 1e-2,
        "kl_warmup": 0.3,
        "dtype": str(fast_dtype()),
        "epochs": 45,
        "seed": 0,
        "threads": 1,
    }
    model.trained = train_cached(
        "vae-official-recipe",
        model,
        lambda m: train_official_recipe(m, images, started, stop),
        {"batch_size": 128, "lr": 1e-3, "seed": 0, "beside vae-main": main_vae},
    )
    started.set()  # loaded from the cache: nothing to wait for
    return model


def trained_plain_autoencoder():
    """The VAE chapter's plain autoencoder: the main VAE's networks (same sizes and
    activation, matrix products in the same precision), trained without the noise and the
    KL term for 3 epochs, through the checkpoint cache. ``.trained`` holds the cache
    record."""
    epochs, dtype = 3, fast_dtype()
    torch.manual_seed(0)
    model = Autoencoder(32, (512, 256), nn.SiLU)
    images = load_mnist("train")[0]
    model.trained = train_cached(
        "vae-plain-ae",
        model,
        lambda m: train_vae(
            m, images, epochs=epochs, terms=ae_terms, dtype=dtype, desc="autoencoder"
        ),
        {
            "batch_size": 256,
            "lr": 4e-3,
            "kl_warmup": 0.3,
            "dtype": str(dtype),
            "epochs": epochs,
            "seed": 0,
        },
    )
    return model
