"""Tests of vaecourse.book: the results table and the chapter clock."""

from __future__ import annotations

import pytest

from vaecourse.book import ChapterClock, table


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


def test_clock_counts_up():
    clock = ChapterClock()
    assert 0 <= clock.seconds() <= clock.cold_seconds() + 1e-3
