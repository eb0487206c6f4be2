"""Tests of vaecourse.autoencoders, and of the identities the chapter "Autoencoders"
states: the Gaussian and Bernoulli likelihoods behind MSE and BCE, the covariance form of a
linear autoencoder's loss, and the linear autoencoder learning the PCA subspace."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.linalg import subspace_angles
from torch import nn

from vaecourse.autoencoders import (
    LETTERS,
    SHAPES,
    Autoencoder,
    code_bits,
    count_macs,
    encoded_bits,
    mnist_frame,
    non_digits,
    psnr,
)
from vaecourse.divergences import bernoulli_kl

GEN = torch.Generator().manual_seed(0)


# --- the reference autoencoder ---------------------------------------------------------


@pytest.mark.parametrize("hidden", [(), (64,), (128, 32)])
def test_autoencoder_shapes_and_range(hidden):
    torch.manual_seed(0)
    model = Autoencoder(latent=5, hidden=hidden)
    x = torch.rand(7, 1, 28, 28, generator=GEN)
    assert model.encoder(x).shape == (7, 5)
    x_hat = model(x)
    assert x_hat.shape == x.shape
    assert ((x_hat > 0) & (x_hat < 1)).all()


def test_autoencoder_is_symmetric_around_the_code():
    model = Autoencoder(latent=8, hidden=(100, 50))
    down = [m.weight.shape for m in model.encoder if isinstance(m, nn.Linear)]
    up = [m.weight.shape for m in model.decoder if isinstance(m, nn.Linear)]
    assert down == [(100, 784), (50, 100), (8, 50)]
    assert up == [(50, 8), (100, 50), (784, 100)]
    expected = 2 * (784 * 100 + 100 * 50 + 50 * 8) + (100 + 50 + 8) + (50 + 100 + 784)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize(
    "kwargs", [{"latent": 0}, {"latent": 4, "hidden": (10, 0)}, {"latent": -1}]
)
def test_autoencoder_rejects_empty_layers(kwargs):
    with pytest.raises(ValueError, match="layer sizes must be >= 1"):
        Autoencoder(**kwargs)


def test_autoencoder_learns_to_reconstruct():
    """A few steps of training lower the reconstruction error of a fixed batch."""
    torch.manual_seed(0)
    model = Autoencoder(latent=4, hidden=(32,))
    x = (torch.rand(64, 1, 28, 28, generator=GEN) > 0.7).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = F.binary_cross_entropy(model(x), x).item()
    for _ in range(50):
        loss = F.binary_cross_entropy(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.9 * before


# --- the likelihoods behind the two losses ---------------------------------------------


def test_gaussian_negative_log_likelihood_is_scaled_squared_error():
    """-log N(x; x_hat, s^2 I) = ||x - x_hat||^2 / (2 s^2) + d/2 log(2 pi s^2)."""
    x = torch.rand(20, 784, generator=GEN, dtype=torch.float64)
    x_hat = torch.rand(20, 784, generator=GEN, dtype=torch.float64)
    for sigma in (0.05, 0.3, 2.0):
        expected = -torch.distributions.Normal(x_hat, sigma).log_prob(x).sum(1)
        formula = ((x - x_hat) ** 2).sum(1) / (2 * sigma**2) + 784 / 2 * math.log(
            2 * math.pi * sigma**2
        )
        torch.testing.assert_close(formula, expected)


def test_bce_is_the_bernoulli_log_likelihood_on_binary_pixels():
    x = (torch.rand(10, 784, generator=GEN) > 0.5).double()
    x_hat = torch.rand(10, 784, generator=GEN, dtype=torch.float64) * 0.98 + 0.01
    bce = F.binary_cross_entropy(x_hat, x, reduction="none").sum(1)
    log_p = torch.distributions.Bernoulli(probs=x_hat).log_prob(x).sum(1)
    torch.testing.assert_close(bce, -log_p)


def test_bce_on_grey_pixels_is_entropy_plus_kl_and_smallest_at_x():
    """BCE(x, x_hat) = sum H(x_i) + sum KL(Ber(x_i) || Ber(x_hat_i)) >= sum H(x_i)."""
    x = torch.rand(10, 784, generator=GEN, dtype=torch.float64)
    x[:, :100] = 0.0  # exact zeros and ones, as in MNIST
    x[:, 100:200] = 1.0
    x_hat = torch.rand(10, 784, generator=GEN, dtype=torch.float64) * 0.98 + 0.01
    entropy = -(torch.xlogy(x, x) + torch.xlogy(1 - x, 1 - x)).sum(1)
    bce = F.binary_cross_entropy(x_hat, x, reduction="none").sum(1)
    torch.testing.assert_close(bce, entropy + bernoulli_kl(x, x_hat).sum(1))
    assert (bce > entropy).all()
    # at the perfect reconstruction the loss equals the entropy, which is not zero
    grey = x[:, 200:]
    perfect = F.binary_cross_entropy(grey, grey, reduction="none").sum(1)
    floor = -(torch.xlogy(grey, grey) + torch.xlogy(1 - grey, 1 - grey)).sum(1)
    torch.testing.assert_close(perfect, floor)
    assert (floor > 0).all()


# --- linear autoencoder = PCA ----------------------------------------------------------


def synthetic_data(n=4000, d=10, seed=0):
    """Gaussian data with clearly separated variances along random orthogonal axes."""
    g = torch.Generator().manual_seed(seed)
    axes, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    scales = torch.linspace(3.0, 0.3, d, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * scales
    return z @ axes.T + 0.5


def test_linear_autoencoder_loss_depends_on_the_data_only_through_the_covariance():
    """mean ||x_c - A x_c||^2 = tr C - 2 tr(A C) + tr(A C A^T)."""
    x = synthetic_data()
    xc = x - x.mean(0)
    cov = xc.T @ xc / len(x)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 10, generator=g, dtype=torch.float64)
    b = torch.randn(10, 3, generator=g, dtype=torch.float64)
    product = b @ a
    direct = ((xc - xc @ product.T) ** 2).sum(1).mean()
    formula = (
        torch.trace(cov)
        - 2 * torch.trace(product @ cov)
        + torch.trace(product @ cov @ product.T)
    )
    torch.testing.assert_close(direct, formula)


def test_linear_autoencoder_spans_the_pca_subspace_but_not_its_components():
    """Train a linear autoencoder with MSE by plain full-batch gradient steps on the data:
    its decoder spans the top-k principal subspace (principal angles near 0), it reaches
    PCA's error, and its columns are not the principal components themselves."""
    x = synthetic_data()
    mean = x.mean(0)
    xc = x - mean
    eigenvalues, eigenvectors = torch.linalg.eigh(xc.T @ xc / len(x))
    top = eigenvectors.flip(1)[:, :3]
    torch.manual_seed(0)
    encoder = nn.Linear(10, 3, bias=False).double()
    decoder = nn.Linear(3, 10, bias=False).double()
    optimizer = torch.optim.Adam(
        [*encoder.parameters(), *decoder.parameters()], lr=0.02
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1500)
    for _ in range(1500):
        loss = ((decoder(encoder(xc)) - xc) ** 2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    w = decoder.weight.detach()
    angles = np.degrees(subspace_angles(w.numpy(), top.numpy()))
    assert angles.max() < 0.5
    pca_error = eigenvalues.flip(0)[3:].sum().item()
    assert loss.item() == pytest.approx(pca_error, rel=1e-4)
    columns = w / w.norm(dim=0)
    best = (columns.T @ top).abs().max(dim=1).values
    assert best.min() < 0.95  # some column is a real mixture of components
    # any invertible R gives the same map, so the loss cannot prefer the components
    r = torch.randn(3, 3, generator=GEN, dtype=torch.float64)
    torch.testing.assert_close(
        (w @ torch.linalg.inv(r)) @ (r @ encoder.weight.detach()),
        w @ encoder.weight.detach(),
    )


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
    assert code_bits(train, test) == pytest.approx(3 * 3.0, abs=0.01)  # 3 bits per dim
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
    Image.fromarray(np.uint8(np.rint(images[0, 0].numpy() * 255))).save(buffer, "PNG")
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
    assert count_macs(model, torch.zeros(3, 1, 28, 28)) == 2 * (784 * 64 + 64 * 16)
    conv = nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),  # 4 x 14 x 14 outputs, 9 MACs each
        nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1),  # 4 x 14 x 14 inputs, 2 x 16
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
    assert rows.max() - rows.min() + 1 <= 21 and cols.max() - cols.min() + 1 <= 21
    grid = np.arange(28)
    mass = frame.sum()
    assert abs((frame.sum(1) * grid).sum() / mass - 14) <= 0.5
    assert abs((frame.sum(0) * grid).sum() / mass - 14) <= 0.5
    with pytest.raises(ValueError, match="without ink"):
        mnist_frame(np.zeros((10, 10)))


@pytest.mark.parametrize("kind, names", [("letters", LETTERS), ("shapes", SHAPES)])
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
