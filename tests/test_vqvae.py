"""Tests of vaecourse.chapters.vqvae: the quantizer against a brute-force search, the
straight-through gradient, the two codebook losses against hand computations, the
perplexity's bounds, dead-code revival, training and the priors."""

from __future__ import annotations

import math

import pytest
import torch

from vaecourse.chapters.vqvae import (
    VQVAE,
    CodePrior,
    categorical_prior,
    decode_indices,
    encode_indices,
    perplexity,
    quantize,
    revive_dead_codes,
    sample,
    straight_through,
    train_prior,
    train_vqvae,
    vq_losses,
    vqvae_loss,
)


def test_quantize_picks_the_nearest_code_by_brute_force():
    gen = torch.Generator().manual_seed(0)
    z_e = torch.randn(3, 4, 5, 6, generator=gen)
    codebook = torch.randn(10, 4, generator=gen)
    z_q, indices = quantize(z_e, codebook)
    assert z_q.shape == z_e.shape and indices.shape == (3, 5, 6)
    for b in range(3):
        for i in range(5):
            for j in range(6):
                distances = [
                    (z_e[b, :, i, j] - e).pow(2).sum() for e in codebook
                ]
                k = int(torch.stack(distances).argmin())
                assert indices[b, i, j] == k
                assert torch.equal(z_q[b, :, i, j], codebook[k])


def test_quantize_on_a_hand_example():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    z_e = torch.tensor([[0.9, 0.6], [-1.2, 0.1]]).T.reshape(1, 2, 1, 2)
    z_q, indices = quantize(z_e, codebook)
    assert indices.flatten().tolist() == [
        1,
        2,
    ]  # (0.9, 0.6) -> (1, 1); (-1.2, 0.1) -> (-2, 0)
    assert torch.equal(z_q[0, :, 0, 1], torch.tensor([-2.0, 0.0]))


def test_straight_through_forward_is_z_q_and_backward_is_the_identity():
    gen = torch.Generator().manual_seed(1)
    z_e = torch.randn(2, 3, 4, 4, generator=gen, requires_grad=True)
    codebook = torch.randn(5, 3, generator=gen)
    z_q, _ = quantize(z_e, codebook)
    out = straight_through(z_e, z_q)
    assert torch.allclose(out, z_q)
    upstream = torch.randn(out.shape, generator=gen)
    (out * upstream).sum().backward()
    assert torch.equal(
        z_e.grad, upstream
    )  # exactly the gradient the decoder sent


def test_the_encoder_gets_the_decoders_gradient_in_a_model():
    torch.manual_seed(0)
    model = VQVAE(num_codes=8, code_dim=4, hidden=8)
    x = torch.rand(3, 1, 28, 28)
    z_e = model.encoder(x).detach().requires_grad_(True)
    z_q, _ = quantize(z_e, model.codebook.weight.detach())
    decoder_input = straight_through(z_e, z_q)
    decoder_input.retain_grad()
    ((model.decoder(decoder_input) - x) ** 2).mean().backward()
    assert torch.equal(z_e.grad, decoder_input.grad)
    assert z_e.grad.abs().sum() > 0


def test_vq_losses_against_hand_computation_and_their_gradients():
    z_e = torch.tensor([[1.0, 2.0], [0.0, -1.0]]).T.reshape(1, 2, 1, 2)
    z_e.requires_grad_(True)
    codes = torch.tensor([[1.5, 2.0], [0.0, 0.0]], requires_grad=True)
    z_q, indices = quantize(z_e, codes)
    # position 0 (1, 2) -> code 0 (1.5, 2): squared distance 0.25
    # position 1 (0, -1) -> code 1 (0, 0): squared distance 1; mean over 4 elements
    assert indices.flatten().tolist() == [0, 1]
    codebook_loss, commitment_loss = vq_losses(z_e, z_q)
    assert math.isclose(codebook_loss.item(), (0.25 + 1.0) / 4)
    assert math.isclose(commitment_loss.item(), (0.25 + 1.0) / 4)
    (g_codes,) = torch.autograd.grad(codebook_loss, codes, retain_graph=True)
    (g_z,) = torch.autograd.grad(
        codebook_loss, z_e, retain_graph=True, allow_unused=True
    )
    # d/de mean((e - z)^2) = 2 (e - z) / 4; the encoder gets nothing from this term
    assert torch.allclose(g_codes, torch.tensor([[0.25, 0.0], [0.0, 0.5]]))
    assert g_z is None or torch.equal(g_z, torch.zeros_like(z_e))
    (g_z,) = torch.autograd.grad(commitment_loss, z_e, retain_graph=True)
    (g_codes,) = torch.autograd.grad(
        commitment_loss, codes, retain_graph=True, allow_unused=True
    )
    expected = torch.tensor([-0.25, 0.0, 0.0, -0.5]).view(1, 2, 1, 2)
    assert torch.allclose(g_z, expected)
    assert g_codes is None or torch.equal(g_codes, torch.zeros_like(codes))


def test_vqvae_loss_adds_beta_times_commitment():
    torch.manual_seed(0)
    model = VQVAE(num_codes=8, code_dim=4, hidden=8)
    x = torch.rand(4, 1, 28, 28)
    terms = vqvae_loss(model, x, beta=0.25)
    expected = (
        terms["reconstruction"]
        + terms["codebook"]
        + 0.25 * terms["commitment"]
    )
    assert torch.allclose(terms["loss"], expected)
    assert terms["indices"].shape == (4, 7, 7)


def test_perplexity_bounds_and_hand_values():
    k = 16
    assert perplexity(torch.zeros(100, dtype=torch.long), k) == pytest.approx(
        1.0
    )
    assert perplexity(torch.arange(k).repeat(5), k) == pytest.approx(k)
    # two codes used 3:1: exp(-(3/4 log 3/4 + 1/4 log 1/4))
    p = torch.tensor([0.75, 0.25])
    expected = math.exp(-(p * p.log()).sum().item())
    assert perplexity(torch.tensor([2, 2, 2, 9]), k) == pytest.approx(expected)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        indices = torch.randint(
            0,
            int(torch.randint(1, k + 1, (1,), generator=gen)),
            (50,),
            generator=gen,
        )
        assert 1 - 1e-9 <= perplexity(indices, k) <= k + 1e-9


def test_revival_moves_only_dead_codes_onto_encoder_outputs():
    gen = torch.Generator().manual_seed(0)
    codebook = torch.randn(6, 3, generator=gen)
    before = codebook.clone()
    counts = torch.tensor([5, 0, 2, 0, 0, 1])
    z_e = torch.randn(2, 3, 4, 4, generator=gen)
    moved = revive_dead_codes(codebook, counts, z_e, gen)
    assert moved == 3
    alive = counts > 0
    assert torch.equal(codebook[alive], before[alive])
    outputs = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    for k in (1, 3, 4):
        assert (outputs == codebook[k]).all(1).any(), (
            "a revived code is an encoder output"
        )
    assert revive_dead_codes(codebook, torch.ones(6), z_e, gen) == 0


def test_a_revived_code_gets_chosen_again():
    codebook = torch.tensor(
        [[0.0, 0.0], [100.0, 100.0]]
    )  # code 1 far from everything
    z_e = torch.full((1, 2, 2, 2), 3.0)
    _, indices = quantize(z_e, codebook)
    counts = torch.bincount(indices.flatten(), minlength=2)
    assert counts[1] == 0
    revive_dead_codes(codebook, counts, z_e)
    _, indices = quantize(z_e, codebook)
    assert (indices == 1).all()


def test_train_vqvae_traces_usage_and_revival_reduces_dead_codes(monkeypatch):
    monkeypatch.delenv(
        "VAECOURSE_QUICK", raising=False
    )  # the full 2 epochs, CI too
    images = torch.rand(512, 1, 28, 28)
    runs = {}
    for revive in (0, 4):
        torch.manual_seed(0)
        model = VQVAE(num_codes=32, code_dim=4, hidden=8)
        history = train_vqvae(
            model,
            images,
            epochs=2,
            batch_size=64,
            revive_every=revive,
            trace_every=4,
        )
        runs[revive] = (model, history)
        trace = history[-1]["trace"]
        assert [p["step"] for p in trace] == [4, 8, 12, 16]
        assert all(1 <= p["perplexity"] <= 32 for p in trace)
        assert {"loss", "reconstruction", "codebook", "commitment"} <= set(
            history[0]
        )
    assert runs[0][1][-1]["revived"] == 0 and runs[4][1][-1]["revived"] > 0
    used = {
        r: len(encode_indices(m, images).unique())
        for r, (m, _) in runs.items()
    }
    assert used[4] > used[0]
    with pytest.raises(ValueError, match="revive_every"):
        train_vqvae(runs[0][0], images, epochs=1, revive_every=-1)


def test_decode_indices_is_the_decoder_of_the_quantized_code():
    torch.manual_seed(0)
    model = VQVAE(num_codes=8, code_dim=4, hidden=8).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        x_hat = model(x)[0]
    assert torch.allclose(
        decode_indices(model, encode_indices(model, x)), x_hat
    )


def test_categorical_prior_counts_per_position():
    indices = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 1]])
    log_p = categorical_prior(indices, 3, alpha=0.5)
    assert log_p.shape == (2, 3)
    assert torch.allclose(
        log_p.exp().sum(1), torch.ones(2, dtype=torch.float64)
    )
    assert torch.allclose(
        log_p[0].exp(),
        torch.tensor([3.5, 1.5, 0.5], dtype=torch.float64) / 5.5,
    )
    with pytest.raises(ValueError, match="alpha"):
        categorical_prior(indices, 3, alpha=0)


def test_categorical_prior_of_balanced_codes_is_uniform_at_49_log_k_per_grid():
    # a per-position prior fitted to perfectly balanced codes is the uniform prior, under
    # which every grid costs 49 log K nats (the chapter's KL of a one-hot posterior)
    balanced = torch.arange(16).repeat(3)[:, None].expand(48, 49)
    log_p = categorical_prior(balanced, 16)
    nll = -log_p.gather(1, balanced[:5].T).sum(0)
    assert torch.allclose(
        nll, torch.full((5,), 49 * math.log(16), dtype=torch.float64)
    )


def test_code_prior_is_autoregressive_and_normalized():
    torch.manual_seed(0)
    prior = CodePrior(num_codes=3, positions=4, embed=2, hidden=16)
    c = torch.tensor([[0, 1, 2, 1]])
    logits = prior(c)
    for i in range(4):
        changed = c.clone()
        changed[0, i:] = (
            changed[0, i:] + 1
        ) % 3  # change position i and later
        assert torch.allclose(prior(changed)[0, i], logits[0, i]), (
            f"position {i}"
        )
    # the probabilities of all 3**4 grids sum to one
    grids = torch.cartesian_prod(*[torch.arange(3)] * 4)
    total = torch.logsumexp(-prior.nll(grids), 0).exp()
    assert total.item() == pytest.approx(1.0, abs=1e-5)


def test_code_prior_learns_a_deterministic_pattern_and_samples_it(monkeypatch):
    monkeypatch.delenv(
        "VAECOURSE_QUICK", raising=False
    )  # all 60 epochs, CI too
    torch.manual_seed(0)
    first = torch.randint(0, 4, (256,))
    grids = torch.stack([first, (first + 1) % 4, (first + 2) % 4], 1)
    prior = CodePrior(num_codes=4, positions=3, embed=4, hidden=32)
    train_prior(prior, grids, epochs=60, batch_size=64, lr=1e-2)
    samples = prior.sample(200, torch.Generator().manual_seed(0))
    assert ((samples[:, 1] - samples[:, 0]) % 4 == 1).float().mean() > 0.95
    assert (
        prior.nll(grids).mean() < math.log(4) + 0.3
    )  # only the first is uncertain


def test_sample_shapes_and_range_with_both_priors():
    torch.manual_seed(0)
    model = VQVAE(num_codes=8, code_dim=4, hidden=8).eval()
    codes = torch.randint(0, 8, (20, 7, 7))
    for prior in (categorical_prior(codes, 8), CodePrior(8, 49, hidden=16)):
        images = sample(model, prior, 6, seed=3)
        assert images.shape == (6, 1, 28, 28)
        assert images.min() >= 0 and images.max() <= 1
        assert torch.equal(images, sample(model, prior, 6, seed=3))
    with pytest.raises(ValueError, match="n must be"):
        sample(model, prior, 0)
