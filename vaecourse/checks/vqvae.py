"""Checks for the exercises of the chapter "The VQ-VAE"."""

from __future__ import annotations

import torch

from vaecourse.chapters.vqvae import quantize, vq_losses
from vaecourse.checks import Exercise, Mistake

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape):
    return torch.randn(*shape, generator=_gen, dtype=f64)


def _simplex(*shape):
    """Random probability vectors along the last dimension."""
    w = torch.rand(*shape, generator=_gen, dtype=f64) + 0.05
    return w / w.sum(-1, keepdim=True)


# 1. The gradient of the codebook loss ---------------------------------------


def _codebook_gradient(z_e, codebook):
    """By autograd, through the chapter's quantize and vq_losses."""
    codebook = codebook.detach().clone().requires_grad_(True)
    z_q, _ = quantize(z_e.detach(), codebook)
    codebook_loss, _ = vq_losses(z_e.detach(), z_q)
    (grad,) = torch.autograd.grad(codebook_loss, codebook)
    return grad


def _assigned(z_e, codebook):
    """The cells as rows (N, D), the index each chose, and e - z per cell."""
    cells = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
    _, k = quantize(z_e, codebook)
    k = k.flatten()
    return cells, k, codebook[k] - cells


def _scattered(codebook, k, rows):
    """The rows added up per chosen entry: (K, D), zero for unchosen ones."""
    return torch.zeros_like(codebook).index_add_(0, k, rows)


def _gradient_sum(z_e, codebook):  # no mean: the sum of squares
    _, k, diff = _assigned(z_e, codebook)
    return 2 * _scattered(codebook, k, diff)


def _gradient_per_cell(z_e, codebook):  # mean over the cells, not over D too
    cells, k, diff = _assigned(z_e, codebook)
    return 2 * _scattered(codebook, k, diff) / len(cells)


def _gradient_per_entry(z_e, codebook):  # the mean over each entry's cells
    cells, k, diff = _assigned(z_e, codebook)
    counts = torch.bincount(k, minlength=len(codebook)).clamp(min=1)
    total = _scattered(codebook, k, diff)
    return 2 * total / counts[:, None] / z_e.shape[1]


def _gradient_every_entry(z_e, codebook):  # every entry pulled by every cell
    cells = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
    diff = codebook[:, None, :] - cells[None, :, :]  # (K, N, D)
    return 2 * diff.sum(1) / cells.numel()


_entries_on = _normal(6, 3)
_z_on = _entries_on[torch.tensor([0, 2, 2, 5, 1, 0, 5, 2])]  # 8 cells
_z_on = _z_on.T.reshape(1, 3, 2, 4)  # (B, D, H, W), each cell on an entry
# a codebook whose last 8 entries are far from every encoder output
_z_dead = _normal(2, 3, 3, 3)
_codebook_dead = torch.cat([_normal(4, 3), 50 + _normal(8, 3)])

codebook_gradient = Exercise(
    name="codebook_gradient",
    question="The gradient of the VQ-VAE's codebook loss with respect to the "
    "codebook, in closed form.",
    reference=_codebook_gradient,
    cases=[
        (_normal(2, 3, 2, 2), _normal(5, 3)),
        (_z_dead, _codebook_dead),
        (_z_on, _entries_on),
        (_normal(4, 16, 7, 7), _normal(128, 16)),
    ],
    labels=[
        "a batch of 2 grids of 2×2 cells, D = 3, K = 5 entries",
        "K = 12 entries, 8 of them far from every output (no cell chooses "
        "them)",
        "every cell exactly on an entry",
        "the chapter's shapes: 4 grids of 7×7 cells, D = 16, K = 128",
    ],
    mistakes=[
        Mistake(
            "the sign flipped",
            lambda z_e, codebook: -_codebook_gradient(z_e, codebook),
            "Check the sign: a gradient descent step e_k − lr · g must move "
            "an entry towards the outputs that chose it, so g points from "
            "them to e_k.",
        ),
        Mistake(
            "the 2 left out",
            lambda z_e, codebook: _codebook_gradient(z_e, codebook) / 2,
            "The derivative of (e − z)² with respect to e is 2 (e − z): you "
            "left out the 2.",
        ),
        Mistake(
            "the sum, not the mean",
            _gradient_sum,
            "The codebook loss is a mean over all B·D·H·W numbers, as "
            "F.mse_loss computes it: divide by their count.",
        ),
        Mistake(
            "the mean over the cells only",
            _gradient_per_cell,
            "Divide by the number of numbers B·D·H·W, not by the number of "
            "cells B·H·W: F.mse_loss averages over every coordinate of every "
            "cell.",
        ),
        Mistake(
            "the mean over each entry's cells",
            _gradient_per_entry,
            "You averaged over the cells that chose each entry: that is the "
            "direction of a k-means step, but the loss averages over all the "
            "cells, so an entry chosen more often gets a larger gradient.",
        ),
        Mistake(
            "every entry pulled by every cell",
            _gradient_every_entry,
            "A cell's term involves only the entry it chose: an entry that "
            "no cell chose gets no gradient at all (that is why dead codes do "
            "not move).",
        ),
    ],
    fallback="With k_i the entry that cell i chose, the gradient for e_k is "
    "2 Σ_{i: k_i = k} (e_k − z_i) / (B·D·H·W), and 0 for an entry no cell "
    "chose.",
)


# 2. The codebook as moving averages (the paper's appendix) -----------------


def _batch_stats(cells, indices, k):
    n = torch.bincount(indices, minlength=k).to(cells.dtype)
    total = torch.zeros(k, cells.shape[1], dtype=cells.dtype)
    return n, total.index_add_(0, indices, cells)


def _ema_state(counts, sums, cells, indices, decay):
    n, total = _batch_stats(cells, indices, len(counts))
    counts = decay * counts + (1 - decay) * n
    sums = decay * sums + (1 - decay) * total
    return counts, sums


def _ema_entries(counts, sums, cells, indices, decay):
    counts, sums = _ema_state(counts, sums, cells, indices, decay)
    return sums / counts[:, None]


def _ema_decay_swapped(counts, sums, cells, indices, decay):
    return _ema_entries(counts, sums, cells, indices, 1 - decay)


def _ema_batch_mean(counts, sums, cells, indices, decay):
    n, total = _batch_stats(cells, indices, len(counts))
    mean = total / n.clamp(min=1)[:, None]
    counts = decay * counts + (1 - decay) * n
    sums = decay * sums + (1 - decay) * mean
    return sums / counts[:, None]


def _ema_entries_from_batch(counts, sums, cells, indices, decay):
    n, total = _batch_stats(cells, indices, len(counts))
    return total / n[:, None]


def _ema_counts_kept(counts, sums, cells, indices, decay):
    _, new_sums = _ema_state(counts, sums, cells, indices, decay)
    return new_sums / counts[:, None]


def _ema_of_entries(counts, sums, cells, indices, decay):
    n, total = _batch_stats(cells, indices, len(counts))
    entries = sums / counts[:, None]
    chosen = n > 0
    mean = total[chosen] / n[chosen, None]
    entries[chosen] = decay * entries[chosen] + (1 - decay) * mean
    return entries


def _positive(*shape):
    return 1 + 9 * torch.rand(*shape, generator=_gen, dtype=f64)


_idx_all = torch.tensor([0, 1, 2, 3, 0, 1, 1, 3])
_idx_gap = torch.tensor([0, 0, 1, 3, 3, 3])  # entry 2 chosen by no cell

ema_entries = Exercise(
    name="ema_entries",
    question="One step of the VQ-VAE's moving-average codebook: the new "
    "entries from the running counts and sums and a batch of encoder "
    "outputs.",
    reference=_ema_entries,
    cases=[
        (
            _positive(5),
            _normal(5, 3),
            _normal(12, 3),
            torch.randint(0, 5, (12,), generator=_gen),
            0.9,
        ),
        (_positive(4), _normal(4, 2), _normal(8, 2), _idx_all, 0.0),
        (_positive(4), _normal(4, 2), _normal(6, 2), _idx_gap, 0.5),
        (
            _positive(128),
            _normal(128, 16),
            _normal(196, 16),
            torch.randint(0, 128, (196,), generator=_gen),
            0.99,
        ),
    ],
    labels=[
        "K = 5 entries, 12 cells of D = 3, decay 0.9",
        "decay 0 (no memory), every entry chosen by at least one cell",
        "entry 2 chosen by no cell, decay 0.5",
        "K = 128, D = 16, the 196 cells of 4 images, decay 0.99 (the paper's)",
    ],
    mistakes=[
        Mistake(
            "the decay on the batch",
            _ema_decay_swapped,
            "The decay γ weighs the running value, the batch gets 1 − γ: with "
            "γ = 0.99 each batch moves the averages by 1%.",
        ),
        Mistake(
            "the batch mean in the running sums",
            _ema_batch_mean,
            "Average the sum of the outputs that chose each entry, not their "
            "mean: the ratio of the two running averages then weighs every "
            "batch by how many cells chose the entry.",
        ),
        Mistake(
            "the entries from this batch alone",
            _ema_entries_from_batch,
            "The new entries are the ratio of the updated running sums and "
            "counts; the batch's own means forget the past (and are 0 / 0 "
            "for an entry no cell chose).",
        ),
        Mistake(
            "the counts not updated",
            _ema_counts_kept,
            "Update the counts with the same moving average as the sums (the "
            "batch's count of cells per entry), before dividing.",
        ),
        Mistake(
            "a moving average of the entries",
            _ema_of_entries,
            "You averaged the entries themselves, which weighs every batch "
            "alike however few cells chose an entry; keep moving averages of "
            "the counts and of the sums and take their ratio.",
        ),
    ],
    fallback="With n_k the number of cells that chose entry k and s_k the sum "
    "of those cells: counts ← γ counts + (1 − γ) n, sums ← γ sums + "
    "(1 − γ) s, entries = sums / counts.",
)


# 3. Sampling the independent prior by inverting its CDF --------------------


def _sample_codes(log_probs, u):
    cdf = log_probs.exp().cumsum(-1)  # (P, K)
    k = (cdf <= u[..., None]).sum(-1)  # entries whose cdf is passed
    return k.clamp(max=log_probs.shape[-1] - 1)


def _sample_codes_left(log_probs, u):
    cdf = log_probs.exp().cumsum(-1)
    k = (cdf < u[..., None]).sum(-1)
    return k.clamp(max=log_probs.shape[-1] - 1)


def _sample_codes_no_exp(log_probs, u):
    cdf = log_probs.cumsum(-1)
    k = (cdf <= u[..., None]).sum(-1)
    return k.clamp(max=log_probs.shape[-1] - 1)


def _sample_codes_positions(log_probs, u):
    cdf = log_probs.exp().cumsum(0)
    k = (cdf <= u[..., None]).sum(-1)
    return k.clamp(max=log_probs.shape[-1] - 1)


def _sample_codes_mode(log_probs, u):
    return log_probs.argmax(-1).expand(u.shape)


def _sample_codes_unclamped(log_probs, u):
    cdf = log_probs.exp().cumsum(-1)
    return (cdf <= u[..., None]).sum(-1)


# probabilities that sum to 1 - 1e-15, as rounding can leave them
_short = torch.tensor([[0.5, 0.5 - 1e-15]], dtype=f64).log()
_below_one = torch.tensor([[1 - 2.0**-53]], dtype=f64)  # the largest u < 1

sample_codes = Exercise(
    name="sample_codes",
    question="Draw code grids from the independent categorical prior by "
    "inverting its cumulative distribution, given uniform draws.",
    reference=_sample_codes,
    cases=[
        (_simplex(49, 8).log(), torch.rand(5, 49, generator=_gen, dtype=f64)),
        (
            _simplex(49, 128).log(),
            torch.rand(3, 49, generator=_gen, dtype=f64),
        ),
        (
            torch.tensor([[0.0, 0.5, 0.5]], dtype=f64).log(),
            torch.tensor([[0.0], [0.25], [0.5], [0.75], [0.9]], dtype=f64),
        ),
        (_short, _below_one),
    ],
    labels=[
        "5 grids of 49 positions, K = 8 entries",
        "3 grids of 49 positions, K = 128 (the chapter's codebook)",
        "one position with probabilities [0, 0.5, 0.5] and u = 0, 0.25, "
        "0.5, 0.75, 0.9",
        "probabilities [0.5, 0.5 − 10⁻¹⁵] (a rounding error) and "
        "u = 1 − 2⁻⁵³, the largest double below 1",
    ],
    mistakes=[
        Mistake(
            "an entry of probability 0 drawn at a tie",
            _sample_codes_left,
            "Where u equals a cumulative sum exactly (u = 0 with a first "
            "entry of probability 0), you draw an entry of probability 0: "
            "entry k is drawn when cdf(k − 1) ≤ u < cdf(k) "
            "(torch.searchsorted needs right=True).",
        ),
        Mistake(
            "the log-probabilities not exponentiated",
            _sample_codes_no_exp,
            "The cumulative sums are of probabilities: exponentiate the "
            "log-probabilities first.",
        ),
        Mistake(
            "cumulated over the positions",
            _sample_codes_positions,
            "Cumulate over the K entries of each position (the last "
            "dimension of log_probs), not over the positions.",
        ),
        Mistake(
            "the most probable entry",
            _sample_codes_mode,
            "That is the most probable entry of each position, whatever u: "
            "a sample must depend on the uniform draws.",
        ),
        Mistake(
            "no guard against rounding",
            _sample_codes_unclamped,
            "Rounding can leave the last cumulative sum just below 1 (in "
            "floating point, seven times 1/7 adds up to 0.9999999999999997), "
            "and then u can pass it: keep the index at most K − 1.",
        ),
    ],
    fallback="With cdf the cumulative sum of exp(log_probs) over the entries, "
    "the code at a position is the number of entries whose cdf is ≤ u, at "
    "most K − 1.",
)
