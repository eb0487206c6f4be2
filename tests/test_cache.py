"""Tests of vaecourse.cache: a recipe is trained once and loaded afterwards, and a bad entry
is never trusted. (What the key covers, which code and which settings, is tested in
test_keys.py.)"""

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
from vaecourse.book import ChapterClock
from vaecourse.cache import (
    MAGIC,
    Recipe,
    cache_key,
    entry_path,
    load_entry,
    save_entry,
)
from vaecourse.train import fit

pytestmark = pytest.mark.usefixtures("isolated")

HISTORY = [
    {"epoch": 1, "loss": 0.5, "seconds": 0.01},
    {"epoch": 2, "loss": 0.25, "seconds": 0.02},
]
STARTS: list[dict] = []  # the weights each training run started from, in order
THREADS: list[int] = []  # torch's number of threads while each run trained


@pytest.fixture(autouse=True)
def fresh_logs():
    STARTS.clear()
    THREADS.clear()


def small_net():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def trained_state():
    """The weights that fake_training gives every model."""
    return {
        k: torch.arange(v.numel(), dtype=v.dtype).reshape(v.shape) / 10 + i
        for i, (k, v) in enumerate(small_net().state_dict().items())
    }


def fake_training(model):
    """Sets known weights and logs what it started from."""
    STARTS.append({k: v.clone() for k, v in model.state_dict().items()})
    THREADS.append(torch.get_num_threads())
    model.load_state_dict(trained_state())
    return HISTORY


def numpy_history_training(model):
    fake_training(model)
    return [{"epoch": 1, "loss": np.float64(0.5)}]


def real_training(model, *, epochs=2):
    """A real, tiny fit on random data."""
    STARTS.append({k: v.clone() for k, v in model.state_dict().items()})
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(5))

    def loss_fn(m, batch):
        return {"loss": F.mse_loss(m(batch[0]), batch[0][:, :2])}

    return fit(
        model, loss_fn, (x,), epochs=epochs, batch_size=8, progress=False
    )


def diverging_training(model):
    x = torch.randn(16, 4)
    return fit(
        model,
        lambda m, batch: {"loss": m(batch[0]).sum() * float("nan")},
        (x,),
        epochs=1,
        batch_size=8,
        progress=False,
    )


def no_data():
    return {}


def recipe(train=fake_training, **changes) -> Recipe:
    return Recipe("tiny", small_net, train, no_data, **changes)


def initial_state(r: Recipe) -> dict:
    """The weights ``r.model()`` starts from: cache.load seeds torch first."""
    torch.manual_seed(r.seed)
    return r.model().state_dict()


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def valid_entry(r: Recipe, model) -> bool:
    """``r``'s entry loads and carries ``r``'s key and ``model``'s current weights."""
    payload = load_entry(entry_path(r))
    return payload["key"] == cache_key(r) and same_state(
        payload["state_dict"], model.state_dict()
    )


def write_entry(r: Recipe, **changes):
    """A well-formed entry at the path cache.load reads for ``r``, some fields changed."""
    payload = {
        "key": cache_key(r),
        "state_dict": {
            k: torch.full_like(v, 7.0) for k, v in initial_state(r).items()
        },
        "history": HISTORY,
        "train_seconds": 1.0,
    }
    payload.update(changes)
    path = entry_path(r)
    save_entry(path, payload)
    return path


def tmp_files(directory):
    return sorted(p.name for p in directory.rglob("*.tmp"))


# --- train once, load afterwards ------------------------------------------------------


def test_load_trains_once_then_loads(isolated):
    """The second load takes the weights, history and training time of the first from the
    entry, in eval mode, and both loads are recorded in cache.USED."""
    r = recipe(real_training)
    first = cache.load(r)
    assert len(STARTS) == 1
    assert not same_state(first.state_dict(), initial_state(r))  # it trained
    assert first.record.from_cache is False and first.record.path.exists()
    assert first.record.path.parent == isolated.checkpoint_dir
    assert first.record.path == entry_path(r)
    assert isinstance(first.record.train_seconds, float)

    second = cache.load(r)
    assert len(STARTS) == 1
    assert second is not first and second.record.from_cache is True
    assert second.record.path == first.record.path
    assert same_state(second.state_dict(), first.state_dict())
    assert second.record.history == first.record.history
    assert [row["epoch"] for row in second.record.history] == [1, 2]
    assert second.record.train_seconds == first.record.train_seconds
    assert not first.training and not second.training
    assert cache.USED[-2:] == [first.record, second.record]


def test_load_trains_from_the_seeded_model_with_the_data_and_settings(
    isolated,
):
    """Training runs train(model, **data(), **settings) on model() built after seeding
    torch with the recipe's seed."""
    r = recipe(real_training, settings={"epochs": 3}, seed=4)
    model = cache.load(r)
    assert same_state(STARTS[0], initial_state(r))
    assert not same_state(STARTS[0], initial_state(recipe(seed=5)))
    assert [row["epoch"] for row in model.record.history] == [1, 2, 3]


def weight_sum(tiny):
    """A data function that needs a trained model: hands it to the training as data."""
    return {"scale": float(tiny[0].weight.detach().sum())}


def train_with_scale(model, *, scale):
    fake_training(model)
    with torch.no_grad():
        model[0].bias.fill_(scale)
    return HISTORY


def test_needs_are_loaded_first_and_given_to_the_data_function():
    base = recipe()
    derived = Recipe(
        "derived", small_net, train_with_scale, weight_sum, needs=(base,)
    )
    model = cache.load(derived)
    assert len(STARTS) == 2  # the base, then the derived model
    scale = float(trained_state()["0.weight"].sum())
    assert torch.equal(model[0].bias, torch.full((3,), scale))
    assert [u.path.name.split("-")[0] for u in cache.USED[-2:]] == [
        "tiny",
        "derived",
    ]
    again = cache.load(derived)
    assert len(STARTS) == 2 and again.record.from_cache


def squares(m, batch):
    return {"loss": m(batch[0]).pow(2).mean()}


def printing_training(model):
    """A real fit that prints a line per epoch when progress is "lines"."""
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    return fit(model, squares, (x,), epochs=2, batch_size=8)


def test_training_prints_nothing_in_the_built_book(
    isolated, monkeypatch, capsys
):
    """The build prints progress as lines; a model trained by cache.load must
    not put them on the page, where a cached model would print nothing."""
    monkeypatch.setenv("VAECOURSE_PROGRESS", "lines")
    printing_training(small_net())
    assert "epoch 2/2" in capsys.readouterr().out  # fit itself prints
    trained = cache.load(recipe(printing_training))
    assert trained.record.from_cache is False
    assert capsys.readouterr().out == ""
    print("after")  # and printing works again afterwards
    assert capsys.readouterr().out == "after\n"


def test_training_runs_with_the_recipes_number_of_threads():
    before = torch.get_num_threads()
    cache.load(recipe(threads=1))
    assert THREADS == [1]
    assert torch.get_num_threads() == before


def test_a_failed_training_stores_nothing(isolated):
    r = recipe(diverging_training)
    with pytest.raises(FloatingPointError):
        cache.load(r)
    assert not entry_path(r).exists()
    assert (
        not isolated.checkpoint_dir.exists()
        or tmp_files(isolated.checkpoint_dir) == []
    )


def test_checkpoint_dir_defaults_next_to_the_mnist_cache(
    isolated, monkeypatch
):
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
    r = recipe()
    path = cache.load(r).record.path
    damage(path)

    with pytest.warns(UserWarning, match="unusable"):
        model = cache.load(r)

    assert len(STARTS) == 2
    assert model.record.from_cache is False
    assert same_state(model.state_dict(), trained_state())
    assert valid_entry(r, model)


def test_load_entry_detects_a_flipped_body_byte():
    """load_entry refuses a file whose body no longer matches its checksum."""
    path = write_entry(recipe())
    flip_body_byte(path)
    with pytest.raises(ValueError, match="checksum"):
        load_entry(path)


def test_entry_written_for_another_key_is_retrained():
    """A sound file at the right path but with another stored key is not loaded."""
    r = recipe()
    write_entry(r, key={**cache_key(r), "recipe": "0" * 64})
    with pytest.warns(UserWarning, match="another recipe or machine"):
        model = cache.load(r)
    assert len(STARTS) == 1 and not model.record.from_cache
    assert same_state(model.state_dict(), trained_state())
    assert valid_entry(r, model)


def test_state_dict_of_the_wrong_shape_is_retrained():
    """An entry whose weights do not fit the model is retrained, then holds good weights."""
    r = recipe()
    wrong = {k: torch.zeros(*v.shape, 2) for k, v in initial_state(r).items()}
    write_entry(r, state_dict=wrong)
    with pytest.warns(UserWarning, match="shapes differ"):
        model = cache.load(r)
    assert len(STARTS) == 1 and not model.record.from_cache
    assert same_state(model.state_dict(), trained_state())
    assert valid_entry(r, model)


def test_rejected_entry_does_not_leak_weights_into_retraining():
    """When an entry is rejected, training starts from the recipe's model as built, not
    from weights of the rejected entry (here: one tensor fits, another has the wrong
    shape)."""
    r = recipe()
    initial = initial_state(r)
    partly_fitting = {k: torch.full_like(v, 99.0) for k, v in initial.items()}
    partly_fitting["2.bias"] = torch.zeros(5)
    write_entry(r, state_dict=partly_fitting)
    with pytest.warns(UserWarning, match="unusable"):
        cache.load(r)
    assert len(STARTS) == 1
    assert same_state(STARTS[0], initial)


def test_entry_without_a_field_is_retrained():
    """A sound file whose payload lacks the history is retrained."""
    r = recipe()
    save_entry(
        entry_path(r), {"key": cache_key(r), "state_dict": initial_state(r)}
    )
    with pytest.warns(UserWarning, match="unusable"):
        model = cache.load(r)
    assert len(STARTS) == 1
    assert valid_entry(r, model)


def test_history_with_numpy_numbers_is_cached():
    """A train function may return NumPy numbers in its history: the entry it leaves must
    load on the next call, not be rejected and retrained every time."""
    r = recipe(numpy_history_training)
    cache.load(r)
    second = cache.load(r)
    assert len(STARTS) == 1
    assert second.record.from_cache
    assert second.record.history == [{"epoch": 1, "loss": 0.5}]
    assert type(second.record.history[0]["loss"]) is float


# --- safe reading and writing ---------------------------------------------------------


def test_entries_are_written_without_leftover_temporary_files(isolated):
    """Writes go through a temporary file that is renamed: none remains afterwards."""
    r = recipe()
    path = cache.load(r).record.path
    truncate(path)
    with pytest.warns(UserWarning):
        cache.load(r)
    assert tmp_files(isolated.checkpoint_dir) == []
    assert [p.name for p in isolated.checkpoint_dir.iterdir()] == [path.name]


def test_failed_write_keeps_the_old_entry_whole(isolated, monkeypatch):
    """If the final rename fails, the previous file is untouched and no .tmp file remains."""
    path = write_entry(recipe())
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


def test_load_retrains_an_entry_with_python_objects(tripwire):
    """An otherwise valid entry that carries a pickled callable is retrained, never run."""
    r = recipe()
    write_entry(r, history=[tripwire.payload])
    with pytest.warns(UserWarning, match="unusable"):
        model = cache.load(r)
    assert not tripwire.tripped()
    assert len(STARTS) == 1 and not model.record.from_cache
    assert valid_entry(r, model)


# --- the device ----------------------------------------------------------------------


def test_the_device_kind_is_keyed_off_the_cpu_only(isolated, monkeypatch):
    """CPU entries keep the key they had before devices were keyed; weights trained on a
    GPU get another key and path, so they never stand in for the CPU ones."""
    r = recipe(real_training)
    on_cpu = cache_key(r)
    assert "device" not in on_cpu
    monkeypatch.setattr(cache, "pick_device", lambda: torch.device("cuda"))
    on_gpu = cache_key(r)
    assert on_gpu == {**on_cpu, "device": "cuda"}
    path_gpu = entry_path(r)
    monkeypatch.setattr(cache, "pick_device", lambda: torch.device("cpu"))
    assert entry_path(r) != path_gpu


def test_load_puts_the_model_on_the_picked_device(isolated, monkeypatch):
    """cache.load moves the model to pick_device() before training and loading; here the
    'device' is the CPU under another name, which is all this machine has."""
    moved = []
    real_to = nn.Module.to

    def spy(self, *args, **kwargs):
        moved.append(args[0] if args else kwargs.get("device"))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", spy)
    monkeypatch.setattr(cache, "pick_device", lambda: torch.device("cpu", 0))
    model = cache.load(recipe(real_training))
    assert torch.device("cpu", 0) in moved
    assert next(model.parameters()).device.type == "cpu"


# --- remembered evaluations -------------------------------------------------------------

CALLS: list[str] = []


def scaled_output(model, x, scale=1.0):
    """An evaluation with a model, a tensor and a plain argument."""
    CALLS.append("scaled_output")
    with torch.no_grad():
        return {"out": model(x) * scale, "mean": float(x.mean())}


def test_remember_computes_once_then_reads_the_stored_result(isolated):
    CALLS.clear()
    model, x = cache.load(recipe()), torch.ones(3, 4)
    first = cache.remember(scaled_output, model, x, scale=2.0)
    second = cache.remember(scaled_output, model, x, scale=2.0)
    assert CALLS == ["scaled_output"]
    torch.testing.assert_close(second["out"], model(x).detach() * 2)
    assert second["mean"] == first["mean"] == 1.0
    files = list((isolated.checkpoint_dir / "results").iterdir())
    assert [p.name.split("-")[0] for p in files] == ["scaled_output"]
    # recorded like models, so that a chapter's cold time counts the first
    # computation once more when the result comes from the cache
    computed, read = cache.USED[-2:]
    assert not computed.from_cache and read.from_cache
    stored = load_entry(files[0])["seconds"]
    assert read.train_seconds == computed.train_seconds == stored
    clock = ChapterClock()
    cache.remember(scaled_output, model, x, scale=2.0)
    clock.seconds = lambda: 0.0  # this run's own time aside
    assert clock.cold_seconds() == stored


@pytest.mark.parametrize(
    "change",
    ["tensor", "plain", "model", "code"],
)
def test_remember_recomputes_when_anything_it_depends_on_changes(
    isolated, change, monkeypatch
):
    CALLS.clear()
    model, x = cache.load(recipe()), torch.ones(3, 4)
    cache.remember(scaled_output, model, x, scale=2.0)
    scale = 2.0
    if change == "tensor":
        x = x.clone()
        x[0, 0] = 1.5
    elif change == "plain":
        scale = 3.0
    elif change == "model":  # another training: other weights
        model = cache.load(recipe(train=real_training))
    else:
        real = cache.code_text

        def edited(source):
            # as if scaled_output's body had been edited
            text = real(source)
            return text + "edited" if "scaled_output" in source else text

        monkeypatch.setattr(cache, "code_text", edited)
    cache.remember(scaled_output, model, x, scale=scale)
    assert CALLS == ["scaled_output"] * 2


def test_remember_keys_a_model_by_its_weights_not_its_name(isolated):
    # a model changed in place after loading is measured again
    CALLS.clear()
    model, x = cache.load(recipe()), torch.ones(3, 4)
    cache.remember(scaled_output, model, x)
    with torch.no_grad():
        model[0].bias += 1.0
    changed = cache.remember(scaled_output, model, x)
    assert CALLS == ["scaled_output"] * 2
    torch.testing.assert_close(changed["out"], model(x).detach())


@pytest.mark.parametrize("damage", ["truncate", "flip", "other key"])
def test_a_damaged_stored_result_is_reported_and_recomputed(isolated, damage):
    CALLS.clear()
    model, x = cache.load(recipe()), torch.ones(3, 4)
    expected = cache.remember(scaled_output, model, x)
    (path,) = (isolated.checkpoint_dir / "results").iterdir()
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        path.write_bytes(blob[:-10] + bytes([blob[-10] ^ 1]) + blob[-9:])
    else:
        save_entry(path, {"key": "another", "result": {"out": torch.zeros(1)}})
    with pytest.warns(UserWarning, match="unusable"):
        again = cache.remember(scaled_output, model, x)
    assert CALLS == ["scaled_output"] * 2
    torch.testing.assert_close(again["out"], expected["out"])
    assert load_entry(path)["result"]["mean"] == 1.0
