"""Checks for the exercises of the chapter "The VQ-VAE"."""

from __future__ import annotations

import torch

from vaecourse.chapters.vqvae import quantize
from vaecourse.checks import Exercise, Mistake

_gen = torch.Generator().manual_seed(0)
f64 = torch.float64


def _normal(*shape):
    return torch.randn(*shape, generator=_gen, dtype=f64)


def _simplex(*shape):
    """Random probability vectors along the last dimension."""
    w = torch.rand(*shape, generator=_gen, dtype=f64) + 0.05
    return w / w.sum(-1, keepdim=True)


# 1. Residual quantization: S codebooks, each for what the last left over ----


def _residual_quantize(z_e, codebooks):
    """By the chapter's quantize, one stage after the other."""
    residual, z_q, indices = z_e, torch.zeros_like(z_e), []
    for codebook in codebooks:
        q, k = quantize(residual, codebook)
        z_q = z_q + q
        residual = residual - q
        indices.append(k)
    return z_q, torch.stack(indices)


def _rq_variant(z_e, codebooks, *, step, result="sum", stack=0, pick=None):
    """Residual quantization with one slip: ``step(z_e, residual, q)`` gives
    the next stage's input; ``result`` is "sum", "last" (the last stage's
    entries) or "residual"; ``pick`` replaces quantize."""
    pick = quantize if pick is None else pick
    residual, z_q, q, indices = z_e, torch.zeros_like(z_e), None, []
    for codebook in codebooks:
        q, k = pick(residual, codebook)
        z_q = z_q + q
        residual = step(z_e, residual, q)
        indices.append(k)
    out = {"sum": z_q, "last": q, "residual": residual}[result]
    return out, torch.stack(indices, dim=stack)


def _subtract(z_e, residual, q):
    return residual - q


def _largest_inner_product(z_e, codebook):
    """The entry best aligned with each cell: ‖e‖² left out."""
    b, d, h, w = z_e.shape
    cells = z_e.permute(0, 2, 3, 1).reshape(-1, d)
    k = (cells @ codebook.T).argmax(1)
    return codebook[k].view(b, h, w, d).permute(0, 3, 1, 2), k.view(b, h, w)


def _quantize_no_permute(z_e, codebook):
    """quantize with the cells read as reshape(-1, D), without permute."""
    b, d, h, w = z_e.shape
    cells = z_e.reshape(-1, d)
    distances = ((cells[:, None, :] - codebook[None]) ** 2).sum(-1)
    k = distances.argmin(1)
    return codebook[k].reshape(b, d, h, w), k.view(b, h, w)


def _rq_same_input(z_e, codebooks):
    return _rq_variant(z_e, codebooks, step=lambda z, r, q: z)


def _rq_from_last(z_e, codebooks):
    return _rq_variant(z_e, codebooks, step=lambda z, r, q: z - q)


def _rq_last_only(z_e, codebooks):
    return _rq_variant(z_e, codebooks, step=_subtract, result="last")


def _rq_residual(z_e, codebooks):
    return _rq_variant(z_e, codebooks, step=_subtract, result="residual")


def _rq_added(z_e, codebooks):
    return _rq_variant(z_e, codebooks, step=lambda z, r, q: r + q)


def _rq_stage_second(z_e, codebooks):
    return _rq_variant(z_e, codebooks, step=_subtract, stack=1)


def _rq_inner_product(z_e, codebooks):
    return _rq_variant(
        z_e, codebooks, step=_subtract, pick=_largest_inner_product
    )


def _rq_no_permute(z_e, codebooks):
    return _rq_variant(
        z_e, codebooks, step=_subtract, pick=_quantize_no_permute
    )


def _shrinking(stages, k, d, first=1.0):
    """S codebooks of K entries, each at half the scale of the one before."""
    return torch.stack([first * 0.5**s * _normal(k, d) for s in range(stages)])


def _with_zero(codebooks):
    """The same codebooks with the zero vector as their first entry."""
    zero = torch.zeros(len(codebooks), 1, codebooks.shape[-1], dtype=f64)
    return torch.cat([zero, codebooks], 1)


_far_second = torch.stack([_normal(6, 2), 20 + _normal(6, 2)])

residual_quantize = Exercise(
    name="residual_quantize",
    question="Residual vector quantization: S codebooks, each quantizing "
    "what the stages before it left over; the sum of the chosen entries and "
    "the S indices per cell.",
    reference=_residual_quantize,
    cases=[
        (_normal(2, 3, 2, 3), _shrinking(3, 4, 3)),
        (_normal(3, 2, 2, 2), _normal(1, 5, 2)),
        (_normal(1, 2, 2, 2), _far_second),
        (_normal(2, 3, 2, 2), _with_zero(_shrinking(3, 4, 3))),
        (_normal(4, 16, 7, 7), _shrinking(3, 32, 16, first=0.5)),
    ],
    labels=[
        "2 grids of 2×3 cells, D = 3, S = 3 codebooks of K = 4 entries, each "
        "at half the scale of the one before",
        "one stage (S = 1): the chapter's quantize, 3 grids of 2×2 cells",
        "S = 2, the second codebook far from every residual (its stage makes "
        "the error larger)",
        "S = 3 codebooks that each hold the zero vector (entry 0)",
        "the chapter's grids: 4 grids of 7×7 cells, D = 16, S = 3 codebooks "
        "of K = 32 entries",
    ],
    mistakes=[
        Mistake(
            "every stage quantizes z_e",
            _rq_same_input,
            "Each stage after the first quantizes the residual, what the "
            "earlier stages left over (z_e minus the entries they chose), not "
            "z_e itself.",
        ),
        Mistake(
            "the residual of the last stage only",
            _rq_from_last,
            "Subtract every earlier stage's entry: after stage s the "
            "residual is z_e − (e_1 + … + e_s), so update residual = "
            "residual − q, not z_e − q.",
        ),
        Mistake(
            "the last stage's entries returned",
            _rq_last_only,
            "z_q is the sum of the entries chosen at all S stages, not the "
            "entry of the last stage alone.",
        ),
        Mistake(
            "the residual returned",
            _rq_residual,
            "That is what is left over, z_e − z_q: return the quantized "
            "grid, the sum of the chosen entries.",
        ),
        Mistake(
            "the entry added to the residual",
            _rq_added,
            "The residual is what the chosen entry leaves over: subtract it, "
            "residual − q.",
        ),
        Mistake(
            "the indices stacked along dimension 1",
            _rq_stage_second,
            "Stack the stages' indices along a new first dimension, shape "
            "(S, B, H, W): torch.stack(indices), not dim=1.",
        ),
        Mistake(
            "the largest inner product",
            _rq_inner_product,
            "Nearest means the smallest ‖r − e‖² = ‖r‖² − 2 r·e + ‖e‖²: the "
            "largest r·e alone leaves out ‖e‖², which differs between the "
            "entries (quantize does it right).",
        ),
        Mistake(
            "reshape without permute",
            _rq_no_permute,
            "z_e is (B, D, H, W): a cell's D numbers are along dim 1; permute "
            "to (B, H, W, D) before reshape(-1, D), as quantize does, and "
            "back after.",
        ),
    ],
    fallback="Check one stage on its own first: with S = 1 your function "
    "must give quantize(z_e, codebooks[0]), with the indices in a tensor of "
    "shape (1, B, H, W); then keep track of what is left over from stage to "
    "stage.",
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
_idx_last = torch.tensor([0, 0, 1, 2, 2, 2])  # the last entry, 3, by none

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
        (_positive(4), _normal(4, 2), _normal(6, 2), _idx_last, 0.5),
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
        "the last entry (3) chosen by no cell, decay 0.5",
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
    fallback="Compute the batch's n_k and s_k for all K entries first (an "
    "entry no cell chose has n_k = 0 and s_k = 0) and compare them with a "
    "loop over the cells; accumulate with index_add_: indexed assignment "
    "keeps only one of repeated indices.",
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


def _sample_codes_first_above(log_probs, u):
    cdf = log_probs.exp().cumsum(-1)
    return (cdf > u[..., None]).long().argmax(-1)  # 0 where no cdf > u


# probabilities that sum to 1 - 1e-15, as rounding can leave them; the last
# entry is the most probable one
_short = torch.tensor([[0.5 - 1e-15, 0.5]], dtype=f64).log()
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
        "probabilities [0.5 − 10⁻¹⁵, 0.5] (a rounding error) and "
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
            "floating point, seven times 1/7 adds up to 0.9999999999999998), "
            "and then u can pass it: keep the index at most K − 1.",
        ),
        Mistake(
            "argmax of cdf > u, 0 past the last sum",
            _sample_codes_first_above,
            "Where rounding leaves the last cumulative sum below u, no entry "
            "has cdf > u, and argmax of an all-False row returns 0, the first "
            "entry: return K − 1 there.",
        ),
    ],
    fallback="Work out one position by hand first: with probabilities "
    "[0.2, 0.5, 0.3], which entry should u = 0.1, 0.2, 0.65 and 0.9 give? "
    "Then compare u with the cumulative sums of every position at once.",
)
