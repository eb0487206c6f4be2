"""Tests of vaecourse.cache: train once, load afterwards, never trust a bad entry."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaecourse import cache
from vaecourse.cache import (
    MAGIC,
    entry_path,
    key_material,
    load_entry,
    save_entry,
    train_cached,
)
from vaecourse.train import fit

pytestmark = pytest.mark.usefixtures("isolated")

NAME = "tiny"
CONFIG = {"epochs": 2, "lr": 0.01, "seed": 0}
HISTORY = [
    {"epoch": 1, "loss": 0.5, "seconds": 0.01},
    {"epoch": 2, "loss": 0.25, "seconds": 0.02},
]


def new_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def trained_state():
    """The weights that FakeTraining gives every model."""
    return {
        k: torch.arange(v.numel(), dtype=v.dtype).reshape(v.shape) / 10 + i
        for i, (k, v) in enumerate(new_model().state_dict().items())
    }


class FakeTraining:
    """A train function that sets known weights, counts its calls and records the weights
    it started from."""

    def __init__(self, history=HISTORY):
        self.history = history
        self.calls = 0
        self.started_from = []

    def __call__(self, model):
        self.calls += 1
        self.started_from.append({k: v.clone() for k, v in model.state_dict().items()})
        model.load_state_dict(trained_state())
        return self.history


class RealTraining(FakeTraining):
    """A real, tiny fit on random data."""

    def __call__(self, model):
        self.calls += 1
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(5))

        def loss_fn(m, batch):
            return {"loss": F.mse_loss(m(batch[0]), batch[0][:, :2])}

        return fit(model, loss_fn, (x,), epochs=2, batch_size=8, progress=False)


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def valid_entry(path, model):
    """The entry at ``path`` loads and carries ``model``'s key and current weights."""
    payload = load_entry(path)
    expected_key = key_material(NAME, model, CONFIG)
    return payload["key"] == expected_key and same_state(
        payload["state_dict"], model.state_dict()
    )


def write_entry(model, **changes):
    """A well-formed entry at the path train_cached will read, with some fields changed."""
    path = entry_path(NAME, model, CONFIG)
    payload = {
        "key": key_material(NAME, model, CONFIG),
        "state_dict": {
            k: torch.full_like(v, 7.0) for k, v in model.state_dict().items()
        },
        "history": HISTORY,
        "train_seconds": 1.0,
    }
    payload.update(changes)
    save_entry(path, payload)
    return path


def tmp_files(directory):
    return sorted(p.name for p in directory.rglob("*.tmp"))


# --- train once, load afterwards ------------------------------------------------------


def test_train_cached_trains_once_then_loads(isolated):
    """The second call loads the weights, history and training time of the first."""
    training = RealTraining()
    first_model = new_model(seed=0)
    first = train_cached(NAME, first_model, training, CONFIG)
    assert training.calls == 1
    assert first.from_cache is False and first.path.exists()
    assert first.path.parent == isolated.checkpoint_dir

    second_model = new_model(seed=1)
    assert not same_state(second_model.state_dict(), first_model.state_dict())
    second = train_cached(NAME, second_model, training, CONFIG)

    assert training.calls == 1
    assert second.from_cache is True
    assert second.path == first.path
    assert same_state(second_model.state_dict(), first_model.state_dict())
    assert second.history == first.history and len(second.history) == 2
    assert second.train_seconds == first.train_seconds
    assert not second_model.training
    assert cache.USED[-2:] == [first, second]


def test_different_config_gets_its_own_entry(isolated):
    """Another configuration names another file and trains again."""
    training = FakeTraining()
    a = train_cached(NAME, new_model(), training, CONFIG)
    b = train_cached(NAME, new_model(), training, {**CONFIG, "lr": 0.02})
    assert training.calls == 2
    assert a.path != b.path and a.path.exists() and b.path.exists()
    assert not b.from_cache


@pytest.mark.parametrize(
    "change",
    ["name", "config", "architecture", "version", "quick"],
)
def test_entry_path_depends_on_everything_in_the_key(monkeypatch, change):
    """Name, config, architecture, package version and quick mode each change the file."""
    before = entry_path(NAME, new_model(), CONFIG)
    name, model, config = NAME, new_model(), CONFIG
    if change == "name":
        name = "other"
    elif change == "config":
        config = {**CONFIG, "epochs": 3}
    elif change == "architecture":
        model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    elif change == "version":
        monkeypatch.setattr(cache, "__version__", "99.0")
    else:
        monkeypatch.setenv("VAECOURSE_QUICK", "1")
    assert entry_path(name, model, config) != before


def test_quick_and_full_mode_use_different_entries(monkeypatch):
    """Quick-mode weights never stand in for full training, and VAECOURSE_QUICK=0 is full."""
    full = entry_path(NAME, new_model(), CONFIG)
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    quick = entry_path(NAME, new_model(), CONFIG)
    monkeypatch.setenv("VAECOURSE_QUICK", "0")
    assert quick != full
    assert entry_path(NAME, new_model(), CONFIG) == full


def test_checkpoint_dir_defaults_next_to_the_mnist_cache(isolated, monkeypatch):
    """Without VAECOURSE_CHECKPOINTS, entries go to checkpoints/ beside the MNIST cache."""
    assert cache.checkpoint_dir() == isolated.checkpoint_dir
    monkeypatch.delenv("VAECOURSE_CHECKPOINTS")
    assert cache.checkpoint_dir() == isolated.data_dir.parent / "checkpoints"


# --- bad entries are retrained --------------------------------------------------------


def truncate(path):
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) * 2 // 3])


def flip_body_byte(path):
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0x40
    path.write_bytes(bytes(blob))


def flip_digest_byte(path):
    blob = bytearray(path.read_bytes())
    position = len(MAGIC) + 3
    blob[position] = ord("0") if blob[position] != ord("0") else ord("1")
    path.write_bytes(bytes(blob))


def garbage(path):
    path.write_bytes(b"this is not a checkpoint at all\n" * 20)


def empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "damage", [truncate, flip_body_byte, flip_digest_byte, garbage, empty]
)
def test_damaged_entry_is_reported_and_retrained(damage):
    """A truncated, altered, foreign or empty file is warned about, retrained and rewritten."""
    training = FakeTraining()
    path = train_cached(NAME, new_model(), training, CONFIG).path
    damage(path)

    model = new_model(seed=3)
    with pytest.warns(UserWarning, match="unusable"):
        result = train_cached(NAME, model, training, CONFIG)

    assert training.calls == 2
    assert result.from_cache is False
    assert same_state(model.state_dict(), trained_state())
    assert valid_entry(path, model)


def test_load_entry_detects_a_flipped_body_byte(isolated):
    """load_entry refuses a file whose body no longer matches its checksum."""
    path = write_entry(new_model())
    flip_body_byte(path)
    with pytest.raises(ValueError, match="checksum"):
        load_entry(path)


def test_entry_written_for_another_key_is_retrained():
    """A sound file at the right path but with another stored key is not loaded."""
    model = new_model()
    other_key = {**key_material(NAME, model, CONFIG), "config": {"epochs": 99}}
    path = write_entry(model, key=other_key)
    training = FakeTraining()
    with pytest.warns(UserWarning, match="another configuration"):
        result = train_cached(NAME, model, training, CONFIG)
    assert training.calls == 1 and not result.from_cache
    assert same_state(model.state_dict(), trained_state())
    assert valid_entry(path, model)


def test_state_dict_of_the_wrong_shape_is_retrained():
    """An entry whose weights do not fit the model is retrained, then holds good weights."""
    model = new_model()
    wrong = {k: torch.zeros(*v.shape, 2) for k, v in model.state_dict().items()}
    path = write_entry(model, state_dict=wrong)
    training = FakeTraining()
    with pytest.warns(UserWarning, match="shapes differ"):
        result = train_cached(NAME, model, training, CONFIG)
    assert training.calls == 1 and not result.from_cache
    assert same_state(model.state_dict(), trained_state())
    assert valid_entry(path, model)


def test_rejected_entry_does_not_leak_weights_into_retraining():
    """When an entry is rejected, training starts from the model as it was given, not from
    weights of the rejected entry (here: one tensor fits, another has the wrong shape)."""
    model = new_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    partly_fitting = {k: torch.full_like(v, 99.0) for k, v in initial.items()}
    partly_fitting["2.bias"] = torch.zeros(5)
    write_entry(model, state_dict=partly_fitting)
    training = FakeTraining()
    with pytest.warns(UserWarning, match="unusable"):
        train_cached(NAME, model, training, CONFIG)
    assert training.calls == 1
    assert same_state(training.started_from[0], initial)


def test_entry_without_a_field_is_retrained():
    """A sound file whose payload lacks the history is retrained."""
    model = new_model()
    path = entry_path(NAME, model, CONFIG)
    save_entry(
        path,
        {"key": key_material(NAME, model, CONFIG), "state_dict": model.state_dict()},
    )
    training = FakeTraining()
    with pytest.warns(UserWarning, match="unusable"):
        train_cached(NAME, model, training, CONFIG)
    assert training.calls == 1
    assert valid_entry(path, model)


def test_history_with_numpy_numbers_is_cached():
    """A train function may return NumPy numbers in its history: the entry it leaves must
    load on the next call, not be rejected and retrained every time."""
    training = FakeTraining(history=[{"epoch": 1, "loss": np.float64(0.5)}])
    train_cached(NAME, new_model(), training, CONFIG)
    second = train_cached(NAME, new_model(), training, CONFIG)
    assert training.calls == 1
    assert second.from_cache
    assert second.history == [{"epoch": 1, "loss": 0.5}]


# --- safe reading and writing ---------------------------------------------------------


def test_entries_are_written_without_leftover_temporary_files(isolated):
    """Writes go through a temporary file that is renamed: none remains afterwards."""
    training = FakeTraining()
    path = train_cached(NAME, new_model(), training, CONFIG).path
    truncate(path)
    with pytest.warns(UserWarning):
        train_cached(NAME, new_model(), training, CONFIG)
    assert tmp_files(isolated.checkpoint_dir) == []
    assert [p.name for p in isolated.checkpoint_dir.iterdir()] == [path.name]


def test_failed_write_keeps_the_old_entry_whole(isolated, monkeypatch):
    """If the final rename fails, the previous file is untouched and no .tmp file remains."""
    model = new_model()
    path = write_entry(model)
    before = path.read_bytes()

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        save_entry(path, {"key": "new", "state_dict": {}})
    assert path.read_bytes() == before
    assert tmp_files(isolated.checkpoint_dir) == []


def test_load_entry_refuses_arbitrary_python_objects(isolated, tripwire):
    """load_entry reads with weights_only: a pickled callable is refused, not run."""
    path = isolated.checkpoint_dir / "evil.pt"
    save_entry(path, {"state_dict": {}, "history": [tripwire.payload]})
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        load_entry(path)
    assert not tripwire.tripped()
    # Control: a plain torch.load of the same body would have run the payload.
    body = path.read_bytes()[len(MAGIC) + 65 :]
    torch.load(io.BytesIO(body), weights_only=False)
    assert tripwire.tripped()


def test_train_cached_retrains_an_entry_with_python_objects(tripwire):
    """An otherwise valid entry that carries a pickled callable is retrained, never run."""
    model = new_model()
    path = write_entry(model, history=[tripwire.payload])
    training = FakeTraining()
    with pytest.warns(UserWarning, match="unusable"):
        result = train_cached(NAME, model, training, CONFIG)
    assert not tripwire.tripped()
    assert training.calls == 1 and not result.from_cache
    assert valid_entry(path, model)
