"""The chapter "How far a VAE goes on a CPU": the importance-weighted bound as
an objective, the VampPrior, a second stochastic layer, and the measurements
that go with them.

The chapter writes these out and explains them (a test keeps the copies
identical). All quantities are in nats per image (natural logarithm, summed
over the 784 pixels), averaged over images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.chapters.autoencoders import mlp
from vaecourse.data import binarize_dynamic
from vaecourse.prob import LOG_2PI, iw_bound, log_bernoulli, log_normal
from vaecourse.train import fast_dtype, fit, total_steps


def log_mixture(z, mu, logvar):
    """log (1/K) Σ_k N(z; mu_k, diag exp(logvar_k)), summed over the last
    dimension of ``z`` (shape (..., d)); mu and logvar have shape (K, d).

    The squared distances to all K components are three matrix products, in
    float32 even under autocast (they cancel: bfloat16 would lose nats).
    """
    with torch.autocast(z.device.type, enabled=False):
        z, mu, logvar = z.float(), mu.float(), logvar.float()
        inv_var = torch.exp(-logvar)
        flat = z.reshape(-1, z.shape[-1])
        squared = (
            flat**2 @ inv_var.T
            - 2 * flat @ (mu * inv_var).T
            + (mu**2 * inv_var).sum(-1)
        )
        log_k = -0.5 * (squared + logvar.sum(-1) + z.shape[-1] * LOG_2PI)
        # log Σ_j exp(log_k_j) written out: a component 80 nats below the
        # nearest adds less than float32 can hold, and clamping there spares
        # the CPU's slow exp of very negative numbers (same result, faster)
        top = log_k.amax(-1, keepdim=True)
        total = (log_k - top).clamp(min=-80).exp().sum(-1).log()
        log_p = total + top.squeeze(-1) - math.log(len(mu))
    return log_p.reshape(z.shape[:-1])


def gaussian(net, *inputs):
    """Mean and log-variance from a network's output, in float32."""
    return (
        net(torch.cat(inputs, -1) if len(inputs) > 1 else inputs[0])
        .float()
        .chunk(2, -1)
    )


class DeepVAE(nn.Module):
    """A VAE with one or two stochastic layers and a standard normal or a
    VampPrior prior, all networks MLPs with ``hidden`` units per layer.

    One layer, ``latent=(d,)``: q(z|x), p(x|z). Two layers, ``latent=(d1,
    d2)`` (Tomczak & Welling's hierarchy): q(z2|x) q(z1|x, z2) for inference,
    p(z2) p(z1|z2) p(x|z1, z2) for generation. The prior is on the top layer:
    N(0, I), or the VampPrior (1/K) Σ_k q(z_top | u_k) with K learned
    pseudo-inputs u_k.
    """

    def __init__(
        self, latent=(64,), hidden=512, prior="normal", pseudo_inputs=500
    ):
        super().__init__()
        if prior not in ("normal", "vamp") or len(latent) not in (1, 2):
            raise ValueError(
                "prior must be 'normal' or 'vamp' and latent one or two sizes,"
                f" got prior={prior!r}, latent={latent}"
            )
        self.latent, self.prior = tuple(latent), prior
        h, top = hidden, latent[-1]
        self.q_top = mlp([784, h, h, 2 * top])  # q(z_top | x)
        if len(latent) == 2:
            d1 = latent[0]
            self.x_features = mlp([784, h, h])
            self.q_z1 = mlp([h + top, h, 2 * d1])  # q(z1 | x, z2)
            self.p_z1 = mlp([top, h, h, 2 * d1])  # p(z1 | z2)
        self.decoder = mlp([sum(latent), h, h, 784])  # p(x | z1[, z2])
        if prior == "vamp":
            # pseudo-inputs: grey images, kept in [0, 1] by a hardtanh
            self.pseudo = nn.Parameter(
                0.5 + 0.01 * torch.randn(pseudo_inputs, 784)
            )

    def log_prior(self, z):
        """log p(z_top), summed over its dimensions."""
        if self.prior == "normal":
            return -0.5 * (LOG_2PI + z**2).sum(-1)
        u = F.hardtanh(self.pseudo, 0.0, 1.0)
        return log_mixture(z, *gaussian(self.q_top, u))

    def log_weights(self, x, samples, beta=1.0, dreg=False):
        """log w = log p(x, z) - log q(z|x) for ``samples`` draws z ~ q(z|x):
        shape (samples, batch); and the KL terms per layer, log q - log p of
        each draw (a list, bottom layer first), whose sum the weights subtract,
        multiplied by ``beta`` (the KL warm-up; beta = 1 gives the true log
        weights).

        ``dreg`` (one layer only) leaves the values as they are and changes
        the encoder's gradient of the bound into Tucker et al.'s doubly
        reparameterized one: log q is computed with the encoder's outputs
        detached (no score term), and the gradient reaching each draw z_i is
        multiplied so that z_i's path derivative gets w̃_i² instead of w̃_i
        (w̃_i ((1 - beta) + beta w̃_i) during the KL warm-up)."""
        if dreg and len(self.latent) != 1:
            raise ValueError("dreg is for one stochastic layer only")
        x = x.flatten(1)
        mu, logvar = gaussian(self.q_top, x)
        eps = torch.randn(samples, *mu.shape, device=mu.device)
        top = mu + torch.exp(0.5 * logvar) * eps
        q_mu, q_logvar = (
            (mu.detach(), logvar.detach()) if dreg else (mu, logvar)
        )
        kls = [log_normal(top, q_mu, q_logvar).sum(-1) - self.log_prior(top)]
        codes = [top]
        if len(self.latent) == 2:
            features = self.x_features(x).expand(samples, -1, -1)
            mu1, logvar1 = gaussian(
                self.q_z1, features, top.to(features.dtype)
            )
            z1 = mu1 + torch.exp(0.5 * logvar1) * torch.randn_like(mu1)
            p_mu1, p_logvar1 = gaussian(self.p_z1, top)
            kls.insert(
                0,
                log_normal(z1, mu1, logvar1).sum(-1)
                - log_normal(z1, p_mu1, p_logvar1).sum(-1),
            )
            codes.insert(0, z1)
        logits = self.decoder(torch.cat(codes, -1)).float()
        log_px_z = log_bernoulli(x, logits).sum(-1)
        log_w = log_px_z - beta * sum(kls)
        if dreg and top.requires_grad:
            # the bound's gradient reaches log w_i with weight w̃_i; the hook
            # multiplies what flows on into z_i by (1 - beta) + beta w̃_i (the
            # score term that log q dropped carries the factor beta)
            w_tilde = torch.softmax(log_w.detach(), 0).unsqueeze(-1)
            factor = (1 - beta) + beta * w_tilde
            top.register_hook(lambda grad: grad * factor)
        return log_w, kls


def iwae_loss(model, x, samples, beta=1.0, dreg=False):
    """The negative importance-weighted bound -log (1/k) Σ w_i per image
    (k = ``samples``; k = 1 gives the negative ELBO), averaged over the
    batch; with ``dreg``, the same value with the DReG gradient."""
    log_w, _ = model.log_weights(x, samples, beta, dreg)
    return -iw_bound(log_w, dim=0).mean()


def free_bits_loss(model, x, free_bits, beta=1.0):
    """The negative ELBO with Kingma et al.'s free bits, one group per
    stochastic layer: the KL term of a layer of d units, averaged over the
    batch, counts as max(λ d, KL) with λ = ``free_bits`` nats per unit, so
    below the floor it adds nothing to the gradient."""
    log_w, kls = model.log_weights(x, 1, beta)
    reconstruction = (log_w + beta * sum(kls)).mean()  # E_q log p(x|z)
    floors = [free_bits * d for d in model.latent]  # bottom layer first
    kl = sum(
        torch.clamp(k.mean(), min=f) for k, f in zip(kls, floors, strict=True)
    )
    return beta * kl - reconstruction


def train_deep_vae(
    model,
    images,
    *,
    samples,
    epochs,
    batch_size=256,
    lr=2e-3,
    kl_warmup=0.3,
    free_bits=0.0,
    dreg=False,
    seed=0,
    desc="VAE",
):
    """Minimise ``iwae_loss`` with ``samples`` draws per image on dynamically
    binarized ``images``, with the book's recipe: a KL weight warmed up from 0
    to 1 over the first ``kl_warmup`` fraction of the steps (0: none), Adam
    with a one-cycle learning rate, matrix products in bfloat16 where the CPU
    has them; with ``free_bits`` > 0 (and k = 1) ``free_bits_loss`` instead,
    with ``dreg`` the DReG gradient. Returns ``fit``'s history."""
    if free_bits and (samples != 1 or dreg):
        raise ValueError(
            "free bits are for the ELBO: samples=1 and dreg=False, got "
            f"samples={samples}, dreg={dreg}"
        )
    warmup_steps = kl_warmup * total_steps(len(images), batch_size, epochs)
    dtype = fast_dtype()
    step = 0

    def loss_fn(model, batch):
        nonlocal step
        beta = min(1.0, step / warmup_steps) if warmup_steps else 1.0
        step += 1
        x = binarize_dynamic(batch[0])
        with torch.autocast(
            x.device.type, dtype=dtype, enabled=dtype != torch.float32
        ):
            if free_bits:
                loss = free_bits_loss(model, x, free_bits, beta)
            else:
                loss = iwae_loss(model, x, samples, beta, dreg)
        return {"loss": loss, "kl_weight": torch.tensor(beta)}

    return fit(
        model,
        loss_fn,
        (images,),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup=0.02,
        seed=seed,
        desc=desc,
    )


def nll(model, x, samples=1000, batch_size=100, chunk=50, seed=0):
    """The importance-weighted estimate of -log p(x) of each binary image,
    in nats, with ``samples`` draws from q(z|x), in float32; seeded. As the
    VAE chapter's ``iw_nll``, for any model with ``log_weights``."""
    x = x.flatten(1)
    if x.shape[1] != 784 or not ((x == 0) | (x == 1)).all():
        raise ValueError(
            "nll needs binary images of 784 pixels, shape (N, 784), got "
            f"shape {tuple(x.shape)}; binarize grey images first "
            "(binarize_static)"
        )
    was_training = model.training
    model.eval()
    out = []
    # an evaluation: no graph; the seed reseeds every generator, restored after
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        try:
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size]
                log_w = torch.cat(
                    [
                        model.log_weights(xb, min(chunk, samples - j))[0]
                        for j in range(0, samples, chunk)
                    ]
                )
                out.append(-iw_bound(log_w.double(), dim=0))
        finally:
            model.train(was_training)
    return torch.cat(out)


def sample(model, n, seed=0):
    """``n`` draws from the model: top codes z ~ p(z_top) (for the VampPrior,
    a pseudo-input chosen at random, then its posterior), the first layer's
    z1 ~ p(z1|z2), decoded to pixel probabilities. Returns (images of shape
    (n, 784), top codes)."""
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        d = model.latent[-1]
        eps = torch.randn(n, d, generator=gen).to(device)
        if model.prior == "normal":
            top = eps
        else:
            k = torch.randint(len(model.pseudo), (n,), generator=gen).to(
                device
            )
            mu, logvar = gaussian(
                model.q_top, F.hardtanh(model.pseudo[k], 0.0, 1.0)
            )
            top = mu + torch.exp(0.5 * logvar) * eps
        codes = [top]
        if len(model.latent) == 2:
            mu1, logvar1 = gaussian(model.p_z1, top)
            noise = torch.randn(mu1.shape, generator=gen).to(device)
            codes.insert(0, mu1 + torch.exp(0.5 * logvar1) * noise)
        return torch.sigmoid(model.decoder(torch.cat(codes, -1))), top


def posterior_means(model, x, draws=10):
    """E_q[z_l | x] for each stochastic layer, bottom first, each (batch, d_l):
    the top layer's mean is the encoder's output; the first layer's, which
    depends on z2, is averaged over ``draws`` samples of z2."""
    with torch.no_grad():
        x = x.flatten(1)
        mu, logvar = gaussian(model.q_top, x)
        if len(model.latent) == 1:
            return [mu]
        eps = torch.randn(draws, *mu.shape, device=mu.device)
        top = mu + torch.exp(0.5 * logvar) * eps
        features = model.x_features(x).expand(draws, -1, -1)
        return [gaussian(model.q_z1, features, top)[0].mean(0), mu]


def active_units(means, threshold=0.01):
    """Burda et al.'s test of each latent unit u: active when Cov_x(E_q[u]),
    the variance over images of its posterior mean, exceeds ``threshold``.
    A unit whose posterior mean does not move with x carries no
    information about x."""
    return means.var(0) > threshold


def gradient_snr(model, parts, x, samples, repeats=50, seed=0, dreg=False):
    """Rainforth et al.'s signal-to-noise ratio of the gradient of the
    k-sample bound on the images ``x``: for each parameter, |mean| / standard
    deviation over ``repeats`` independent estimates (with ``dreg``, of the
    DReG gradient). ``parts`` maps a name to the model's modules by their
    attribute names (``{"encoder": ["q_top"]}``); returns the median over each
    part's parameters."""
    params = {
        name: [p for m in modules for p in getattr(model, m).parameters()]
        for name, modules in parts.items()
    }
    grads = {name: [] for name in parts}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(repeats):
            model.zero_grad()
            iwae_loss(model, x, samples, dreg=dreg).backward()
            for name, ps in params.items():
                grads[name].append(torch.cat([p.grad.flatten() for p in ps]))
    model.zero_grad()
    out = {}
    for name, g in grads.items():
        g = torch.stack(g)
        out[name] = float((g.mean(0).abs() / g.std(0)).nanmedian())
    return out
