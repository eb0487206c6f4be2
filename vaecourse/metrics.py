"""Measuring tools for generative models of MNIST: a small classifier and what it measures.

The comparison chapter and the GAN chapter judge samples with the same instruments:

- ``trained_classifier()``: a small convnet trained once on the 60,000 training images
  (cached); ``classify`` gives its labels, ``features`` its penultimate layer.
- ``frechet_distance``: the Fréchet distance between two Gaussians fitted to features (the
  idea of the FID, here in the feature space of this MNIST classifier, not Inception's).
- ``class_histogram``, ``class_coverage``, ``class_entropy``: which digits a sampler makes,
  to show mode collapse with numbers.
- ``sampling_seconds_per_image``: the wall time a sampler needs per image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.cache import train_cached
from vaecourse.data import load_mnist
from vaecourse.train import fit

CLASSIFIER_CONFIG = {"epochs": 2, "batch_size": 128, "lr": 3e-3, "seed": 0}
N_CLASSES = 10


class Classifier(nn.Module):
    """Two 5x5 convolutions with stride 2 (28 -> 14 -> 7 pixels), a hidden layer of
    ``feature_dim`` units (the features) and ten logits.

    Strided convolutions instead of pooling: four times fewer positions to compute, so one
    epoch takes seconds on a CPU, and the accuracy stays above 98.5%.
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
        """Logits, shape (batch, 10), for images of shape (batch, 1, 28, 28)."""
        return self.head(self.body(x))


def train_classifier(model, images, labels, *, epochs, batch_size, lr, seed):
    """Cross-entropy with Adam and a one-cycle learning rate (short warm-up to ``lr``,
    then cosine decay): a fast recipe that reaches high accuracy in two epochs."""
    steps = epochs * -(-len(images) // batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.15
    )

    def loss_fn(model, batch):
        x, y = batch
        logits = model(x)
        return {
            "loss": F.cross_entropy(logits, y),
            "error": (logits.argmax(1) != y).float().mean(),
        }

    return fit(
        model,
        loss_fn,
        (images, labels),
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        scheduler=scheduler,
        schedule_every="batch",
        seed=seed,
        desc="MNIST classifier",
    )


def trained_classifier() -> Classifier:
    """The book's measuring classifier, trained on all 60,000 training images (cached:
    the first call trains it, later calls load it). Returned in eval mode."""
    config = dict(CLASSIFIER_CONFIG)
    torch.manual_seed(config["seed"])
    model = Classifier()
    images, labels = load_mnist("train")
    train_cached(
        "mnist-classifier",
        model,
        lambda m: train_classifier(m, images, labels, **config),
        config,
    )
    return model.eval()


def _check_images(images, name="images") -> torch.Tensor:
    """``images`` as a float tensor of shape (N, 1, 28, 28), or a clear ValueError."""
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


def classify(model: Classifier, images, batch_size: int = 1000) -> torch.Tensor:
    """The predicted digit of every image: int64 labels of shape (N,)."""
    return _apply(model, model, images, batch_size).argmax(1)


def features(model: Classifier, images, batch_size: int = 1000) -> torch.Tensor:
    """The penultimate-layer features of every image, shape (N, feature_dim), computed
    ``batch_size`` images at a time to bound memory."""
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
