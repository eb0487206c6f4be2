"""The chapter "Autoencoders": its models and losses, and its measuring tools.

- ``mlp`` and ``Autoencoder``: the MLP builder and the reference autoencoder
  that later chapters build on; ``ConvAutoencoder``, ``TiedAutoencoder`` and
  the linear autoencoder (``LinearAutoencoder``, ``linear_loss``,
  ``train_linear``) of the chapter's comparisons, and its two losses,
  ``bce_loss`` and ``mse_loss`` (the chapter writes them out; a test keeps the
  copies identical);
- ``psnr`` and ``code_bits``: distortion in decibels and the cost in bits of
  entropy-coding quantized codes, for rate-distortion curves;
- ``encoded_bits``: real JPEG and PNG byte counts (Pillow) of MNIST images;
- ``non_digits``: letters and shapes drawn in MNIST's format, for anomaly
  detection.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.train import quick_steps


def mlp(sizes, activation=nn.ReLU):
    """Linear layers of the given sizes with ``activation`` between them (not
    after the last): a plain ``nn.Sequential``, which the browser explorers can
    run as it is."""
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(
            f"mlp needs at least two layer sizes, all >= 1; got {sizes}"
        )
    layers = [nn.Linear(sizes[0], sizes[1])]
    for n_in, n_out in zip(sizes[1:-1], sizes[2:], strict=True):
        layers += [activation(), nn.Linear(n_in, n_out)]
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """An MLP autoencoder: 784 -> hidden... -> latent -> reversed(hidden)... ->
    784.

    ``activation`` between the layers and a linear code (no activation on the
    bottleneck). The decoder outputs 784 logits; ``decode`` turns them into
    images through a sigmoid, so every reconstructed pixel is in (0, 1).
    """

    def __init__(self, latent=32, hidden=(256,), activation=nn.ReLU):
        super().__init__()
        self.encoder = mlp([784, *hidden, latent], activation)
        self.decoder = mlp([latent, *reversed(hidden), 784], activation)

    def encode(self, x):
        return self.encoder(x.flatten(1))

    def decode(self, z):
        return torch.sigmoid(self.decoder(z)).view(-1, 1, 28, 28)

    def forward(self, x):
        return self.decode(self.encode(x))


class ConvAutoencoder(nn.Module):
    """Two strided convolutions down to a code of ``latent`` numbers, and two
    transposed convolutions back up to a 28 x 28 image in (0, 1)."""

    def __init__(self, latent=32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),  # 8 x 14 x 14
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),  # 16 x 7 x 7
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, 16 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (16, 7, 7)),
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),  # 8 x 14 x 14
            nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1),  # 1 x 28 x 28
            nn.Sigmoid(),
        )

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))


class TiedAutoencoder(nn.Module):
    """The vanilla autoencoder with tied weights, W' = Wᵀ: one matrix, used
    both ways."""

    def __init__(self, latent=32):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(latent, 784) / 784**0.5)
        self.bias = nn.Parameter(torch.zeros(latent))
        self.output_bias = nn.Parameter(torch.zeros(784))

    def encode(self, x):
        return x.flatten(1) @ self.weight.T + self.bias

    def decode(self, z):
        return torch.sigmoid(z @ self.weight + self.output_bias).view(
            -1, 1, 28, 28
        )

    def forward(self, x):
        return self.decode(self.encode(x))


def bce_loss(model, batch):
    """Binary cross-entropy per pixel (the loss), and the MSE (tracked)."""
    (x,) = batch
    x_hat = model(x)
    return {
        "loss": F.binary_cross_entropy(x_hat, x),
        "mse": F.mse_loss(x_hat, x),
    }


def mse_loss(model, batch):
    """Mean squared error per pixel (the loss), and the BCE (tracked)."""
    (x,) = batch
    x_hat = model(x)
    return {
        "loss": F.mse_loss(x_hat, x),
        "bce": F.binary_cross_entropy(x_hat, x),
    }


class LinearAutoencoder(nn.Module):
    """x_hat = mean + W_dec W_enc (x - mean): no activation, no bias."""

    def __init__(self, latent):
        super().__init__()
        # set from the data: train_linear
        self.register_buffer("mean", torch.zeros(784))
        self.encoder = nn.Linear(784, latent, bias=False)
        self.decoder = nn.Linear(latent, 784, bias=False)

    def forward(self, x):
        z = self.encoder(x.flatten(1) - self.mean)
        return (self.decoder(z) + self.mean).view_as(x)


def linear_loss(model, cov):
    """The linear autoencoder's per-pixel MSE on a whole data set, from the
    data's covariance ``cov``: O(k d²) per step instead of O(N k d)."""
    w_enc, w_dec = model.encoder.weight, model.decoder.weight
    enc_cov = w_enc @ cov  # k x d
    return (
        torch.trace(cov)
        - 2 * torch.trace(enc_cov @ w_dec)
        + torch.trace((w_dec.T @ w_dec) @ (enc_cov @ w_enc.T))
    ) / 784


def train_linear(model, images, *, steps, lr):
    """Full-batch Adam on ``linear_loss`` over ``images``, the learning rate
    decaying to zero along a cosine over ``steps`` steps; the model's mean is
    the images' mean."""
    # the mean and covariance in float64; the training on the model's device
    flat = images.flatten(1).double()
    model.mean.copy_(flat.mean(0).float())
    centred = flat - flat.mean(0)
    cov = (centred.T @ centred / len(flat)).float()
    cov = cov.to(next(model.parameters()).device)
    steps = quick_steps(steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history = []
    for step in range(1, steps + 1):
        loss = linear_loss(model, cov)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps:
            history.append({"step": step, "loss": loss.item()})
    return history


def psnr(mse) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error, for pixels in
    [0, 1]: 10 log10(1 / mse). Higher is better; +6 dB is half the
    root-mean-square error."""
    mse = float(mse)
    if not mse > 0:
        raise ValueError(
            f"PSNR needs a positive mean squared error, got {mse}"
        )
    return 10 * math.log10(1 / mse)


def code_bits(train_symbols, test_symbols) -> float:
    """Mean bits per test image of an ideal entropy coder for integer codes of
    shape (N, k), coding each of the k dimensions with its own probability
    table.

    The tables are counted on ``train_symbols`` (the coder is fixed before it
    sees the test set), with +1/2 added to every symbol between the smallest
    and largest value seen in either set, so an unseen symbol costs many bits
    but not infinitely many. The cost of a test image is sum_j -log2
    p_j(symbol_j); an arithmetic coder gets within 2 bits of this total for a
    whole message.
    """
    train = np.asarray(train_symbols)
    test = np.asarray(test_symbols)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ValueError(
            "code_bits needs two 2-D integer arrays (N, k) with the same k, "
            f"got shapes {train.shape} and {test.shape}"
        )
    if not (
        np.issubdtype(train.dtype, np.integer)
        and np.issubdtype(test.dtype, np.integer)
    ):
        raise ValueError(
            "code_bits counts integer symbols: quantize the codes first"
        )
    total = 0.0
    for j in range(train.shape[1]):
        low = min(train[:, j].min(), test[:, j].min())
        high = max(train[:, j].max(), test[:, j].max())
        counts = np.bincount(train[:, j] - low, minlength=high - low + 1) + 0.5
        p = counts / counts.sum()
        total += -np.log2(p[test[:, j] - low]).mean()
    return float(total)


def encoded_bits(images, fmt: str, **options) -> tuple[float, torch.Tensor]:
    """Encode images of shape (N, 1, 28, 28) in [0, 1] with Pillow as one tiled
    mosaic in ``fmt`` ("JPEG" or "PNG", with Pillow's save ``options`` such as
    ``quality``); return (bits per image of the real file, the decoded images).

    One mosaic (ceil(sqrt N) images per row, blank tiles at the end) spreads
    the file's header over all N images: a single 28 x 28 JPEG file spends most
    of its bytes on its header. Pixels are rounded to the 256 grey levels MNIST
    is stored in.
    """
    if fmt not in ("JPEG", "PNG"):
        raise ValueError(f"fmt must be 'JPEG' or 'PNG', got {fmt!r}")
    from PIL import Image

    x = (
        images.detach().cpu().numpy()
        if isinstance(images, torch.Tensor)
        else images
    )
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28) or len(x) == 0:
        raise ValueError(
            f"expected images of shape (N, 1, 28, 28), got {x.shape}"
        )
    n = len(x)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tiles = np.zeros((rows * cols, 28, 28), dtype=np.uint8)
    tiles[:n] = np.rint(np.clip(x[:, 0], 0, 1) * 255).astype(np.uint8)
    mosaic = tiles.reshape(rows, cols, 28, 28).transpose(0, 2, 1, 3)
    buffer = io.BytesIO()
    Image.fromarray(mosaic.reshape(rows * 28, cols * 28)).save(
        buffer, fmt, **options
    )
    decoded = np.asarray(
        Image.open(io.BytesIO(buffer.getvalue())).convert("L")
    )
    decoded = decoded.reshape(rows, 28, cols, 28).transpose(0, 2, 1, 3)
    decoded = decoded.reshape(rows * cols, 1, 28, 28)[:n]
    return 8 * buffer.getbuffer().nbytes / n, torch.from_numpy(
        decoded / 255.0
    ).float()


def mnist_frame(picture: np.ndarray) -> np.ndarray:
    """Put a grey picture (white ink on black, any size) into MNIST's format:
    crop to its ink, scale the longer side to 20 pixels keeping the aspect
    ratio (anti-aliased), and place it in a 28 x 28 frame with its centre of
    mass at pixel (14, 14), as MNIST did."""
    from PIL import Image

    picture = np.asarray(picture, dtype=np.float32)
    rows, cols = np.nonzero(picture > 0)
    if len(rows) == 0:
        raise ValueError("mnist_frame got a picture without ink")
    crop = picture[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20 / max(crop.shape)
    size = (
        max(1, round(crop.shape[1] * scale)),
        max(1, round(crop.shape[0] * scale)),
    )
    image = Image.fromarray(np.uint8(np.clip(crop, 0, 255))).resize(
        size, Image.LANCZOS
    )
    small = np.asarray(image, dtype=np.float32) / 255
    grid_r, grid_c = np.indices(small.shape)
    mass = small.sum()
    top = int(round(14 - (grid_r * small).sum() / mass))
    left = int(round(14 - (grid_c * small).sum() / mass))
    top = min(max(top, 0), 28 - small.shape[0])
    left = min(max(left, 0), 28 - small.shape[1])
    frame = np.zeros((28, 28), dtype=np.float32)
    frame[top : top + small.shape[0], left : left + small.shape[1]] = small
    return frame


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SHAPES = ("ellipse", "rectangle", "triangle", "cross", "disk")


def _draw_letter(draw, rng, font):
    char = LETTERS[rng.integers(len(LETTERS))]
    draw.text((48, 48), char, fill=255, font=font, anchor="mm")
    return char


def _draw_shape(draw, rng, _font):
    kind = SHAPES[rng.integers(len(SHAPES))]
    w, h = rng.uniform(25, 60, size=2)
    box = [48 - w / 2, 48 - h / 2, 48 + w / 2, 48 + h / 2]
    width = int(rng.integers(5, 8))
    if kind == "ellipse":
        draw.ellipse(box, outline=255, width=width)
    elif kind == "rectangle":
        draw.rectangle(box, outline=255, width=width)
    elif kind == "triangle":
        points = [
            (box[0], box[3]),
            (box[2], box[3]),
            (rng.uniform(box[0], box[2]), box[1]),
        ]
        draw.line([*points, points[0]], fill=255, width=width, joint="curve")
    elif kind == "cross":
        draw.line([(box[0], box[1]), (box[2], box[3])], fill=255, width=width)
        draw.line([(box[0], box[3]), (box[2], box[1])], fill=255, width=width)
    else:
        draw.ellipse(box, fill=255)
    return kind


def non_digits(
    kind: str, n: int, seed: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """``n`` images that are not digits, in MNIST's format (N, 1, 28, 28) in
    [0, 1], and what each one is: ``kind`` "letters" (A-Z and a-z in Pillow's
    default font, randomly rotated by up to 20 degrees) or "shapes" (outlines
    of ellipses, rectangles, triangles, crosses, and filled disks, of random
    size and thickness)."""
    from PIL import Image, ImageDraw, ImageFont

    draw_one = {"letters": _draw_letter, "shapes": _draw_shape}.get(kind)
    if draw_one is None:
        raise ValueError(f"kind must be 'letters' or 'shapes', got {kind!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    font = ImageFont.load_default(size=60)
    images, names = [], []
    for _ in range(n):
        canvas = Image.new("L", (96, 96), 0)
        names.append(draw_one(ImageDraw.Draw(canvas), rng, font))
        canvas = canvas.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR)
        images.append(mnist_frame(np.asarray(canvas)))
    return torch.from_numpy(np.stack(images)).unsqueeze(1), names


@torch.no_grad()
def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``model``, per image of the batch
    ``x``: a measure of compute that, unlike a wall time, does not depend on
    the machine. Counts the layers that do the arithmetic (Linear, Conv2d,
    ConvTranspose2d)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += (
                output.numel() * module.in_channels // module.groups * kh * kw
            )
        elif isinstance(module, nn.ConvTranspose2d):
            kh, kw = module.kernel_size
            total += (
                inputs[0].numel()
                * module.out_channels
                // module.groups
                * kh
                * kw
            )

    layers = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, layers)
    ]
    if not handles:
        raise ValueError(
            "count_macs found no Linear or convolution layer in the model"
        )
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return total // len(x)
