"""Denoising diffusion probabilistic models (DDPM) on MNIST.

The chapter "Diffusion models (DDPM)" writes these out and explains them (a
test keeps the copies identical); its trained models are ``vaecourse.zoo``'s
``ddpm-*`` and ``latent-ddpm-*``, and ``sample`` draws images from one.
Conventions: steps are numbered t = 1, ..., T and every per-step array has T +
1 entries so that index t is step t (entry 0 is step 0: beta = 0, alpha_bar =
1). Images are scaled from [0, 1] to [-1, 1] for the diffusion and back for
display.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.data import binarize_static
from vaecourse.train import fit


def check_betas(betas: torch.Tensor) -> torch.Tensor:
    """Return ``betas`` if it is a valid schedule (1-D, entry 0 equal to 0,
    every other entry in (0, 1)); otherwise raise a ValueError that says what
    is wrong."""
    if betas.ndim != 1 or len(betas) < 2:
        raise ValueError(
            "betas must be 1-D with T + 1 >= 2 entries, got shape "
            f"{tuple(betas.shape)}"
        )
    if betas[0] != 0:
        raise ValueError(
            f"betas[0] stands for step 0 and must be 0, got {betas[0]}"
        )
    if not ((betas[1:] > 0) & (betas[1:] < 1)).all():
        raise ValueError(
            "every beta_t for t >= 1 must lie strictly between 0 and 1"
        )
    return betas


def linear_schedule(
    T: int, beta_1: float = 1e-4, beta_T: float = 0.02
) -> torch.Tensor:
    """Ho et al.'s schedule: beta_t rises linearly from ``beta_1`` to
    ``beta_T`` (their values for T = 1000), both scaled by 1000 / T so that a
    shorter chain destroys the image as completely. Returns float64 betas of
    shape (T + 1,), betas[0] = 0."""
    if T < 2:
        raise ValueError(f"a diffusion needs T >= 2 steps, got T = {T}")
    scale = 1000 / T
    if not 0 < scale * beta_1 <= scale * beta_T < 1:
        raise ValueError(
            f"with T = {T} the scaled betas {scale * beta_1:g}.."
            f"{scale * beta_T:g} leave (0, 1): use more steps or smaller betas"
        )
    betas = torch.linspace(
        scale * beta_1, scale * beta_T, T, dtype=torch.float64
    )
    return check_betas(torch.cat([torch.zeros(1, dtype=torch.float64), betas]))


def cosine_schedule(
    T: int, s: float = 0.008, max_beta: float = 0.999
) -> torch.Tensor:
    """Nichol and Dhariwal's schedule: alpha_bar_t = f(t) / f(0) with f(t) =
    cos²((t / T + s) / (1 + s) · π / 2), so the signal fades slowly at both
    ends; beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, capped at ``max_beta``
    (the last step would otherwise be exactly 1). Returns float64 betas of
    shape (T + 1,)."""
    if T < 2:
        raise ValueError(f"a diffusion needs T >= 2 steps, got T = {T}")
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
    return check_betas(torch.cat([torch.zeros(1, dtype=torch.float64), betas]))


SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule}


def alpha_bars(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s): the share of the signal's
    variance left after t steps (entry 0 is 1)."""
    return torch.cumprod(1 - check_betas(betas), dim=0)


def q_step(x_prev, t, betas, noise):
    """One forward step: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t)
    noise."""
    return (1 - betas[t]).sqrt() * x_prev + betas[t].sqrt() * noise


def q_sample(x0, t, alpha_bar, noise):
    """The forward process in closed form: x_t = sqrt(alpha_bar_t) x0 + sqrt(1
    - alpha_bar_t) noise, for a batch x0 of shape (B, ...) and steps t (B,)."""
    a = alpha_bar[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def posterior_mean_variance(x0, x_t, t, betas):
    """Mean and variance of q(x_{t-1} | x_t, x0), the forward process run
    backwards when x0 is known (t >= 1; at t = 1 the variance is 0):

    mean = sqrt(ab_{t-1}) beta_t / (1 - ab_t) x0 + sqrt(alpha_t) (1 - ab_{t-1})
    / (1 - ab_t) x_t, variance = (1 - ab_{t-1}) / (1 - ab_t) beta_t (ab =
    alpha_bar). ``t`` is a tensor of shape (B,); the variance has shape (B, 1,
    ...).
    """
    ab = alpha_bars(betas).to(x0.dtype)
    shape = (-1, *([1] * (x0.ndim - 1)))
    beta, ab_t, ab_prev = (
        a.view(shape) for a in (betas.to(x0.dtype)[t], ab[t], ab[t - 1])
    )
    mean = (
        ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x_t
    ) / (1 - ab_t)
    return mean, (1 - ab_prev) / (1 - ab_t) * beta


def elbo_weight(t, betas):
    """lambda_t such that, for t >= 2, KL(q(x_{t-1} | x_t, x0) ‖
    p_theta(x_{t-1} | x_t)) = lambda_t ‖eps - eps_theta‖² when p_theta has the
    posterior's variance and the mean mu_theta = (x_t - beta_t / sqrt(1 - ab_t)
    eps_theta) / sqrt(alpha_t): lambda_t = beta_t² / (2 var_t alpha_t (1 -
    ab_t)), var_t the posterior variance."""
    if (torch.as_tensor(t) < 2).any():
        raise ValueError(
            "the weight is finite only for t >= 2 (at t = 1 var_t = 0)"
        )
    ab = alpha_bars(betas)
    var = (1 - ab[t - 1]) / (1 - ab[t]) * betas[t]
    return betas[t] ** 2 / (2 * var * (1 - betas[t]) * (1 - ab[t]))


def time_embedding(t, dim):
    """Sinusoidal features of the step t (as in the Transformer): sines and
    cosines of t at ``dim // 2`` frequencies, so the network can tell nearby
    steps apart."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(1000.0) * torch.arange(half, device=t.device) / half
    )
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class Denoiser(nn.Module):
    """eps_theta(x_t, t): predicts the noise in x_t. A residual MLP over the
    ``dim`` numbers of x_t (the 784 pixels, or a latent code); an embedding of
    t is added before every block, so one network serves every step."""

    def __init__(self, hidden=1024, blocks=3, time_dim=128, dim=784):
        super().__init__()
        self.time_dim = time_dim
        self.time = nn.Sequential(
            nn.Linear(time_dim, 256), nn.SiLU(), nn.Linear(256, hidden)
        )
        self.inp = nn.Linear(dim, hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.layers = nn.ModuleList(
            nn.Linear(hidden, hidden) for _ in range(blocks)
        )
        self.out = nn.Linear(hidden, dim)

    def forward(self, x_t, t):
        e = self.time(time_embedding(t, self.time_dim))
        h = self.inp(x_t.flatten(1))
        for norm, layer in zip(self.norms, self.layers, strict=True):
            h = h + layer(F.silu(norm(h + e)))
        return self.out(F.silu(h)).view_as(x_t)


class DDPM(nn.Module):
    """A denoiser together with its noise schedule (kept as buffers, so a
    checkpoint carries the schedule it was trained with)."""

    def __init__(self, schedule="cosine", T=200, **denoiser):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {sorted(SCHEDULES)}, "
                f"got {schedule!r}"
            )
        self.schedule, self.T = schedule, T
        betas = SCHEDULES[schedule](T)
        self.register_buffer("betas", betas.float())
        self.register_buffer("alpha_bar", alpha_bars(betas).float())
        self.denoiser = Denoiser(**denoiser)

    def extra_repr(self):
        return f"schedule={self.schedule!r}, T={self.T}"

    def forward(self, x_t, t):
        return self.denoiser(x_t, t)


def ddpm_loss(model, x0):
    """Ho et al.'s simple loss, per image: draw t uniformly from 1..T and eps ~
    N(0, I), form x_t in closed form and return the mean over pixels of (eps -
    eps_theta)²."""
    t = torch.randint(1, model.T + 1, (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    x_t = q_sample(x0, t, model.alpha_bar, noise)
    return ((noise - model(x_t, t)) ** 2).flatten(1).mean(1)


def train_ddpm(
    model,
    images,
    *,
    epochs,
    batch_size=128,
    lr=2e-3,
    seed=0,
    desc="DDPM",
    progress=True,
):
    """Train on grey ``images`` in [0, 1] (scaled to [-1, 1]) with the simple
    loss; the learning rate warms up to ``lr`` over 5% of the steps and decays
    to almost 0 (``fit``'s one-cycle schedule). Returns ``fit``'s history."""
    return fit(
        model,
        lambda model, batch: {
            "loss": ddpm_loss(model, 2 * batch[0] - 1).mean()
        },
        (images,),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup=0.05,
        seed=seed,
        desc=desc,
        progress=progress,
    )


def p_mean(model, x_t, t, clip=True):
    """Mean of p_theta(x_{t-1} | x_t): the posterior mean with x0 replaced by
    the model's estimate x0_hat = (x_t - sqrt(1 - ab_t) eps_theta) /
    sqrt(ab_t). Without ``clip`` this equals (x_t - beta_t / sqrt(1 - ab_t)
    eps_theta) / sqrt(alpha_t); with it, x0_hat is first clipped to the data
    range [-1, 1]."""
    a = model.alpha_bar[t].view(-1, *([1] * (x_t.ndim - 1)))
    x0_hat = (x_t - (1 - a).sqrt() * model(x_t, t)) / a.sqrt()
    if clip:
        x0_hat = x0_hat.clamp(-1, 1)
    return posterior_mean_variance(x0_hat, x_t, t, model.betas)[0]


def sample(model, n, seed=0, clip=True, keep=(), shape=(1, 28, 28)):
    """Ancestral sampling: x_T ~ N(0, I), then x_{t-1} ~ N(mean_theta, var_t)
    for t = T, ..., 1 with the posterior variance var_t (0 at t = 1). Returns n
    samples of shape (n, *shape) mapped from the data range [-1, 1] to [0, 1]
    (images); with ``keep``, also a dict {t: x_t in [0, 1]}."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # every draw on the CPU generator, then moved: the same noise on any device
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=generator).to(device)
    kept = {model.T: x} if model.T in keep else {}
    with torch.no_grad():
        for step in range(model.T, 0, -1):
            t = torch.full((n,), step, device=device)
            mean = p_mean(model, x, t, clip)
            var = posterior_mean_variance(x, x, t, model.betas)[1]
            noise = torch.randn(x.shape, generator=generator).to(device)
            x = mean + var.sqrt() * noise
            if step - 1 in keep:
                kept[step - 1] = x
    model.train(was_training)
    images = ((x.cpu() + 1) / 2).clamp(0, 1)
    if keep:
        return images, {
            t: ((v.cpu() + 1) / 2).clamp(0, 1) for t, v in kept.items()
        }
    return images


# Latent diffusion: the same DDPM over the 32 numbers of the VAE chapter's
# codes instead of the 784 pixels. Codes are scaled into [-1, 1], the pixels'
# range, so the sampler and its clipping apply unchanged.
T_STEPS = 200  # the chapter's number of diffusion steps
LATENT_HIDDEN = 256  # the width of the latent DDPM's denoiser


class LatentDDPM(nn.Module):
    """A DDPM over a VAE's posterior means, with the per-dimension ``center``
    and ``scale`` that map the codes into [-1, 1] (buffers, saved with the
    weights)."""

    def __init__(
        self, schedule="linear", T=T_STEPS, dim=32, hidden=LATENT_HIDDEN
    ):
        super().__init__()
        self.ddpm = DDPM(schedule, T=T, hidden=hidden, dim=dim)
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit_scaling(self, codes):
        """Centre each dimension and divide by its largest |value|: codes ->
        [-1, 1]."""
        # on the model's device, so the buffers set here stay there
        codes = codes.to(self.center.device)
        self.center = codes.mean(0)
        self.scale = (codes - self.center).abs().amax(0).clamp_min(1e-8)
        return (codes - self.center) / self.scale


def vae_codes(vae, images, batch_size=10_000):
    """Posterior means of ``images`` binarized once (seed 0), as the VAE saw
    binary ones."""
    device = next(vae.parameters()).device
    codes = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            # binarized on the CPU (seeded), encoded on the VAE's device
            x = binarize_static(images[i : i + batch_size], seed=0)
            codes.append(vae.encode(x.to(device))[0].cpu())
    return torch.cat(codes)


def decode_latent_samples(model, decoder, n, seed=0):
    """n images: ancestral sampling of codes in [-1, 1], unscaled, decoded to
    the Bernoulli decoder's pixel probabilities, shape (n, 1, 28, 28)."""
    s = 2 * sample(model.ddpm, n, seed=seed, shape=(len(model.center),)) - 1
    s = s.to(model.center.device)
    with torch.no_grad():
        return (
            torch.sigmoid(decoder(s * model.scale + model.center))
            .view(n, 1, 28, 28)
            .cpu()
        )


def train_latent_ddpm(
    model, codes, *, epochs, batch_size=256, lr=2e-3, desc="latent"
):
    """Scale the ``codes`` into [-1, 1] (the model keeps the scaling) and train
    the model's DDPM on them; returns ``fit``'s history."""
    scaled = model.fit_scaling(codes)
    # train_ddpm maps [0, 1] to [-1, 1]: hand it (scaled + 1) / 2
    return train_ddpm(
        model.ddpm,
        (scaled + 1) / 2,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        desc=desc,
    )
