"""Tests of vaecourse.chapters.autoencoders: the MLP builder and the models the chapter
compares (the reference MLP autoencoder, the convolutional, tied and linear ones), its two
losses, the linear autoencoder learning PCA's subspace, and the measuring tools."""

from __future__ import annotations

import io
import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.linalg import subspace_angles
from torch import nn

from vaecourse.chapters.autoencoders import (
    LETTERS,
    SHAPES,
    Autoencoder,
    ConvAutoencoder,
    LinearAutoencoder,
    TiedAutoencoder,
    bce_loss,
    code_bits,
    count_macs,
    encoded_bits,
    linear_loss,
    mlp,
    mnist_frame,
    mse_loss,
    non_digits,
    psnr,
    train_linear,
)
from vaecourse.chapters.kl import bernoulli_kl
from vaecourse.train import QUICK_BATCHES

GEN = torch.Generator().manual_seed(0)


# --- the MLP builder ---------------------------------------------------------------------


def test_mlp_is_a_plain_sequential_without_a_final_activation():
    net = mlp([5, 7, 4, 3], nn.GELU)
    assert [type(m) for m in net] == [
        nn.Linear,
        nn.GELU,
        nn.Linear,
        nn.GELU,
        nn.Linear,
    ]
    assert [(m.in_features, m.out_features) for m in net[::2]] == [
        (5, 7),
        (7, 4),
        (4, 3),
    ]
    assert net(torch.zeros(2, 5)).shape == (2, 3)
    assert net[1] is not net[3]  # one activation module per place
    assert [type(m) for m in mlp([5, 3])] == [nn.Linear]


def test_mlp_takes_an_activation_with_arguments():
    net = mlp([4, 6, 2], partial(nn.LeakyReLU, 0.2))
    assert isinstance(net[1], nn.LeakyReLU) and net[1].negative_slope == 0.2
    assert isinstance(mlp([4, 6, 2])[1], nn.ReLU)  # ReLU by default


@pytest.mark.parametrize("sizes", [[5], [], [5, 0], [784, 0, 3], [0, 4]])
def test_mlp_rejects_missing_or_empty_layers(sizes):
    with pytest.raises(ValueError, match="at least two layer sizes, all >= 1"):
        mlp(sizes)


# --- the reference autoencoder ---------------------------------------------------------


@pytest.mark.parametrize("hidden", [(), (64,), (128, 32)])
def test_autoencoder_shapes_and_range(hidden):
    torch.manual_seed(0)
    model = Autoencoder(latent=5, hidden=hidden)
    x = torch.rand(7, 1, 28, 28, generator=GEN)
    z = model.encode(x)
    assert z.shape == (7, 5)
    torch.testing.assert_close(
        model.encode(x.flatten(1)), z
    )  # (N, 784) works too
    x_hat = model(x)
    assert x_hat.shape == x.shape
    assert ((x_hat > 0) & (x_hat < 1)).all()
    torch.testing.assert_close(x_hat, model.decode(z))


def test_autoencoder_decoder_gives_logits_and_decode_their_sigmoid():
    """The decoder's 784 outputs are logits (unbounded); decode maps them into (0, 1)."""
    torch.manual_seed(0)
    model = Autoencoder(latent=3, hidden=(16,))
    z = 10 * torch.randn(4, 3, generator=GEN)
    logits = model.decoder(z)
    assert (
        logits.shape == (4, 784) and (logits < 0).any() and (logits > 1).any()
    )
    torch.testing.assert_close(
        model.decode(z), torch.sigmoid(logits).view(4, 1, 28, 28)
    )


def test_autoencoder_is_symmetric_around_the_code_with_a_linear_code():
    model = Autoencoder(latent=8, hidden=(100, 50), activation=nn.SiLU)
    down = [m.weight.shape for m in model.encoder if isinstance(m, nn.Linear)]
    up = [m.weight.shape for m in model.decoder if isinstance(m, nn.Linear)]
    assert down == [(100, 784), (50, 100), (8, 50)]
    assert up == [(50, 8), (100, 50), (784, 100)]
    assert isinstance(
        model.encoder[-1], nn.Linear
    )  # no activation on the code
    assert isinstance(model.decoder[-1], nn.Linear)  # logits out
    assert {
        type(m) for m in model.modules() if not isinstance(m, nn.Sequential)
    } == {
        Autoencoder,
        nn.Linear,
        nn.SiLU,
    }
    expected = (
        2 * (784 * 100 + 100 * 50 + 50 * 8) + (100 + 50 + 8) + (50 + 100 + 784)
    )
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize(
    "kwargs", [{"latent": 0}, {"latent": 4, "hidden": (10, 0)}, {"latent": -1}]
)
def test_autoencoder_rejects_empty_layers(kwargs):
    with pytest.raises(ValueError, match="all >= 1"):
        Autoencoder(**kwargs)


def test_autoencoder_learns_to_reconstruct():
    """A few steps of training on bce_loss lower the reconstruction error of a batch."""
    torch.manual_seed(0)
    model = Autoencoder(latent=4, hidden=(32,))
    x = (torch.rand(64, 1, 28, 28, generator=GEN) > 0.7).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = bce_loss(model, (x,))["loss"].item()
    for _ in range(50):
        loss = bce_loss(model, (x,))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.9 * before


# --- the other autoencoders of the comparison ------------------------------------------


@pytest.mark.parametrize("make", [ConvAutoencoder, TiedAutoencoder])
def test_other_autoencoders_shapes_and_range(make):
    torch.manual_seed(0)
    model = make(latent=6)
    x = torch.rand(3, 1, 28, 28, generator=GEN)
    z = model.encode(x)
    assert z.shape == (3, 6)
    x_hat = model(x)
    assert x_hat.shape == (3, 1, 28, 28)
    assert ((x_hat > 0) & (x_hat < 1)).all()
    torch.testing.assert_close(x_hat, model.decode(z))


def test_tied_autoencoder_uses_one_matrix_both_ways():
    torch.manual_seed(0)
    model = TiedAutoencoder(latent=5)
    assert sum(p.numel() for p in model.parameters()) == 5 * 784 + 5 + 784
    with torch.no_grad():
        model.bias.uniform_(-1, 1)
        model.output_bias.uniform_(-1, 1)
    x = torch.rand(4, 784, generator=GEN)
    w = model.weight.detach()
    z = x @ w.T + model.bias.detach()
    torch.testing.assert_close(model.encode(x), z)
    expected = torch.sigmoid(z @ w + model.output_bias.detach()).view(
        4, 1, 28, 28
    )
    torch.testing.assert_close(model(x), expected)


def test_the_two_losses_are_per_pixel_means_and_track_each_other():
    torch.manual_seed(0)
    model = Autoencoder(latent=3, hidden=(16,))
    x = torch.rand(6, 1, 28, 28, generator=GEN)
    p = model(x).detach()
    cross_entropy = -(x * p.log() + (1 - x) * (1 - p).log()).mean()
    squared = ((x - p) ** 2).mean()
    b, m = bce_loss(model, (x,)), mse_loss(model, (x,))
    torch.testing.assert_close(b["loss"], cross_entropy)
    torch.testing.assert_close(b["mse"], squared)
    torch.testing.assert_close(m["loss"], squared)
    torch.testing.assert_close(m["bce"], cross_entropy)


# --- the linear autoencoder = PCA --------------------------------------------------------


def synthetic_images(n=2000, seed=0):
    """784-pixel "images" with three directions of clearly larger variance, at random
    orthogonal axes, around a grey mean."""
    g = torch.Generator().manual_seed(seed)
    axes, _ = torch.linalg.qr(
        torch.randn(784, 784, generator=g, dtype=torch.float64)
    )
    scales = torch.full((784,), 0.05, dtype=torch.float64)
    scales[:3] = torch.tensor([0.3, 0.2, 0.15], dtype=torch.float64)
    z = torch.randn(n, 784, generator=g, dtype=torch.float64) * scales
    return (z @ axes.T + 0.5).float()


def test_linear_autoencoder_reconstructs_around_its_mean():
    """x_hat = mean + W_dec W_enc (x - mean), of the input's shape."""
    torch.manual_seed(0)
    model = LinearAutoencoder(4)
    with torch.no_grad():
        model.mean.uniform_(0, 1)
    assert dict(model.named_buffers()).keys() == {
        "mean"
    }  # saved with the weights
    x = torch.rand(3, 1, 28, 28, generator=GEN)
    flat = x.flatten(1)
    w_enc, w_dec = model.encoder.weight.detach(), model.decoder.weight.detach()
    expected = model.mean + (flat - model.mean) @ w_enc.T @ w_dec.T
    x_hat = model(x)
    assert x_hat.shape == x.shape
    torch.testing.assert_close(x_hat.flatten(1), expected)


def test_linear_loss_is_the_per_pixel_mse_on_the_whole_data_set():
    """The covariance form tr C - 2 tr(A C) + tr(A C Aᵀ), divided by 784, equals the
    mean squared error over every image and pixel, for the data's mean and covariance."""
    x = synthetic_images(500).double()
    torch.manual_seed(1)
    model = LinearAutoencoder(3).double()
    model.mean.copy_(x.mean(0))
    centred = x - x.mean(0)
    cov = centred.T @ centred / len(x)
    direct = ((model(x) - x) ** 2).mean()
    torch.testing.assert_close(linear_loss(model, cov), direct)


@pytest.mark.usefixtures("full_mode")
def test_train_linear_spans_the_pca_subspace_but_not_its_components():
    """train_linear sets the model's mean to the data's, its decoder then spans the top-k
    principal subspace (principal angles near 0) at PCA's error, and its columns are not
    the principal components themselves: any invertible R gives the same map."""
    x = synthetic_images()
    torch.manual_seed(0)
    model = LinearAutoencoder(3)
    history = train_linear(model, x, steps=1000, lr=1e-2)
    assert [row["step"] for row in history] == list(range(100, 1001, 100))
    torch.testing.assert_close(model.mean, x.mean(0))
    centred = x.double() - x.double().mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / len(x))
    top = eigenvectors.flip(1)[:, :3]
    w = model.decoder.weight.detach().double()
    assert np.degrees(subspace_angles(w.numpy(), top.numpy())).max() < 1
    pca_error = eigenvalues.flip(0)[3:].sum().item() / 784
    assert history[-1]["loss"] == pytest.approx(pca_error, rel=1e-3)
    with torch.no_grad():
        assert ((model(x) - x) ** 2).mean().item() == pytest.approx(
            pca_error, rel=1e-3
        )
    columns = w / w.norm(dim=0)
    assert (columns.T @ top).abs().max(dim=1).values.min() < 0.95


def test_train_linear_takes_the_quick_steps_in_quick_mode(monkeypatch):
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    history = train_linear(
        LinearAutoencoder(2), synthetic_images(100), steps=1500, lr=1e-2
    )
    assert [row["step"] for row in history] == [QUICK_BATCHES]


def test_bce_on_grey_pixels_is_entropy_plus_kl_and_smallest_at_x():
    """BCE(x, x_hat) = sum H(x_i) + sum KL(Ber(x_i) || Ber(x_hat_i)) >= sum H(x_i)."""
    x = torch.rand(10, 784, generator=GEN, dtype=torch.float64)
    x[:, :100] = 0.0  # exact zeros and ones, as in MNIST
    x[:, 100:200] = 1.0
    x_hat = (
        torch.rand(10, 784, generator=GEN, dtype=torch.float64) * 0.98 + 0.01
    )
    entropy = -(torch.xlogy(x, x) + torch.xlogy(1 - x, 1 - x)).sum(1)
    bce = F.binary_cross_entropy(x_hat, x, reduction="none").sum(1)
    torch.testing.assert_close(bce, entropy + bernoulli_kl(x, x_hat).sum(1))
    assert (bce > entropy).all()


# --- measurements ----------------------------------------------------------------------


def test_psnr():
    assert psnr(0.01) == pytest.approx(20.0)
    assert psnr(1.0) == pytest.approx(0.0)
    assert psnr(torch.tensor(0.001)) == pytest.approx(30.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive mean squared error"):
            psnr(bad)


def test_code_bits_of_uniform_and_constant_codes():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 8, size=(200_000, 3))
    test = rng.integers(0, 8, size=(20_000, 3))
    assert code_bits(train, test) == pytest.approx(
        3 * 3.0, abs=0.01
    )  # 3 bits per dim
    constant = np.full((100, 4), 7)
    assert code_bits(constant, constant) == 0.0


def test_code_bits_is_a_cross_entropy_never_below_the_empirical_entropy():
    rng = np.random.default_rng(1)
    train = rng.binomial(10, 0.3, size=(5000, 2))
    test = rng.binomial(10, 0.5, size=(3000, 2))  # a different distribution
    cross = code_bits(train, test)
    own = 0.0
    for j in range(2):
        p = np.bincount(test[:, j]) / len(test)
        p = p[p > 0]
        own += -(p * np.log2(p)).sum()
    assert cross > own
    # a symbol never seen in training costs many bits, but finitely many
    unseen = code_bits(np.zeros((1000, 1), int), np.full((1, 1), 5))
    assert 10 < unseen < math.inf


@pytest.mark.parametrize(
    "train, test, message",
    [
        (np.zeros((5, 2), int), np.zeros((5, 3), int), "same k"),
        (np.zeros(5, int), np.zeros(5, int), "2-D integer arrays"),
        (np.zeros((5, 2)), np.zeros((5, 2)), "quantize the codes first"),
    ],
)
def test_code_bits_rejects_bad_input(train, test, message):
    with pytest.raises(ValueError, match=message):
        code_bits(train, test)


def test_encoded_bits_png_is_lossless_and_counts_the_real_file(mnist):
    images = mnist["test"][0][:50]
    bits, decoded = encoded_bits(images, "PNG")
    torch.testing.assert_close(decoded, images, atol=1e-6, rtol=0)
    # one image: the mosaic is the image itself, so its size is that of a plain PNG file
    one_bits, _ = encoded_bits(images[:1], "PNG")
    buffer = io.BytesIO()
    Image.fromarray(np.uint8(np.rint(images[0, 0].numpy() * 255))).save(
        buffer, "PNG"
    )
    assert one_bits == 8 * buffer.getbuffer().nbytes
    assert bits < one_bits  # a shared header makes each image cheaper


def test_encoded_bits_jpeg_trades_bits_for_distortion(mnist):
    images = mnist["test"][0][:100]
    results = [encoded_bits(images, "JPEG", quality=q) for q in (10, 50, 90)]
    bits = [b for b, _ in results]
    errors = [F.mse_loss(d, images).item() for _, d in results]
    assert bits == sorted(bits)
    assert errors == sorted(errors, reverse=True)
    assert errors[0] > 0


def test_encoded_bits_rejects_bad_input():
    with pytest.raises(ValueError, match="'JPEG' or 'PNG'"):
        encoded_bits(torch.zeros(2, 1, 28, 28), "GIF")
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        encoded_bits(torch.zeros(2, 28, 28), "PNG")


def test_count_macs_matches_hand_counts():
    model = Autoencoder(latent=16, hidden=(64,))
    assert count_macs(model, torch.zeros(3, 1, 28, 28)) == 2 * (
        784 * 64 + 64 * 16
    )
    conv = nn.Sequential(
        nn.Conv2d(
            1, 4, 3, stride=2, padding=1
        ),  # 4 x 14 x 14 outputs, 9 MACs each
        nn.ConvTranspose2d(
            4, 2, 4, stride=2, padding=1
        ),  # 4 x 14 x 14 inputs, 2 x 16
    )
    assert (
        count_macs(conv, torch.zeros(2, 1, 28, 28))
        == 4 * 14 * 14 * 9 + 4 * 14 * 14 * 32
    )
    with pytest.raises(ValueError, match="no Linear or convolution layer"):
        count_macs(nn.ReLU(), torch.zeros(1, 3))


# --- non-digits in MNIST's format ------------------------------------------------------


def test_mnist_frame_scales_into_a_20_pixel_box_and_centres_the_mass():
    picture = np.zeros((90, 60))
    picture[10:80, 20:30] = 255  # a tall bar, off centre
    frame = mnist_frame(picture)
    assert frame.shape == (28, 28)
    rows, cols = np.nonzero(frame > 0)
    assert (
        rows.max() - rows.min() + 1 <= 21 and cols.max() - cols.min() + 1 <= 21
    )
    grid = np.arange(28)
    mass = frame.sum()
    assert abs((frame.sum(1) * grid).sum() / mass - 14) <= 0.5
    assert abs((frame.sum(0) * grid).sum() / mass - 14) <= 0.5
    with pytest.raises(ValueError, match="without ink"):
        mnist_frame(np.zeros((10, 10)))


@pytest.mark.parametrize(
    "kind, names", [("letters", LETTERS), ("shapes", SHAPES)]
)
def test_non_digits_are_deterministic_mnist_like_images(kind, names):
    images, labels = non_digits(kind, 30, seed=3)
    again, _ = non_digits(kind, 30, seed=3)
    other, _ = non_digits(kind, 30, seed=4)
    assert images.shape == (30, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert (images.flatten(1).sum(1) > 0).all()  # every image has ink
    assert all(label in names for label in labels)
    assert torch.equal(images, again) and not torch.equal(images, other)


def test_non_digits_rejects_bad_input():
    with pytest.raises(ValueError, match="'letters' or 'shapes'"):
        non_digits("digits", 3)
    with pytest.raises(ValueError, match="at least 1"):
        non_digits("letters", 0)
