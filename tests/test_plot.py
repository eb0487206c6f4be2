"""Tests of vaecourse.plot: the tensor-to-array helper, the image grid and the shared
figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection

from vaecourse.plot import image_grid, latent_scatter, show_images, to_numpy

pytestmark = pytest.mark.usefixtures("isolated", "figures")


def random_images(n=10, h=28, w=28, seed=0):
    return torch.rand(
        n, 1, h, w, generator=torch.Generator().manual_seed(seed)
    )


# --- to_numpy -------------------------------------------------------------------------


def test_to_numpy_takes_tensors_with_a_graph_and_array_likes():
    x = torch.randn(3, 2, requires_grad=True)
    y = to_numpy(x * 2)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_array_equal(y, 2 * x.detach().numpy())
    np.testing.assert_array_equal(
        to_numpy([[1, 2], [3, 4]]), np.array([[1, 2], [3, 4]])
    )
    a = np.arange(4)
    assert to_numpy(a) is a


# --- image_grid -----------------------------------------------------------------------


def test_image_grid_shape_for_ten_images_four_per_row():
    """10 images of 28x28, 4 per row, pad 1: 3 rows and 4 columns of 29 pixels, plus 1."""
    grid = image_grid(random_images(10), nrow=4, pad=1)
    assert grid.shape == (3 * 29 + 1, 4 * 29 + 1)
    assert grid.dtype == np.float32


def test_image_grid_places_each_image_in_reading_order():
    """Image i sits in row i // nrow, column i % nrow; padding and empty cells hold
    pad_value."""
    images = random_images(10, h=5, w=7)
    grid = image_grid(images, nrow=4, pad=2, pad_value=-1.0)
    covered = np.zeros(grid.shape, dtype=bool)
    for i in range(10):
        r, c = divmod(i, 4)
        top, left = 2 + r * (5 + 2), 2 + c * (7 + 2)
        np.testing.assert_array_equal(
            grid[top : top + 5, left : left + 7], images[i, 0].numpy()
        )
        covered[top : top + 5, left : left + 7] = True
    assert (grid[~covered] == -1.0).all()
    assert (~covered).sum() == grid.size - 10 * 5 * 7


def test_image_grid_accepts_numpy_and_three_dimensional_input():
    """(N, H, W) arrays give the same grid as (N, 1, H, W) tensors."""
    images = random_images(6)
    np.testing.assert_array_equal(
        image_grid(images[:, 0].numpy(), nrow=3), image_grid(images, nrow=3)
    )


def test_image_grid_with_fewer_images_than_a_row():
    """With fewer images than nrow, the grid is one row just wide enough."""
    grid = image_grid(random_images(3, h=4, w=4), nrow=8, pad=0)
    assert grid.shape == (4, 12)


@pytest.mark.parametrize(
    "shape",
    [(10, 3, 28, 28), (28, 28), (2, 1, 1, 28, 28), (784,)],
    ids=["colour", "single-2d", "5d", "flat"],
)
def test_image_grid_refuses_other_shapes(shape):
    """Only (N, H, W) or (N, 1, H, W) grey images are accepted."""
    with pytest.raises(ValueError, match="shape"):
        image_grid(np.zeros(shape))


# --- show_images ----------------------------------------------------------------------


def test_show_images_draws_the_grid_in_gray_r():
    """show_images returns an Axes holding one image: the grid, in gray_r over [0, 1]."""
    images = random_images(10)
    ax = show_images(images, nrow=5, title="samples")
    assert isinstance(ax, Axes)
    assert len(ax.images) == 1
    shown = ax.images[0]
    np.testing.assert_array_equal(
        shown.get_array(), image_grid(images, 5, pad_value=0.0)
    )
    assert shown.get_cmap().name == "gray_r"
    assert shown.get_clim() == (0, 1)
    assert not ax.axison
    assert ax.get_title() == "samples"


def test_show_images_draws_on_a_given_axes():
    """With ax given, show_images draws there and returns it."""
    _, ax = plt.subplots()
    assert show_images(random_images(4), ax=ax) is ax
    assert len(ax.images) == 1


# --- latent_scatter -------------------------------------------------------------------


def test_latent_scatter_draws_the_codes_with_a_digit_legend():
    """One point per code at its coordinates, and a legend entry per digit present."""
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(50) % 10
    ax = latent_scatter(z, labels, title="codes")
    assert isinstance(ax, Axes)
    collections = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(collections) == 1
    np.testing.assert_allclose(collections[0].get_offsets(), z.numpy())
    np.testing.assert_array_equal(collections[0].get_array(), labels.numpy())
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "digit"
    assert len(legend.get_texts()) == 10
    assert ax.get_title() == "codes"


def test_latent_scatter_accepts_numpy_arrays():
    """NumPy codes and labels work as well as tensors."""
    ax = latent_scatter(np.zeros((4, 2)), np.array([0, 1, 2, 3]))
    assert len(ax.get_legend().get_texts()) == 4


@pytest.mark.parametrize("shape", [(20, 3), (20,), (20, 1)])
def test_latent_scatter_refuses_codes_that_are_not_two_dimensional(shape):
    """Codes must have shape (N, 2)."""
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        latent_scatter(torch.zeros(shape), torch.zeros(20, dtype=torch.long))
