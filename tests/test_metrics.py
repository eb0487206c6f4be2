"""Tests of vaecourse.metrics: the Fréchet distance against closed forms, the class
histogram, coverage and entropy on known counts, and the classifier: its loss, its
batching, and that it learns MNIST."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy
from torch import nn

from vaecourse import metrics
from vaecourse.train import fit


def random_covariance(d, seed, rank=None):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, rank or d + 3))
    return a @ a.T / a.shape[1]


def psd_sqrt(c):
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def independent_frechet(mu1, c1, mu2, c2):
    """tr (C1 C2)^{1/2} = tr (C1^{1/2} C2 C1^{1/2})^{1/2}: a symmetric matrix, so eigh."""
    r1 = psd_sqrt(c1)
    inner = np.linalg.eigvalsh(r1 @ c2 @ r1)
    cross = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * cross
    )


def test_one_dimensional_case_is_mean_and_standard_deviation_gaps():
    for m1, s1, m2, s2 in [
        (0.0, 1.0, 0.0, 1.0),
        (1.5, 0.3, -2.0, 2.2),
        (3, 4, 3, 1),
    ]:
        got = metrics.frechet_distance([m1], [[s1**2]], [m2], [[s2**2]])
        assert got == pytest.approx(
            (m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-10, abs=1e-12
        )


def test_diagonal_and_commuting_covariances_match_the_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    diagonal = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert diagonal == pytest.approx(closed, rel=1e-10)
    # the same eigenvalues in a shared rotated basis: the matrices commute
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    c1, c2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    c1, c2 = (c1 + c1.T) / 2, (c2 + c2.T) / 2
    assert np.allclose(c1 @ c2, c2 @ c1)
    assert metrics.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(
        closed, rel=1e-8
    )


def test_general_covariances_match_an_independent_formula_and_are_symmetric():
    d = 20
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    c1, c2 = random_covariance(d, 2), random_covariance(d, 3)
    forward = metrics.frechet_distance(mu1, c1, mu2, c2)
    assert forward == pytest.approx(
        independent_frechet(mu1, c1, mu2, c2), rel=1e-8
    )
    assert metrics.frechet_distance(mu2, c2, mu1, c1) == pytest.approx(
        forward, rel=1e-8
    )
    assert forward > 0


def test_identical_gaussians_are_at_distance_zero():
    c = random_covariance(30, 4)
    mu = np.arange(30.0)
    assert metrics.frechet_distance(mu, c, mu, c) == pytest.approx(0, abs=1e-8)


def test_singular_covariances_give_a_finite_correct_value():
    # fewer samples than dimensions: rank-deficient covariances, as with too few images
    d = 12
    c1, c2 = random_covariance(d, 5, rank=4), random_covariance(d, 6, rank=5)
    mu = np.zeros(d)
    got = metrics.frechet_distance(mu, c1, mu, c2)
    assert math.isfinite(got)
    assert got == pytest.approx(
        independent_frechet(mu, c1, mu, c2), rel=1e-4, abs=1e-6
    )


def test_feature_statistics_are_the_sample_mean_and_covariance():
    x = torch.randn(
        500, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    mu, cov = metrics.feature_statistics(x)
    assert mu.dtype == cov.dtype == np.float64 and cov.shape == (7, 7)
    assert np.allclose(mu, x.numpy().mean(0))
    centred = x.numpy() - mu
    assert np.allclose(cov, centred.T @ centred / (len(x) - 1))
    _, one_dimensional = metrics.feature_statistics(x[:, :1])
    assert one_dimensional.shape == (1, 1)


def test_distance_of_samples_converges_to_the_distance_of_the_gaussians():
    rng = np.random.default_rng(7)
    d, n = 4, 200_000
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    c1, c2 = random_covariance(d, 8), random_covariance(d, 9)
    x1 = rng.multivariate_normal(mu1, c1, size=n)
    x2 = rng.multivariate_normal(mu2, c2, size=n)
    from_samples = metrics.frechet_distance(
        *metrics.feature_statistics(x1), *metrics.feature_statistics(x2)
    )
    assert from_samples == pytest.approx(
        independent_frechet(mu1, c1, mu2, c2), rel=0.02
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (([0.0, 0.0], np.eye(3), [0.0, 0.0], np.eye(2)), "shapes"),
        (([0.0, 0.0], np.eye(2), [0.0], np.eye(1)), "different dimensions"),
        (
            ([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]], [0.0, 0.0], np.eye(2)),
            "symmetric",
        ),
        (
            ([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]], [0.0, 0.0], np.eye(2)),
            "negative",
        ),
        (([np.nan, 0.0], np.eye(2), [0.0, 0.0], np.eye(2)), "NaN"),
    ],
)
def test_frechet_distance_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        metrics.frechet_distance(*args)


def test_feature_statistics_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        metrics.feature_statistics(np.zeros(5))
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.feature_statistics(np.zeros((1, 5)))


class LabelFromFirstPixel(nn.Module):
    """A stand-in classifier: predicts round(9 * first pixel), so tests choose labels."""

    def __init__(self):
        super().__init__()
        self.body = nn.Flatten()
        self.unused = nn.Linear(
            1, 1
        )  # so the module has parameters (and a device)

    def forward(self, x):
        label = (x[:, 0, 0, 0] * 9).round().long()
        return F.one_hot(label, 10).float()


def images_with_labels(labels):
    x = torch.zeros(len(labels), 1, 28, 28)
    x[:, 0, 0, 0] = torch.as_tensor(labels, dtype=torch.float32) / 9
    return x


def test_class_histogram_coverage_and_entropy_on_known_labels():
    labels = [3] * 50 + [7] * 40 + [1] * 6 + [0] * 4
    model = LabelFromFirstPixel()
    counts = metrics.class_histogram(
        model, images_with_labels(labels), batch_size=7
    )
    expected = np.zeros(10, dtype=np.int64)
    expected[[3, 7, 1, 0]] = [50, 40, 6, 4]
    assert counts.dtype == np.int64 and np.array_equal(counts, expected)
    assert metrics.class_coverage(counts) == 3  # 50%, 40%, 6% >= 5%; 4% is not
    assert metrics.class_coverage(counts, min_share=0.01) == 4
    assert metrics.class_coverage(counts, min_share=0.5) == 1
    assert metrics.class_entropy(counts) == pytest.approx(entropy(counts))


def test_entropy_bounds():
    assert metrics.class_entropy(np.full(10, 7)) == pytest.approx(math.log(10))
    assert metrics.class_entropy([0, 0, 12, 0, 0, 0, 0, 0, 0, 0]) == 0.0
    assert metrics.class_coverage(np.full(10, 7)) == 10


@pytest.mark.parametrize("counts", [np.zeros(10), [-1, 3, 4], np.ones((2, 5))])
def test_histogram_functions_reject_bad_counts(counts):
    with pytest.raises(ValueError, match="non-negative counts"):
        metrics.class_entropy(counts)
    with pytest.raises(ValueError, match="non-negative counts"):
        metrics.class_coverage(counts)


def test_class_coverage_rejects_bad_share():
    with pytest.raises(ValueError, match="min_share"):
        metrics.class_coverage(np.ones(10), min_share=0)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.zeros(3, 28, 28), r"\(N, 1, 28, 28\)"),
        (torch.zeros(0, 1, 28, 28), "empty"),
        (torch.full((2, 1, 28, 28), -1.0), r"\[0, 1\]"),
        (torch.full((2, 1, 28, 28), float("nan")), "NaN"),
    ],
)
def test_classifier_functions_reject_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        metrics.classify(metrics.Classifier(), images)


def test_features_and_labels_do_not_depend_on_batch_size_and_keep_the_mode():
    torch.manual_seed(0)
    model = metrics.Classifier().train()
    x = torch.rand(25, 1, 28, 28)
    f1, f2 = metrics.features(model, x, 4), metrics.features(model, x, 1000)
    assert f1.shape == (25, 128) and torch.allclose(f1, f2, atol=1e-5)
    assert torch.equal(
        metrics.classify(model, x, 3), model.eval()(x).argmax(1)
    )
    model.train()
    metrics.features(model, x.flatten(1))  # (N, 784) is accepted too
    assert model.training  # restored after evaluation


def test_classifier_loss_is_the_cross_entropy_and_the_error_rate():
    logits = torch.tensor(
        [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [-1.0, 0.0, 4.0]]
    )
    labels = torch.tensor([0, 2, 2])  # the second is wrong: argmax 1
    model = lambda x: logits  # noqa: E731
    terms = metrics.classifier_loss(model, (None, labels))
    log_p = logits.log_softmax(1)
    expected = -(log_p[0, 0] + log_p[1, 2] + log_p[2, 2]) / 3
    torch.testing.assert_close(terms["loss"], expected)
    assert terms["error"].item() == pytest.approx(1 / 3)


def test_classifier_shapes():
    model = metrics.Classifier(channels=(4, 8), feature_dim=16)
    x = torch.rand(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    assert model.body(x).shape == (5, 16)
    assert metrics.features(model, x).shape == (5, 16)


@pytest.mark.usefixtures("isolated")
def test_the_classifier_learns_mnist_with_its_loss(mnist, monkeypatch):
    """Twenty steps of fit on classifier_loss (quick mode) put the accuracy far above
    chance; accuracy needs one label per image."""
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    torch.manual_seed(0)
    model = metrics.Classifier()
    history = fit(
        model,
        metrics.classifier_loss,
        mnist["train"],
        epochs=1,
        batch_size=128,
        lr=3e-3,
        warmup=0.15,
        progress=False,
    )
    assert {"loss", "error"} <= history[0].keys()
    x, y = mnist["test"]
    assert metrics.accuracy(model, x[:1000], y[:1000]) > 0.5  # chance is 0.1
    counts = metrics.class_histogram(model, x[:1000])
    assert counts.sum() == 1000
    with pytest.raises(ValueError, match="one per image"):
        metrics.accuracy(model, x[:10], y[:9])


def test_real_digits_cover_every_class(mnist):
    # the docstring's claim: every digit has roughly 9% to 11% of the images
    for split in ("train", "test"):
        counts = np.bincount(mnist[split][1].numpy(), minlength=10)
        shares = counts / counts.sum()
        assert 0.085 < shares.min() and shares.max() < 0.115
        assert metrics.class_coverage(counts) == 10
        assert metrics.class_entropy(counts) > 0.99 * math.log(10)
