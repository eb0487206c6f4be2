"""Tests of the benchmark harness's measuring and reporting parts (make bench itself takes
half an hour and is not part of make test)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tools import bench
from vaecourse import cache
from vaecourse.cache import Recipe, save_entry
from vaecourse.train import fit

pytestmark = pytest.mark.usefixtures("isolated")


def test_run_reports_time_peak_memory_and_exit_code(tmp_path):
    """A child that holds 300 MB shows a peak of at least that; its exit code is kept."""
    code = "import sys; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); sys.exit(3)"
    step = bench.run(
        [sys.executable, "-c", code], tmp_path, {}, tmp_path / "log"
    )
    assert step["returncode"] == 3
    assert step["peak_rss_mb"] >= 300
    assert isinstance(step["seconds"], float)
    with pytest.raises(SystemExit, match="failed"):
        bench.checked(step, "child")


def linear4():
    return nn.Linear(4, 4)


def random_vectors():
    """96 random vectors"""
    return {
        "x": torch.randn(96, 4, generator=torch.Generator().manual_seed(0))
    }


def train_identity(model, *, x, epochs):
    return fit(
        model,
        lambda m, b: {"loss": F.mse_loss(m(b[0]), b[0])},
        (x,),
        epochs=epochs,
        batch_size=32,
        progress=False,
    )


def test_throughputs_come_from_the_checkpoint_cache(isolated):
    model = cache.load(
        Recipe("tiny", linear4, train_identity, random_vectors, {"epochs": 2})
    )
    (row,) = bench.throughputs(isolated.checkpoint_dir)
    assert row["model"] == "tiny"
    assert row["images"] == 2 * 96
    seconds = sum(r["seconds"] for r in model.record.history)
    assert row["images_per_second"] == round(2 * 96 / seconds)
    (isolated.checkpoint_dir / "broken").write_bytes(b"not a checkpoint")
    assert any(
        "error" in r for r in bench.throughputs(isolated.checkpoint_dir)
    )


def test_a_history_without_epoch_seconds_uses_the_stored_training_time(
    isolated,
):
    """A loop that trains for a fixed time may log images but no per-epoch seconds: the
    throughput then comes from the stored training time."""
    save_entry(
        isolated.checkpoint_dir / "timed.pt",
        {
            "key": {"name": "timed"},
            "state_dict": {},
            "history": [{"epoch": 1, "loss": 1.0, "images": 500}],
            "train_seconds": 2.0,
        },
    )
    (row,) = bench.throughputs(isolated.checkpoint_dir)
    assert row == {
        "model": "timed",
        "train_seconds": 2.0,
        "images": 500,
        "images_per_second": 250,
    }


def sample_report(cold_seconds=600, decode_ms=3.0):
    step = {
        "seconds": cold_seconds,
        "peak_rss_mb": 1500,
        "command": "make book",
        "returncode": 0,
    }
    return {
        "commit": "abc1234",
        "date": "2026-11-21 12:00",
        "machine": {"cpu": "test cpu", "cores": 2, "load_at_start": 0.1, "torch": "2.13", "threads": 2, "python": "3.11"},
        "steps": {"cold_book": step, "warm_book": {**step, "seconds": 60}},
        "chapters": {"cold": {"book/data": 10.0}, "warm": {"book/data": 8.0}},
        "models": [{"model": "vae", "train_seconds": 100.0, "images": 10**6, "images_per_second": 10**4}],
        "browser": {
            "pages": {"book/data": {"raw": 4e6, "transfer": 1.5e6, "own": 4e5}},
            "explorers": [{"page": "book/vae", "id": "x1", "ms": decode_ms}],
        },
        "loop": {"images_per_epoch": 20000, "bare_seconds": 1.0, "fit_seconds": 1.02, "bare_images_per_second": 20000, "fit_images_per_second": 19600, "overhead_percent": 2.0, "median_overhead_percent": 2.5},
    }  # fmt: skip


def test_verdicts_judge_each_target():
    met = {v["target"]: v["met"] for v in bench.verdicts(sample_report())}
    assert all(met.values()), met
    slow = bench.verdicts(sample_report(cold_seconds=36 * 60, decode_ms=20.0))
    missed = {v["target"] for v in slow if not v["met"]}
    assert missed == {"cold make book", "explorer decode (slowest)"}


def test_markdown_report_shows_every_figure():
    report = sample_report(cold_seconds=36 * 60)
    report["verdicts"] = bench.verdicts(report)
    text = bench.markdown(report)
    assert "| cold make book | 36.00 min | 35.0 min | NO |" in text
    assert "| book/data | 10.0 | 8.0 | 4000 | 1500 | 400 |" in text
    assert "| vae | 100.0 | 1000000 | 10000 |" in text
    assert "overhead 2.0 %" in text
