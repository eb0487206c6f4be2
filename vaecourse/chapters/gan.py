"""The book's generative adversarial network: losses, models, training and
sampling.

The chapter "Generative adversarial networks" writes these out and explains
them (a test keeps the copies identical); its trained models are
``vaecourse.zoo``'s ``gan-*``, and ``sample`` draws images from one. Images
live in [-1, 1] inside the GAN (the generator ends with tanh) and in [0, 1]
everywhere else in the book.
"""

from __future__ import annotations

import time
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.chapters.autoencoders import mlp
from vaecourse.train import quick_steps


def discriminator_loss(real_logits, fake_logits):
    """-[log D(x) + log(1 - D(G(z)))], averaged: the discriminator's side of
    the game, written with logits (D = sigmoid(logit)) so that it never takes
    log(0)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits, saturating=False):
    """The generator's loss on D's logits for generated images.

    saturating=True:  log(1 - D(G(z))), the minimax game's own term (minimised
    by G); saturating=False: -log D(G(z)), the non-saturating loss used in
    practice. Both push D(G(z)) up; they differ in how hard they push when
    D(G(z)) is near 0.
    """
    if saturating:
        return -F.softplus(fake_logits).mean()
    return F.softplus(-fake_logits).mean()


def optimal_discriminator(p_data, p_g):
    """D*(x) = p_data(x) / (p_data(x) + p_g(x)): the best discriminator against
    a fixed generator, from the two densities evaluated at the same points."""
    if (p_data < 0).any() or (p_g < 0).any():
        raise ValueError(
            "densities must be >= 0; pass p_data(x) and p_g(x), not logs"
        )
    total = p_data + p_g
    if (total <= 0).any():
        raise ValueError("p_data(x) + p_g(x) must be > 0 at every point given")
    return p_data / total


class GAN(nn.Module):
    """A generator G: z -> image in [-1, 1] (tanh) and a discriminator D: image
    -> logit of "real", both MLPs. ``snapshots`` keeps G's images for a fixed
    batch of z at points during training (stored as bytes), so the chapter can
    show how training went."""

    def __init__(
        self, latent_dim=64, hidden=(128, 256), n_snapshots=8, n_shown=100
    ):
        super().__init__()
        self.latent_dim = latent_dim
        leaky = partial(nn.LeakyReLU, 0.2)
        self.generator = mlp([latent_dim, *hidden, 784], leaky)
        self.discriminator = mlp([784, *reversed(hidden), 1], leaky)
        self.register_buffer(
            "snapshots",
            torch.zeros(n_snapshots, n_shown, 1, 28, 28, dtype=torch.uint8),
        )
        self.register_buffer(
            "snapshot_steps", torch.zeros(n_snapshots, dtype=torch.long)
        )

    def generate(self, z):
        """Images in [-1, 1], shape (batch, 1, 28, 28)."""
        return torch.tanh(self.generator(z)).view(-1, 1, 28, 28)

    def discriminate(self, x):
        """The logit of D(x) = P(x is real), shape (batch,)."""
        return self.discriminator(x.flatten(1)).squeeze(1)


def train_gan(
    model,
    images,
    *,
    steps,
    batch_size=64,
    lr_d=2e-4,
    lr_g=2e-4,
    saturating=False,
    log_every=50,
    seed=0,
):
    """Alternate one discriminator step and one generator step, ``steps``
    times, with Adam(betas=(0.5, 0.999)); return one history row per
    ``log_every`` steps (mean losses, mean D(x) and D(G(z)), elapsed seconds).
    Images in [0, 1] are mapped to [-1, 1]. In quick mode at most
    ``QUICK_BATCHES`` steps."""
    steps = quick_steps(steps)
    if steps < 1 or batch_size < 1:
        raise ValueError(
            f"steps and batch_size must be >= 1, got {steps}, {batch_size}"
        )
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt_d = torch.optim.Adam(
        model.discriminator.parameters(), lr_d, betas=(0.5, 0.999), fused=True
    )
    opt_g = torch.optim.Adam(
        model.generator.parameters(), lr_g, betas=(0.5, 0.999), fused=True
    )
    n_snap, n_shown = model.snapshots.shape[:2]
    # draws on the CPU generator, then moved: the same numbers on any device
    fixed_z = torch.randn(n_shown, model.latent_dim, generator=generator)
    fixed_z = fixed_z.to(device)
    snap_at = torch.linspace(0, steps, n_snap).round().long()
    model.snapshot_steps.copy_(snap_at)
    history, sums, start = [], {}, time.perf_counter()
    model.train()
    for step in range(steps + 1):
        for i in (snap_at == step).nonzero().flatten().tolist():
            with torch.no_grad():
                shown = (model.generate(fixed_z) + 1) / 2
            model.snapshots[i] = (shown * 255).round().to(torch.uint8)
        if step == steps:
            break
        index = torch.randint(len(images), (batch_size,), generator=generator)
        real = images[index].to(device) * 2 - 1
        z = torch.randn(batch_size, model.latent_dim, generator=generator)
        fake = model.generate(z.to(device))
        # discriminator step: fakes detached, so only D's weights get this
        # gradient
        real_logits = model.discriminate(real)
        fake_logits = model.discriminate(fake.detach())
        d_loss = discriminator_loss(real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # generator step: through the updated D
        fake_logits = model.discriminate(fake)
        g_loss = generator_loss(fake_logits, saturating)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        terms = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": torch.sigmoid(real_logits).mean(),
            "d_fake": torch.sigmoid(fake_logits).mean(),
        }
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            row = {"step": step + 1, **{k: v / n for k, v in sums.items()}}
            row["seconds"] = time.perf_counter() - start
            history.append(row)
            sums = {}
    model.eval()
    return history


def sample(model, n, seed=0):
    """``n`` generated images, shape (n, 1, 28, 28), in [0, 1]; seeded."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    z = torch.randn(
        n, model.latent_dim, generator=torch.Generator().manual_seed(seed)
    )
    device = next(model.parameters()).device
    with torch.no_grad():  # images to look at and to measure, not to train on
        return (model.generate(z.to(device)).cpu() + 1) / 2
