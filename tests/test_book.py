"""Tests of vaecourse.book: the results table and the chapter clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vaecourse import book, cache
from vaecourse.book import ChapterClock, table
from vaecourse.cache import Recipe, TrainingRecord


def test_table_formats_rows_as_markdown():
    shown = table(
        [{"model": "PCA", "error": 0.01234}, {"model": "a|b", "error": 2.0}],
        {"error": ".3f"},
    ).data
    assert shown.splitlines() == [
        "| model | error |",
        "|---|---|",
        "| PCA | 0.012 |",
        "| a\\|b | 2.000 |",
    ]


@pytest.mark.parametrize(
    "rows, formats, message",
    [
        ([], None, "no rows"),
        ([{"a": 1}, {"b": 2}], None, "columns"),
        ([{"a": 1}], {"c": ".2f"}, "unknown columns"),
    ],
)
def test_table_rejects_bad_input(rows, formats, message):
    with pytest.raises(ValueError, match=message):
        table(rows, formats)


def record(train_seconds, from_cache, name="m"):
    return TrainingRecord([], train_seconds, from_cache, Path(f"{name}.pt"))


@pytest.fixture
def used(monkeypatch):
    """An empty cache.USED for the test (the real list, emptied and put back)."""
    monkeypatch.setattr(cache, "USED", [])
    return cache.USED


def frozen(clock, seconds=5.0):
    """The clock with its measured time fixed, so the sums are exact."""
    clock.seconds = lambda: seconds
    return clock


def test_cold_seconds_add_the_stored_training_time_of_models_loaded_from_the_cache(
    used,
):
    """A model loaded from the cache cost its stored training time once; a model trained
    now is in the measured time already; models loaded before the clock started are not
    the chapter's."""
    used.append(record(1000.0, True, "before"))
    clock = frozen(ChapterClock())
    assert clock.cold_seconds() == 5.0
    used.append(record(100.0, True, "a"))
    used.append(record(50.0, False, "b"))  # trained now: already in seconds()
    used.append(record(20.0, True, "c"))
    assert clock.cold_seconds() == 5.0 + 100.0 + 20.0


def tiny_model():
    return nn.Linear(2, 2)


def tiny_training(model):
    with torch.no_grad():
        model.weight.fill_(0.5)
    return [{"epoch": 1, "loss": 0.0}]


def no_data():
    return {}


TINY = Recipe("clock-tiny", tiny_model, tiny_training, no_data)


@pytest.mark.usefixtures("isolated")
def test_cold_seconds_follow_the_records_that_cache_load_leaves(used):
    trained = cache.load(TINY)  # trained now, before the chapter's clock
    clock = frozen(ChapterClock())
    loaded = cache.load(TINY)  # from the cache
    assert loaded.record.from_cache and used[-1] is loaded.record
    assert loaded.record.train_seconds == trained.record.train_seconds
    assert clock.cold_seconds() == 5.0 + trained.record.train_seconds


@pytest.mark.parametrize("first_from_cache", [True, False])
def test_cold_seconds_count_each_model_once(used, first_from_cache):
    clock = frozen(ChapterClock())
    used.append(
        record(100.0, first_from_cache, "a")
    )  # the chapter loads a ...
    used.append(record(100.0, True, "a"))  # ... and later again (or as a need)
    expected = 5.0 + (100.0 if first_from_cache else 0.0)
    assert clock.cold_seconds() == expected


@pytest.mark.parametrize(
    "value", [np.float64(3.62), np.int64(42), torch.tensor(0.5)]
)
def test_glue_hands_the_page_plain_numbers(monkeypatch, value):
    myst_nb = pytest.importorskip("myst_nb")
    seen = {}
    monkeypatch.setattr(
        myst_nb, "glue", lambda name, v, display: seen.update({name: v})
    )
    book.glue("x", value)
    assert type(seen["x"]) in (float, int)
    assert f"{seen['x']:.1f}" == f"{float(value):.1f}"


@pytest.mark.parametrize(
    ("build", "quick", "checked"),
    [("1", "", True), ("1", "1", False), ("", "", False), ("0", "", False)],
)
def test_claims_are_checked_only_in_the_full_book_build(
    monkeypatch, build, quick, checked
):
    """A reader's run (Colab, a GPU, another CPU) trains slightly different models:
    the text's claims are asserted where the book is built, and nowhere else."""
    monkeypatch.setenv("VAECOURSE_BUILD", build)
    monkeypatch.setenv("VAECOURSE_QUICK", quick)
    assert book.checking_claims() is checked


def test_the_build_checks_claims(monkeypatch):
    from tools import build as tools_build

    monkeypatch.delenv("VAECOURSE_BUILD", raising=False)
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    tools_build.full_mode()
    assert book.checking_claims()


def test_machine_names_the_cpu_cores_here():
    assert ChapterClock.machine().endswith("CPU cores")
