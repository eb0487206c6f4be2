"""Helpers for the notebooks as pages of the book: glued numbers and the
chapter's clock."""

from __future__ import annotations

import os
import time

import torch

from vaecourse import cache
from vaecourse.train import pick_device, quick_mode

BUILD_ENV = "VAECOURSE_BUILD"


def checking_claims() -> bool:
    """True when the book is built (``make book``, full mode): there each claim
    the text makes about a measured number is asserted. Elsewhere (Colab, a
    GPU, another CPU) the models train a little differently, so the text,
    written for the published numbers, may not fit a reader's run; the checks
    are skipped rather than stopping the chapter."""
    return os.environ.get(BUILD_ENV) == "1" and not quick_mode()


def glue(name: str, value, display: bool = False) -> None:
    """Hand ``value`` to the book's text under ``name`` (myst-nb ``glue``).

    Outside the book build (for example in Colab, where myst-nb is not
    installed) this does nothing: the text of the page shows the numbers of the
    published build.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        # a NumPy or torch scalar: its repr ("np.float64(3.6)") is not a number
        # that the page's format spec ({glue:text}`name:.1f`) can read
        value = value.item()
    myst_glue(name, value, display=display)


class ChapterClock:
    """Measures a chapter's run time, and what it would take with an empty
    model cache.

    A model loaded from the checkpoint cache costs seconds now but cost its
    training time once; ``cold_seconds`` adds that stored training time back,
    once per model (a model is loaded again for each model trained from it),
    and not for a model this run trained itself. The same for an evaluation
    that ``cache.remember`` read from the cache: its first computation's
    time.
    """

    def __init__(self):
        self.start = time.perf_counter()
        self.first_entry = len(cache.USED)

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    @staticmethod
    def machine() -> str:
        """What the chapter ran on, for its closing sentence: "2 CPU cores",
        or the GPU's name ("NVIDIA H200", "Apple MPS")."""
        device = pick_device()
        if device.type == "cuda":
            return torch.cuda.get_device_name(device)
        if device.type == "mps":
            return "Apple MPS"
        return f"{os.cpu_count()} CPU cores"

    def cold_seconds(self) -> float:
        records = cache.USED[self.first_entry :]
        trained_here = {r.path for r in records if not r.from_cache}
        loaded = {
            r.path: r.train_seconds
            for r in records
            if r.from_cache and r.path not in trained_here
        }
        return self.seconds() + sum(loaded.values())


def table(rows: list[dict], formats: dict[str, str] | None = None):
    """A Markdown table of measured results, for a chapter to display.

    ``rows`` are dicts with the same keys (the column headers, in order);
    ``formats`` maps a column to a format spec such as ``".2f"``. The table is
    built from the data, so the page never shows a number typed by hand.
    """
    from IPython.display import Markdown

    if not rows:
        raise ValueError("table: no rows to show")
    columns = list(rows[0])
    if any(list(row) != columns for row in rows):
        raise ValueError(
            f"table: every row needs the columns {columns}, in that order"
        )
    formats = formats or {}
    unknown = set(formats) - set(columns)
    if unknown:
        raise ValueError(
            f"table: formats for unknown columns {sorted(unknown)}"
        )

    def cell(column, value):
        return format(value, formats.get(column, "")).replace("|", "\\|")

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *(
            "| " + " | ".join(cell(c, row[c]) for c in columns) + " |"
            for row in rows
        ),
    ]
    return Markdown("\n".join(lines))
