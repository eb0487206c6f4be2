"""The instruments that measure generative models of MNIST: a classifier and
its uses.

The chapters judge decoded images and samples with the same instruments:

- ``Classifier``: a small convnet (the book's trained one is
  ``zoo.load("mnist-classifier")``); ``classify`` gives its labels,
  ``features`` its penultimate layer;
- ``frechet_distance``: the Fréchet distance between two Gaussians fitted to
  features (the idea of the FID, here in the feature space of this MNIST
  classifier, not Inception's);
- ``class_histogram``, ``class_coverage``, ``class_entropy``: which digits a
  sampler makes, to show mode collapse with numbers.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.plot import to_numpy

N_CLASSES = 10


class Classifier(nn.Module):
    """Two 5x5 convolutions with stride 2 (28 -> 14 -> 7 pixels), a hidden
    layer of ``feature_dim`` units (the features) and ten logits.

    Strided convolutions instead of pooling: four times fewer positions to
    compute, so one epoch takes seconds on a CPU, and the accuracy stays above
    98.5%.
    """

    def __init__(self, channels=(16, 32), feature_dim=128):
        super().__init__()
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, N_CLASSES)

    def forward(self, x):
        """Logits, shape (batch, 10), for images of shape (batch, 1, 28,
        28)."""
        return self.head(self.body(x))


def classifier_loss(model, batch):
    """Cross-entropy of the logits against the labels, and the error rate."""
    x, y = batch
    logits = model(x)
    return {
        "loss": F.cross_entropy(logits, y),
        "error": (logits.argmax(1) != y).float().mean(),
    }


def _check_images(images, name="images") -> torch.Tensor:
    """``images`` as a float tensor of shape (N, 1, 28, 28), or a clear
    ValueError."""
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.dim() == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 1, 28, 28)
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(
            f"{name} must have shape (N, 1, 28, 28) or (N, 784), got "
            f"{tuple(images.shape)}; reshape them, e.g. x.reshape(-1, 1, 28, 28)"
        )
    if len(images) == 0:
        raise ValueError(f"{name} is empty: pass at least one image")
    images = images.float()
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(
            f"{name} must be grey levels in [0, 1] like MNIST, got values in "
            f"[{low:.3g}, {high:.3g}]; map them first (e.g. (x + 1) / 2 for a tanh "
            "output, or torch.sigmoid for logits)"
        )
    return images


@torch.no_grad()
def _apply(part, model, images, batch_size) -> torch.Tensor:
    images = _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = [
            part(images[i : i + batch_size].to(device)).cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)


def classify(
    model: Classifier, images, batch_size: int = 1000
) -> torch.Tensor:
    """The predicted digit of every image: int64 labels of shape (N,)."""
    return _apply(model, model, images, batch_size).argmax(1)


def features(
    model: Classifier, images, batch_size: int = 1000
) -> torch.Tensor:
    """The penultimate-layer features of every image, shape (N, feature_dim),
    computed ``batch_size`` images at a time to bound memory."""
    return _apply(model.body, model, images, batch_size)


def accuracy(model: Classifier, images, labels) -> float:
    """The share of ``images`` whose predicted digit equals ``labels``."""
    labels = torch.as_tensor(labels)
    if labels.shape != (len(images),):
        raise ValueError(
            f"labels must have shape ({len(images)},), one per image, got "
            f"{tuple(labels.shape)}"
        )
    return float((classify(model, images) == labels).float().mean())


# --- The Fréchet distance
# -------------------------------------------------------------


def _as_float64(x, name) -> np.ndarray:
    x = to_numpy(x).astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """The mean (d,) and covariance (d, d) of features of shape (N, d), in
    float64: the Gaussian fitted to them. The covariance divides by N - 1.

    Use thousands of images: with N close to d the covariance is poorly
    estimated, and the Fréchet distance is biased upwards (compare only
    distances computed with the same N).
    """
    feats = _as_float64(feats, "features")
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(
            "features must have shape (N, d) with N >= 2 rows (one per image), got "
            f"{feats.shape}; compute them with metrics.features(classifier, images)"
        )
    return feats.mean(0), np.cov(feats, rowvar=False).reshape(
        feats.shape[1], -1
    )


def _check_gaussian(mu, cov, which) -> tuple[np.ndarray, np.ndarray]:
    mu, cov = _as_float64(mu, f"mu{which}"), _as_float64(cov, f"cov{which}")
    d = mu.shape[0] if mu.ndim == 1 else None
    if d is None or cov.shape != (d, d):
        raise ValueError(
            f"mu{which} must be a vector (d,) and cov{which} a matrix (d, d), got shapes "
            f"{mu.shape} and {cov.shape}; feature_statistics(features) returns both"
        )
    scale = max(1.0, float(np.abs(cov).max()))
    if not np.allclose(cov, cov.T, rtol=0, atol=1e-8 * scale):
        raise ValueError(
            f"cov{which} is not symmetric: it is not a covariance matrix"
        )
    if np.linalg.eigvalsh(cov).min() < -1e-8 * scale:
        raise ValueError(
            f"cov{which} has a negative eigenvalue: it is not a covariance matrix"
        )
    return mu, cov


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """The Fréchet (2-Wasserstein squared) distance between N(mu1, cov1) and
    N(mu2, cov2):

        ||mu1 - mu2||² + tr(cov1 + cov2 - 2 (cov1 cov2)^{1/2}).

    As in the usual FID code: the matrix square root comes from
    scipy.linalg.sqrtm; if it is not finite (a nearly singular product), both
    covariances get a tiny ridge; rounding may leave a tiny imaginary part,
    which is dropped after checking it is negligible. A tiny negative result
    from rounding is returned as 0.
    """
    # scipy is needed here only (Colab and the book have it)
    from scipy import (
        linalg,
    )

    mu1, cov1 = _check_gaussian(mu1, cov1, 1)
    mu2, cov2 = _check_gaussian(mu2, cov2, 2)
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"the two Gaussians live in different dimensions: {mu1.shape[0]} and "
            f"{mu2.shape[0]}; compute both from features of the same classifier"
        )
    scale = max(1.0, float(np.trace(cov1) + np.trace(cov2)))
    with warnings.catch_warnings():
        # features that never fire make singular covariances; sqrtm warns, the
        # result is checked below (finite, negligible imaginary part)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(root).all():
            ridge = 1e-6 * scale / len(mu1) * np.eye(len(mu1))
            root = linalg.sqrtm((cov1 + ridge) @ (cov2 + ridge))
    if np.iscomplexobj(root):
        if np.abs(root.imag).max() > 1e-3 * max(
            1.0, float(np.abs(root.real).max())
        ):
            raise ValueError(
                "the matrix square root has a large imaginary part "
                f"({np.abs(root.imag).max():.3g}): the covariances are numerically "
                "unusable; use more images than feature dimensions"
            )
        root = root.real
    diff = mu1 - mu2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(root)
    return max(float(value), 0.0)


# --- Which digits a sampler makes
# ------------------------------------------------------


def class_histogram(classifier: Classifier, images, batch_size: int = 1000):
    """How many of ``images`` the classifier assigns to each digit: int64
    counts (10,)."""
    labels = classify(classifier, images, batch_size)
    return np.bincount(labels.numpy(), minlength=N_CLASSES).astype(np.int64)


def _check_histogram(counts) -> np.ndarray:
    counts = _as_float64(counts, "the histogram")
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(
            "the histogram must be a vector of non-negative counts with a positive sum, "
            f"got {counts!r}; class_histogram(classifier, images) returns one"
        )
    return counts


def class_coverage(counts, min_share: float = 0.05) -> int:
    """The number of classes that receive at least ``min_share`` of the
    samples.

    The default, 5%, is half the share of a class in a balanced sample of ten
    digits: a class a sampler makes less than half as often as it should counts
    as missing. In real MNIST every digit has roughly 9% to 11% of the images,
    so real data covers all 10.
    """
    counts = _check_histogram(counts)
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    return int((counts / counts.sum() >= min_share).sum())


def class_entropy(counts) -> float:
    """The entropy of the class histogram in nats: log 10 ≈ 2.303 for perfectly
    balanced digits, 0 when every sample is the same digit."""
    p = _check_histogram(counts)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())
