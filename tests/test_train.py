"""Tests of vaecourse.train: the fit loop, its learning-rate schedule and time limit,
evaluation, quick mode, seeds, threads and the fast dtype."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaecourse import train
from vaecourse.train import (
    QUICK_BATCHES,
    evaluate,
    fast_dtype,
    fit,
    quick_mode,
    quick_steps,
    seed_everything,
    threads,
    total_steps,
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
        model,
        mse,
        regression_data(),
        epochs=30,
        batch_size=32,
        lr=0.05,
        progress=False,
    )
    assert history[-1]["loss"] < history[0]["loss"] / 100


def test_fit_trains_a_tiny_autoencoder():
    """An 8-3-8 autoencoder on data of rank 3 reduces its reconstruction error."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(256, 3, generator=gen) @ torch.randn(3, 8, generator=gen)
    seed_everything(0)
    model = tiny_autoencoder()
    history = fit(
        model,
        reconstruction,
        (x,),
        epochs=20,
        batch_size=32,
        lr=0.01,
        progress=False,
    )
    assert history[-1]["mse"] < history[0]["mse"] / 2


def test_history_has_one_row_per_epoch_with_every_term():
    """Each epoch gives a row with its number, every loss term, the images seen, the
    learning rate and its wall time."""
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
        assert set(row) == {
            "epoch",
            "loss",
            "mse",
            "l1",
            "images",
            "lr",
            "seconds",
        }
        assert isinstance(row["seconds"], float)
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
            "lr",
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


def test_fit_stops_with_a_clear_error_before_a_nan_loss_reaches_the_weights():
    """A diverged run raises (so cache.load stores nothing) and the weights keep their
    last finite values."""
    model = nn.Linear(3, 1)
    calls = []

    def diverging(model, batch):
        calls.append(1)
        loss = mse(model, batch)["loss"]
        return {"loss": loss * float("nan") if len(calls) == 3 else loss}

    with pytest.raises(
        FloatingPointError, match="epoch 1, batch 3.*learning rate"
    ):
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


# --- the learning rate: constant, or one cycle ------------------------------------------


def check_one_cycle(rates, lr, steps, warmup):
    """``rates`` (one per step) rise from lr / 25 to ``lr`` near step ``warmup · steps``,
    then fall to almost 0 at the last step, monotonically both ways."""
    assert len(rates) == steps
    peak = max(range(steps), key=rates.__getitem__)
    assert rates[peak] == pytest.approx(lr)
    assert abs(peak - max(warmup, 2 / steps) * steps) <= 1.5
    assert rates[0] == pytest.approx(lr / 25)
    assert rates[-1] < lr / 1000
    assert rates[: peak + 1] == sorted(rates[: peak + 1])
    assert rates[peak:] == sorted(rates[peak:], reverse=True)


def test_fit_without_warmup_keeps_the_learning_rate_constant(learning_rates):
    fit(
        nn.Linear(3, 1),
        mse,
        regression_data(64),
        epochs=2,
        batch_size=8,
        lr=0.03,
        progress=False,
    )
    assert learning_rates == [0.03] * 16


@pytest.mark.parametrize("warmup", [0.3, 0.02])
def test_fit_one_cycle_spans_all_the_steps_of_all_the_epochs(
    full_mode, learning_rates, warmup
):
    """3 epochs of 10 batches: one cycle over the 30 steps (warmup 0.02 of 30 is less
    than a step: at least two warm-up steps)."""
    history = fit(
        nn.Linear(3, 1),
        mse,
        regression_data(80),
        epochs=3,
        batch_size=8,
        lr=0.01,
        warmup=warmup,
        progress=False,
    )
    check_one_cycle(learning_rates, 0.01, 30, warmup)
    # each row's lr is the rate after the epoch's last step: the next step's rate
    assert [row["lr"] for row in history[:2]] == [
        learning_rates[10],
        learning_rates[20],
    ]


@pytest.mark.parametrize("warmup", [0.3, 0.02])
def test_fit_one_cycle_fits_the_quick_steps_in_quick_mode(
    monkeypatch, learning_rates, warmup
):
    """In quick mode the cycle spans the QUICK_BATCHES steps actually taken: the rate
    peaks and decays to almost 0 within them, not over the full run's steps."""
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    x = regression_data(8 * (QUICK_BATCHES + 30))
    fit(
        nn.Linear(3, 1),
        mse,
        x,
        epochs=5,
        batch_size=8,
        lr=0.01,
        warmup=warmup,
        progress=False,
    )
    check_one_cycle(learning_rates, 0.01, QUICK_BATCHES, warmup)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": None}, "epochs, a time_limit, or both"),
        ({"epochs": 2, "warmup": 0.0}, "warmup is a fraction"),
        ({"epochs": 2, "warmup": 1.0}, "warmup is a fraction"),
        ({"epochs": None, "time_limit": 5.0, "warmup": 0.1}, "needs epochs"),
    ],
)
def test_fit_rejects_settings_it_cannot_honour(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(
            nn.Linear(3, 1), mse, regression_data(16), progress=False, **kwargs
        )


# --- a time limit -----------------------------------------------------------------------


class StepClock:
    """A stand-in for ``time`` in vaecourse.train: one second passes per loss evaluated."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


@pytest.fixture
def step_clock(monkeypatch):
    clock = StepClock()
    monkeypatch.setattr(
        train, "time", SimpleNamespace(perf_counter=clock.perf_counter)
    )
    return clock


def ticking(clock, loss_fn):
    def loss(model, batch):
        clock.now += 1.0
        return loss_fn(model, batch)

    return loss


def test_fit_without_epochs_trains_until_the_time_limit(full_mode, step_clock):
    """epochs=None: as many epochs as fit in ``time_limit``; the step that passes the limit
    is the last, here the 7th of 3-batch epochs (7 s > 6.5 s), in the middle of epoch 3."""
    loss = CountingLoss(ticking(step_clock, mse))
    history = fit(
        nn.Linear(3, 1),
        loss,
        regression_data(24),
        epochs=None,
        batch_size=8,
        time_limit=6.5,
        progress=False,
    )
    assert loss.calls == 7
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["images"] for row in history] == [24, 24, 8]


def test_fit_with_epochs_and_a_time_limit_stops_at_whichever_comes_first(
    full_mode, step_clock
):
    data = regression_data(24)
    loss = CountingLoss(ticking(step_clock, mse))
    fit(
        nn.Linear(3, 1),
        loss,
        data,
        epochs=2,
        batch_size=8,
        time_limit=100.0,
        progress=False,
    )
    assert loss.calls == 6  # the epochs ran out first
    loss = CountingLoss(ticking(step_clock, mse))
    fit(
        nn.Linear(3, 1),
        loss,
        data,
        epochs=2,
        batch_size=8,
        time_limit=1.5,
        progress=False,
    )
    assert loss.calls == 2  # the time ran out first


def test_fit_with_a_time_limit_runs_one_quick_epoch_in_quick_mode(monkeypatch):
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    loss = CountingLoss(mse)
    history = fit(
        nn.Linear(3, 1),
        loss,
        regression_data(8 * (QUICK_BATCHES + 5)),
        epochs=None,
        batch_size=8,
        time_limit=3600.0,
        progress=False,
    )
    assert loss.calls == QUICK_BATCHES and len(history) == 1


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


def test_quick_steps_cuts_at_quick_batches_in_quick_mode_only(monkeypatch):
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    assert [quick_steps(n) for n in (1, QUICK_BATCHES, 1500)] == [
        1,
        QUICK_BATCHES,
        QUICK_BATCHES,
    ]
    monkeypatch.setenv("VAECOURSE_QUICK", "0")
    assert [quick_steps(n) for n in (1, QUICK_BATCHES, 1500)] == [
        1,
        QUICK_BATCHES,
        1500,
    ]


@pytest.mark.parametrize("quick", ["0", "1"])
@pytest.mark.parametrize(
    "n, batch_size, epochs",
    [(40, 8, 3), (41, 8, 2), (8 * 45, 8, 2), (5, 8, 4)],
)
def test_total_steps_is_the_number_of_steps_fit_takes(
    monkeypatch, quick, n, batch_size, epochs
):
    """total_steps(n, batch_size, epochs): epochs · ceil(n / batch_size) steps, or one
    short epoch in quick mode; fit takes exactly that many."""
    monkeypatch.setenv("VAECOURSE_QUICK", quick)
    per_epoch = -(-n // batch_size)
    expected = (
        min(per_epoch, QUICK_BATCHES) if quick == "1" else epochs * per_epoch
    )
    assert total_steps(n, batch_size, epochs) == expected
    loss = CountingLoss(mse)
    fit(
        nn.Linear(3, 1),
        loss,
        regression_data(n),
        epochs=epochs,
        batch_size=batch_size,
        progress=False,
    )
    assert loss.calls == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("yes", True), ("true", True), ("0", False), ("false", False),
     ("No", False), ("", False), (" 0 ", False)],
)  # fmt: skip
def test_quick_mode_reads_the_environment(monkeypatch, value, expected):
    """Quick mode is on for a truthy VAECOURSE_QUICK, off for 0/false/no/empty."""
    monkeypatch.setenv("VAECOURSE_QUICK", value)
    assert quick_mode() is expected


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


# --- seeds, threads and the fast dtype -------------------------------------------------


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
    assert (
        torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    )
    assert torch.equal(a[3], b[3])
    assert torch.equal(
        a[3], torch.randn(5, generator=torch.Generator().manual_seed(123))
    )
    seed_everything(124)
    assert not torch.equal(torch.randn(5), a[0])


def test_threads_sets_the_number_of_threads_and_restores_it_even_after_an_error():
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), threads(1):
        raise RuntimeError("interrupted")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "onednn, bf16, expected",
    [
        (True, True, torch.bfloat16),
        (True, False, torch.float32),
        (False, True, torch.float32),
        (False, False, torch.float32),
    ],
)
def test_fast_dtype_is_bfloat16_only_where_the_cpu_multiplies_it_natively(
    monkeypatch, onednn, bf16, expected
):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: onednn)
    monkeypatch.setattr(
        torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: bf16
    )
    assert fast_dtype() == expected


# --- the device ----------------------------------------------------------------------


def test_pick_device_takes_the_environment_variable(monkeypatch):
    monkeypatch.setenv("VAECOURSE_DEVICE", "cpu")
    assert train.pick_device() == torch.device("cpu")


def test_pick_device_prefers_cuda_then_mps_then_the_cpu(monkeypatch):
    monkeypatch.delenv("VAECOURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.pick_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert train.pick_device().type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert train.pick_device() == torch.device("cpu")


@pytest.mark.parametrize(
    ("asked", "message"),
    [("gpu0", "is not a torch device"), ("cuda", "has no cuda device")],
)
def test_pick_device_refuses_a_device_it_cannot_use(
    monkeypatch, asked, message
):
    monkeypatch.setenv("VAECOURSE_DEVICE", asked)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=message):
        train.pick_device()
