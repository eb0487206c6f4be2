"""Tests of vaecourse.train: the fit loop, evaluation, quick mode, seeds and device."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaecourse.train import (
    QUICK_BATCHES,
    evaluate,
    fit,
    pick_device,
    quick_mode,
    seed_everything,
)

pytestmark = pytest.mark.usefixtures("isolated")


def regression_data(n=256):
    """y = x @ w + b exactly, for a linear model to learn."""
    gen = torch.Generator().manual_seed(100)
    x = torch.randn(n, 3, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    return x, y


def mse(model, batch):
    x, y = batch
    return {"loss": F.mse_loss(model(x), y)}


def reconstruction(model, batch):
    (x,) = batch
    error = F.mse_loss(model(x), x)
    return {"loss": error, "mse": error, "l1": (model(x) - x).abs().mean()}


def tiny_autoencoder():
    return nn.Sequential(nn.Linear(8, 3), nn.Tanh(), nn.Linear(3, 8))


class CountingLoss:
    """Wraps a loss function and counts the batches it sees."""

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn
        self.calls = 0

    def __call__(self, model, batch):
        self.calls += 1
        return self.loss_fn(model, batch)


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# --- fit ------------------------------------------------------------------------------


def test_fit_learns_a_linear_regression():
    """On an exact linear relation, the training loss falls by more than a factor of 100."""
    seed_everything(0)
    model = nn.Linear(3, 1)
    history = fit(
        model, mse, regression_data(), epochs=30, batch_size=32, lr=0.05, progress=False
    )
    assert history[-1]["loss"] < history[0]["loss"] / 100


def test_fit_trains_a_tiny_autoencoder():
    """An 8-3-8 autoencoder on data of rank 3 reduces its reconstruction error."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(256, 3, generator=gen) @ torch.randn(3, 8, generator=gen)
    seed_everything(0)
    model = tiny_autoencoder()
    history = fit(
        model, reconstruction, (x,), epochs=20, batch_size=32, lr=0.01, progress=False
    )
    assert history[-1]["mse"] < history[0]["mse"] / 2


def test_history_has_one_row_per_epoch_with_every_term():
    """Each epoch gives a row with its number, every loss term and its wall time."""
    x = torch.randn(40, 8)
    history = fit(
        tiny_autoencoder(),
        reconstruction,
        (x,),
        epochs=3,
        batch_size=16,
        progress=False,
    )
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for row in history:
        assert set(row) == {"epoch", "loss", "mse", "l1", "images", "seconds"}
        assert row["seconds"] >= 0
        assert row["images"] == 40
        assert all(np.isfinite(v) for v in row.values())


def test_history_has_val_terms_for_val_data():
    """With val_data, each row also holds val_ terms: the evaluation of that epoch's model."""
    x, val = torch.randn(40, 8), torch.randn(30, 8)
    model = tiny_autoencoder()
    history = fit(
        model, reconstruction, (x,), epochs=2, val_data=(val,), progress=False
    )
    for row in history:
        assert set(row) == {
            "epoch",
            "loss",
            "mse",
            "l1",
            "val_loss",
            "val_mse",
            "val_l1",
            "images",
            "seconds",
        }
    final = evaluate(model, reconstruction, (val,))
    assert history[-1]["val_mse"] == pytest.approx(final["mse"])
    assert history[-1]["val_mse"] != pytest.approx(history[0]["val_mse"])


def test_history_terms_are_means_weighted_by_batch_size():
    """With batches of 4, 4 and 2 items, an epoch's term is the mean over the 10 items."""
    x = torch.arange(10, dtype=torch.float32).unsqueeze(1)

    def loss_fn(model, batch):
        (xb,) = batch
        return {"loss": model(xb).pow(2).mean(), "x": xb.mean()}

    history = fit(
        nn.Linear(1, 1), loss_fn, (x,), epochs=1, batch_size=4, progress=False
    )
    assert history[0]["x"] == pytest.approx(4.5)


def test_fit_is_deterministic_for_a_seed():
    """The same seeds give bit-identical weights; another fit seed gives other weights."""
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))

    def trained(fit_seed):
        seed_everything(0)
        model = tiny_autoencoder()
        fit(
            model,
            reconstruction,
            (x,),
            epochs=2,
            batch_size=8,
            seed=fit_seed,
            progress=False,
        )
        return weights(model)

    first = trained(0)
    assert same_weights(first, trained(0))
    assert not same_weights(first, trained(1))


@pytest.mark.parametrize("every, halvings", [("epoch", 3), ("batch", 12)])
def test_fit_steps_the_scheduler_once_per_epoch_or_per_batch(every, halvings):
    """A StepLR halving the rate at every step, over 3 epochs of 4 batches: halved 3 times
    when stepped per epoch (the default), 12 times with schedule_every="batch"."""
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    fit(
        model,
        mse,
        regression_data(32),
        epochs=3,
        batch_size=8,
        optimizer=optimizer,
        scheduler=scheduler,
        schedule_every=every,
        progress=False,
    )
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**halvings)


def test_fit_rejects_an_unknown_schedule_interval():
    with pytest.raises(ValueError, match='"epoch" or "batch"'):
        fit(nn.Linear(3, 1), mse, regression_data(8), epochs=1, schedule_every="step")


def test_fit_stops_with_a_clear_error_before_a_nan_loss_reaches_the_weights():
    """A diverged run raises (so train_cached caches nothing) and the weights keep their
    last finite values."""
    model = nn.Linear(3, 1)
    calls = []

    def diverging(model, batch):
        calls.append(1)
        loss = mse(model, batch)["loss"]
        return {"loss": loss * float("nan") if len(calls) == 3 else loss}

    with pytest.raises(FloatingPointError, match="epoch 1, batch 3.*learning rate"):
        fit(
            model,
            diverging,
            regression_data(64),
            epochs=2,
            batch_size=8,
            progress=False,
        )
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fit_leaves_the_model_in_eval_mode():
    """After fit, the model is in evaluation mode (dropout off)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    fit(model, mse, regression_data(16), epochs=1, progress=False)
    assert not model.training


# --- quick mode -----------------------------------------------------------------------


def test_quick_mode_runs_one_epoch_of_at_most_quick_batches(monkeypatch):
    """VAECOURSE_QUICK=1: one epoch, cut at QUICK_BATCHES batches."""
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    x = torch.randn(4 * (QUICK_BATCHES + 5), 8)
    loss = CountingLoss(reconstruction)
    history = fit(
        tiny_autoencoder(), loss, (x,), epochs=5, batch_size=4, progress=False
    )
    assert loss.calls == QUICK_BATCHES
    assert len(history) == 1


def test_quick_mode_keeps_a_shorter_epoch_whole(monkeypatch):
    """In quick mode, an epoch shorter than QUICK_BATCHES runs all its batches, once."""
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    loss = CountingLoss(reconstruction)
    history = fit(
        tiny_autoencoder(),
        loss,
        (torch.randn(10, 8),),
        epochs=4,
        batch_size=4,
        progress=False,
    )
    assert loss.calls == 3
    assert len(history) == 1


def test_quick_zero_is_full_mode(monkeypatch):
    """VAECOURSE_QUICK=0 trains every batch of every epoch."""
    monkeypatch.setenv("VAECOURSE_QUICK", "0")
    n_batches = QUICK_BATCHES + 5
    loss = CountingLoss(reconstruction)
    x = torch.randn(4 * n_batches, 8)
    history = fit(
        tiny_autoencoder(), loss, (x,), epochs=2, batch_size=4, progress=False
    )
    assert loss.calls == 2 * n_batches
    assert len(history) == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("yes", True), ("true", True), ("0", False), ("false", False),
     ("No", False), ("", False), (" 0 ", False)],
)  # fmt: skip
def test_quick_mode_reads_the_environment(monkeypatch, value, expected):
    """Quick mode is on for a truthy VAECOURSE_QUICK, off for 0/false/no/empty."""
    monkeypatch.setenv("VAECOURSE_QUICK", value)
    assert quick_mode() is expected


def test_quick_mode_is_off_when_unset(monkeypatch):
    """Without VAECOURSE_QUICK, quick mode is off."""
    monkeypatch.delenv("VAECOURSE_QUICK", raising=False)
    assert quick_mode() is False


# --- evaluate -------------------------------------------------------------------------


def test_evaluate_weights_batches_by_their_size():
    """With batches of 4, 4 and 2 items, evaluate returns the mean over the 10 items,
    not the plain mean of the three batch means."""
    x = torch.arange(10, dtype=torch.float32).unsqueeze(1)

    def loss_fn(model, batch):
        (xb,) = batch
        return {"loss": xb.mean(), "square": xb.pow(2).mean()}

    result = evaluate(nn.Linear(1, 1), loss_fn, (x,), batch_size=4)
    assert result["loss"] == pytest.approx(float(x.mean()))
    assert result["square"] == pytest.approx(float(x.pow(2).mean()))
    plain_mean_of_batches = (1.5 + 5.5 + 8.5) / 3
    assert result["loss"] != pytest.approx(plain_mean_of_batches)


def test_evaluate_runs_in_eval_mode_without_gradients():
    """evaluate switches to eval mode and no_grad, then restores the training mode."""
    seen = []

    def loss_fn(model, batch):
        seen.append((model.training, torch.is_grad_enabled()))
        return {"loss": model(batch[0]).mean()}

    model = nn.Linear(2, 1)
    model.train()
    evaluate(model, loss_fn, (torch.randn(5, 2),), batch_size=2)
    assert seen == [(False, False)] * 3
    assert model.training


# --- seeds and device -----------------------------------------------------------------


def test_seed_everything_makes_draws_repeatable():
    """After the same seed, torch, NumPy and random draw the same numbers."""

    def draws():
        gen = seed_everything(123)
        return (
            torch.randn(5),
            np.random.rand(5),
            random.random(),
            torch.randn(5, generator=gen),
        )

    a, b = draws(), draws()
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert torch.equal(a[3], b[3])
    assert torch.equal(
        a[3], torch.randn(5, generator=torch.Generator().manual_seed(123))
    )
    seed_everything(124)
    assert not torch.equal(torch.randn(5), a[0])


def test_pick_device_is_cpu_without_accelerators(monkeypatch):
    """With neither CUDA nor MPS, the device is the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")


def test_pick_device_is_cpu_on_this_machine():
    """This test machine has no accelerator: the CPU is picked."""
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    assert pick_device().type == "cpu"


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps")]
)
def test_pick_device_prefers_cuda_then_mps(monkeypatch, cuda, mps, expected):
    """CUDA wins over MPS, MPS over the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device().type == expected


def test_threads_sets_the_number_of_threads_and_restores_it_even_after_an_error():
    from vaecourse.train import threads

    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), threads(1):
        raise RuntimeError("interrupted")
    assert torch.get_num_threads() == before
