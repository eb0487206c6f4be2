"""The VQ-VAE (van den Oord et al. 2017): a discrete code, its quantizer and
its priors.

The chapter "The VQ-VAE" writes out the quantizer, the straight-through
gradient, the two codebook losses, the perplexity, the dead-code revival and
the model; this module holds the same code (a test keeps the copies identical)
plus the training loop and the priors over code indices. The trained models are
``vaecourse.zoo``'s ``vqvae-*``; ``sample`` draws images from one with a prior.

Shapes: images (B, 1, 28, 28) in [0, 1]; encoder outputs z_e and quantized
codes z_q (B, D, 7, 7); code indices (B, 7, 7) in 0..K-1; a codebook (K, D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.train import fit, total_steps


def quantize(z_e, codebook):
    """Replace every D-vector of z_e (B, D, H, W) by its nearest codebook row
    (K, D).

    Returns z_q (B, D, H, W) and the chosen indices (B, H, W). Nearest means
    the smallest squared Euclidean distance ||z - e_k||² = ||z||² - 2 z·e_k +
    ||e_k||².
    """
    b, d, h, w = z_e.shape
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # one row per position
    distances = (
        flat.pow(2).sum(1, keepdim=True)
        - 2 * flat @ codebook.T
        + codebook.pow(2).sum(1)
    )
    indices = distances.argmin(1)
    z_q = codebook[indices].view(b, h, w, d).permute(0, 3, 1, 2)
    return z_q, indices.view(b, h, w)


def straight_through(z_e, z_q):
    """z_q in the forward pass; in the backward pass the gradient reaching z_q
    is passed to z_e unchanged (the quantizer is treated as the identity)."""
    return z_e + (z_q - z_e).detach()


def vq_losses(z_e, z_q):
    """The codebook loss ||sg[z_e] - e||² (moves the codes; the encoder gets
    nothing) and the commitment loss ||z_e - sg[e]||² (moves the encoder; the
    codes get nothing), each a mean over the B·D·H·W elements. The training
    loss weights the second by β."""
    codebook_loss = F.mse_loss(z_q, z_e.detach())
    commitment_loss = F.mse_loss(z_e, z_q.detach())
    return codebook_loss, commitment_loss


def perplexity(indices, num_codes):
    """exp(entropy) of the codes' empirical distribution, in 1..num_codes: the
    number of equally used codes that would give the same entropy."""
    # counted on the CPU, in float64 (which Apple's MPS lacks)
    counts = torch.bincount(indices.flatten().cpu(), minlength=num_codes)
    counts = counts.double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return entropy.exp().item()


def revive_dead_codes(codebook, counts, z_e, generator=None):
    """Move every code with ``counts == 0`` onto a randomly chosen encoder
    output.

    ``codebook`` is the (K, D) weight (changed in place), ``counts`` the (K,)
    uses over a recent window, ``z_e`` encoder outputs (B, D, H, W). Returns
    how many moved. A dead code receives no gradient from the codebook loss (no
    position chose it), so without this it does not move, and comes back only
    if encoder outputs drift near it.
    """
    dead = (counts == 0).nonzero().flatten()
    if len(dead) == 0:
        return 0
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
    pick = torch.randint(len(flat), (len(dead),), generator=generator)
    with torch.no_grad():  # a direct move, not a gradient step
        codebook[dead] = flat[pick].to(codebook.dtype)
    return len(dead)


class VQVAE(nn.Module):
    """A small convolutional VQ-VAE: 28x28 image -> 7x7 grid of D-vectors ->
    nearest of K codes -> 28x28 image of grey levels in [0, 1]."""

    def __init__(self, num_codes=128, code_dim=16, hidden=32):
        super().__init__()
        self.num_codes, self.code_dim = num_codes, code_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, hidden, 4, stride=2, padding=1),  # 14x14
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1),  # 7x7
            nn.ReLU(),
            nn.Conv2d(hidden, code_dim, 1),  # a D-vector per position
        )
        self.codebook = nn.Embedding(num_codes, code_dim)
        self.codebook.weight.data.uniform_(-1 / num_codes, 1 / num_codes)
        self.decoder = nn.Sequential(
            # 14x14
            nn.ConvTranspose2d(code_dim, hidden, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, 1, 4, stride=2, padding=1),  # 28x28
            nn.Sigmoid(),
        )

    def forward(self, x):
        """The reconstruction, z_e, z_q and the code indices of images x."""
        z_e = self.encoder(x)
        z_q, indices = quantize(z_e, self.codebook.weight)
        x_hat = self.decoder(straight_through(z_e, z_q))
        return x_hat, z_e, z_q, indices


def vqvae_loss(model, x, beta=0.25):
    """The VQ-VAE's loss terms on a batch: reconstruction MSE (mean per pixel),
    codebook loss and commitment loss; ``loss`` = reconstruction + codebook +
    beta * commitment."""
    x_hat, z_e, z_q, indices = model(x)
    reconstruction = F.mse_loss(x_hat, x)
    codebook_loss, commitment_loss = vq_losses(z_e, z_q)
    return {
        "loss": reconstruction + codebook_loss + beta * commitment_loss,
        "reconstruction": reconstruction,
        "codebook": codebook_loss,
        "commitment": commitment_loss,
        "indices": indices,
    }


def train_vqvae(
    model,
    images,
    *,
    epochs,
    batch_size=128,
    lr=2e-3,
    beta=0.25,
    revive_every=0,
    trace_every=25,
    seed=0,
    desc="VQ-VAE",
):
    """Train ``model`` on ``images`` with ``fit``; return its history, each
    epoch's row also holding a trace (every ``trace_every`` steps) of the batch
    perplexity and of the number of codes unused over the last ``trace_every``
    steps.

    With ``revive_every`` > 0, every ``revive_every`` steps the codes no
    position chose in those steps are moved onto random encoder outputs of the
    current batch (``revive_dead_codes``); 0 turns revival off.
    """
    if revive_every < 0 or trace_every < 1:
        raise ValueError(
            "revive_every must be >= 0 and trace_every >= 1, got "
            f"{revive_every}, {trace_every}"
        )
    # a short run (quick mode):
    steps = total_steps(len(images), batch_size, epochs)
    # still a few trace points
    trace_every = min(trace_every, max(1, steps // 4))
    revive_every = min(revive_every, max(1, steps // 2))  # and a revival
    k = model.num_codes
    state = {
        "step": 0,
        # uses since the last revival
        "window": torch.zeros(k, dtype=torch.long),
        # uses since the last trace point
        "trace": torch.zeros(k, dtype=torch.long),
        "points": [],
        "revived": 0,
    }
    generator = torch.Generator().manual_seed(seed + 1)

    def loss_fn(model, batch):
        (x,) = batch
        terms = vqvae_loss(model, x, beta)
        indices = terms.pop("indices")
        used = torch.bincount(indices.flatten(), minlength=k).cpu()
        state["window"] += used
        state["trace"] += used
        state["step"] += 1
        step = state["step"]
        if step % trace_every == 0:
            state["points"].append(
                {
                    "step": step,
                    "perplexity": perplexity(indices, k),
                    "unused": int((state["trace"] == 0).sum()),
                }
            )
            state["trace"].zero_()
        if revive_every and step % revive_every == 0:
            z_e = model.encoder(x).detach()
            state["revived"] += revive_dead_codes(
                model.codebook.weight, state["window"], z_e, generator
            )
            state["window"].zero_()
        terms["perplexity"] = torch.tensor(perplexity(indices, k))
        return terms

    history = fit(
        model,
        loss_fn,
        (images,),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        desc=desc,
    )
    history[-1]["trace"] = state["points"]
    history[-1]["revived"] = state["revived"]
    return history


@torch.no_grad()
def encode_indices(model, x, batch_size=2000):
    """The code indices (N, 7, 7) of images x, on the CPU."""
    device = next(model.parameters()).device
    out = []
    for b in x.split(batch_size):
        z_e = model.encoder(b.to(device))
        out.append(quantize(z_e, model.codebook.weight)[1].cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_indices(model, indices, batch_size=2000):
    """Images (N, 1, 28, 28) decoded from code indices (N, 7, 7), on the
    CPU."""
    device = next(model.parameters()).device
    out = []
    for b in indices.split(batch_size):
        z_q = model.codebook.weight[b.to(device)].permute(0, 3, 1, 2)
        out.append(model.decoder(z_q).cpu())
    return torch.cat(out)


def categorical_prior(indices, num_codes, alpha=0.5):
    """Log-probabilities (P, K) of an independent categorical per position,
    fitted by counting the training codes (N, P) with ``alpha`` added to every
    count, so a code never seen at a position keeps a small probability."""
    if alpha <= 0:
        raise ValueError(
            f"alpha must be > 0 (it keeps unseen codes possible): {alpha}"
        )
    indices = indices.flatten(1)
    counts = torch.stack(
        [torch.bincount(column, minlength=num_codes) for column in indices.T]
    ).double()
    counts += alpha
    return (counts / counts.sum(1, keepdim=True)).log()


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE)."""

    def __init__(self, n_in, n_out, mask):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.float())

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class CodePrior(nn.Module):
    """An autoregressive prior over a grid of P code indices in raster order,
    p(c) = prod_i p(c_i | c_<i), as a MADE (Germain et al. 2015): an MLP whose
    masks let the logits of position i see only positions before i."""

    def __init__(
        self, num_codes=128, positions=49, embed=8, hidden=256, seed=0
    ):
        super().__init__()
        self.num_codes, self.positions = num_codes, positions
        self.embed = nn.Embedding(num_codes, embed)
        gen = torch.Generator().manual_seed(seed)
        in_degree = torch.arange(positions).repeat_interleave(embed)  # 0..P-1
        hidden_degree = torch.randint(
            0, positions - 1, (hidden,), generator=gen
        )
        out_degree = torch.arange(positions).repeat_interleave(num_codes)
        # hidden unit of degree m sees inputs of positions <= m; output of
        # position i sees hidden units of degree < i: so position i depends on
        # positions < i only
        self.hidden = MaskedLinear(
            positions * embed,
            hidden,
            hidden_degree[:, None] >= in_degree[None, :],
        )
        self.out = MaskedLinear(
            hidden,
            positions * num_codes,
            out_degree[:, None] > hidden_degree[None, :],
        )

    def forward(self, indices):
        """Logits (N, P, K) of p(c_i | c_<i) for every position i of indices
        (N, P)."""
        h = self.embed(indices.flatten(1)).flatten(1)
        logits = self.out(F.relu(self.hidden(h)))
        return logits.view(len(indices), self.positions, self.num_codes)

    def nll(self, indices):
        """-log p(c) in nats for each grid of indices (N, P): a vector of N."""
        logits = self(indices)
        return F.cross_entropy(
            logits.transpose(1, 2), indices.flatten(1), reduction="none"
        ).sum(1)

    @torch.no_grad()
    def sample(self, n, generator=None):
        """n grids of indices (n, P), one position at a time in raster
        order."""
        # the codes and the draws stay on the CPU with the generator; the
        # network runs on its own device
        device = next(self.parameters()).device
        c = torch.zeros(n, self.positions, dtype=torch.long)
        for i in range(self.positions):
            probs = self(c.to(device))[:, i].softmax(-1).cpu()
            c[:, i] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return c


def train_prior(prior, indices, *, epochs, batch_size=256, lr=2e-3, seed=0):
    """Fit ``prior`` to training code grids (N, P) by maximum likelihood; the
    history's ``loss`` is -log p(c) in nats per grid."""

    def loss_fn(prior, batch):
        return {"loss": prior.nll(batch[0]).mean()}

    return fit(
        prior,
        loss_fn,
        (indices.flatten(1),),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        desc="prior",
    )


@torch.no_grad()
def sample(model, prior, n, seed=0):
    """n images (n, 1, 28, 28) in [0, 1]: code grids drawn from ``prior`` (a
    CodePrior, or the (P, K) log-probabilities of ``categorical_prior``), then
    decoded."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gen = torch.Generator().manual_seed(seed)
    side = math.isqrt(49)
    if isinstance(prior, CodePrior):
        codes = prior.sample(n, gen)
    else:
        # (P, K), on the CPU with the generator
        probs = prior.exp().float().cpu()
        codes = torch.multinomial(
            probs.repeat(n, 1), 1, replacement=True, generator=gen
        ).view(n, -1)
    return decode_indices(model, codes.view(n, side, side))
