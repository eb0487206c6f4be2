"""Figures the chapters share: image grids and latent scatters.

Each function draws on a matplotlib Axes (a new one if none is given) and
returns it, so a chapter can combine them into its own figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_numpy(x) -> np.ndarray:
    """A tensor (any device, with or without a graph) or array-like as a NumPy
    array."""
    return (
        x.detach().cpu().numpy()
        if isinstance(x, torch.Tensor)
        else np.asarray(x)
    )


def image_grid(
    images, nrow: int = 8, pad: int = 1, pad_value: float = 1.0
) -> np.ndarray:
    """Tile images of shape (N, 1, H, W) or (N, H, W) into one 2-D array,
    ``nrow`` per row."""
    x = to_numpy(images)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(
                f"image_grid draws grey images (N, 1, H, W); got shape {x.shape}"
            )
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(
            f"expected images of shape (N, H, W) or (N, 1, H, W), got {x.shape}"
        )
    n, h, w = x.shape
    if n == 0 or nrow < 1:
        raise ValueError(
            f"image_grid needs at least one image and nrow >= 1 (got {n}, {nrow})"
        )
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = np.full(
        (rows * (h + pad) + pad, ncol * (w + pad) + pad),
        pad_value,
        dtype=np.float32,
    )
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = x[i]
    return grid


def show_images(
    images, nrow: int = 8, ax=None, title: str | None = None, **kwargs
):
    """Draw a grid of grey images, black ink on white (``gray_r``), values in
    [0, 1]."""
    ax = (
        ax
        or plt.figure(
            figsize=(nrow * 0.5, 0.5 * -(-len(images) // nrow) + 0.3)
        ).gca()
    )
    ax.imshow(
        image_grid(images, nrow, pad_value=0.0),
        cmap="gray_r",
        vmin=0,
        vmax=1,
        **kwargs,
    )
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def latent_scatter(
    z, labels, ax=None, s: float = 2.0, title: str | None = None
):
    """2-D codes coloured by digit class, with a legend (tab10: distinct in
    colour and in lightness, so the classes stay apart in greyscale too)."""
    z, labels = to_numpy(z), to_numpy(labels)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(
            f"latent_scatter draws 2-D codes of shape (N, 2), got {z.shape}"
        )
    ax = ax or plt.figure(figsize=(4.5, 4)).gca()
    points = ax.scatter(
        z[:, 0], z[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=s
    )
    ax.legend(
        *points.legend_elements(),
        title="digit",
        fontsize=7,
        loc="best",
        markerscale=0.8,
    )
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    if title:
        ax.set_title(title)
    return ax
