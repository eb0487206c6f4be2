"""The checks of the coding exercises: the reference passes, an unwritten stub is
told to write the function, and every catalogued wrong answer gets its own hint.
Each chapter calls each of its checks once, on its own solution, under nbval."""

from __future__ import annotations

import importlib
import re

import pytest
import torch

from tools import build
from vaecourse.checks import Exercise, Mistake, exercises

CHAPTERS = [path.stem for path in build.chapters()]


def check_module(chapter):
    return importlib.import_module(f"vaecourse.checks.{chapter}")


def written(chapter) -> dict[str, Exercise]:
    """The chapter's exercises; none while its module is missing (a test below
    fails for that)."""
    try:
        return exercises(check_module(chapter))
    except ModuleNotFoundError:
        return {}


ALL = [
    (chapter, exercise)
    for chapter in CHAPTERS
    for exercise in written(chapter).values()
]
IDS = [f"{chapter}.{exercise.name}" for chapter, exercise in ALL]
MISTAKES = [
    (chapter, exercise, mistake)
    for chapter, exercise in ALL
    for mistake in exercise.mistakes
]
MISTAKE_IDS = [
    f"{chapter}.{exercise.name}: {mistake.name}"
    for chapter, exercise, mistake in MISTAKES
]


def test_every_chapter_has_at_least_three_checked_exercises():
    for chapter in CHAPTERS:
        assert len(exercises(check_module(chapter))) >= 3, chapter


@pytest.mark.parametrize("chapter, exercise", ALL, ids=IDS)
def test_the_reference_passes(chapter, exercise):
    verdict = exercise.judge(exercise.reference)
    assert verdict.correct and verdict.message.startswith("✓"), verdict.message


@pytest.mark.parametrize("chapter, exercise", ALL, ids=IDS)
def test_an_unwritten_stub_is_told_to_write_the_function(chapter, exercise):
    def stub(*args):
        """What the student edition gives the student."""
        raise NotImplementedError(f"write {exercise.name}")

    verdict = exercise.judge(stub)
    assert not verdict.correct
    assert "`stub` is not written yet" in verdict.message
    assert not exercise.judge(...).correct  # a value left as `...`


@pytest.mark.parametrize(
    "chapter, exercise, mistake", MISTAKES, ids=MISTAKE_IDS
)
def test_each_catalogued_wrong_answer_gets_its_hint(
    chapter, exercise, mistake
):
    verdict = exercise.judge(mistake.answer)
    assert not verdict.correct, f"{mistake.name} passes the check"
    assert verdict.message.endswith(mistake.hint), verdict.message
    assert "Perhaps" not in verdict.message


@pytest.mark.parametrize("chapter, exercise", ALL, ids=IDS)
def test_a_catalogue_entry_has_a_name_a_hint_and_the_exercise_a_fallback(
    chapter, exercise
):
    assert len(exercise.mistakes) >= 3, f"{exercise.name}: catalogue too short"
    assert len({m.name for m in exercise.mistakes}) == len(exercise.mistakes)
    for text in [exercise.question, exercise.fallback] + [
        m.hint for m in exercise.mistakes
    ]:
        assert text.strip() and text == text.strip(), repr(text)
    assert any(case for case in exercise.cases), "no inputs"


def test_an_error_in_the_answer_is_reported_with_the_input():
    exercise = Exercise(
        name="double",
        question="Twice x.",
        reference=lambda x: 2 * x,
        cases=[(torch.tensor(1.0),), (torch.tensor([1.0, 2.0, 3.0]),)],
        mistakes=[Mistake("x squared", lambda x: x**2, "Twice, not squared.")],
        fallback="Multiply by 2.",
    )

    def broken(x):
        return x + y  # noqa: F821

    message = exercise.judge(broken).message
    assert message.startswith("✗ `broken` raised NameError for x = 1")
    # the mistake agrees where the answer first goes wrong (x = 1: 1 ≠ 2, but
    # at x = 2 squaring is right): named only as a possible cause
    half = exercise.judge(lambda x: x**2 if x.numel() == 1 else x)
    assert "got 1, expected 2" in half.message
    assert half.message.endswith("Perhaps: Twice, not squared.")
    # wrong in a way no mistake explains: the fallback
    assert exercise.judge(lambda x: 3 * x).message.endswith("Multiply by 2.")
    # a shape error is named as one
    shape = exercise.judge(lambda x: (2 * x).sum())
    assert (
        "returned shape ()" in shape.message
        and "expected (3,)" in shape.message
    )
    # passing a result instead of the function
    assert "Pass the function itself" in exercise.judge(2.0).message


def test_an_error_that_a_mistake_makes_too_gets_its_hint():
    exercise = Exercise(
        name="first_and_twice",
        question="x and 2x.",
        reference=lambda x: (x, 2 * x),
        cases=[(torch.tensor([[1.0, 2.0], [3.0, 4.0]]),)],
        mistakes=[
            Mistake("a method numpy has", lambda x: x.ptp(), "Not numpy."),
        ],
        fallback="Return x and 2x.",
    )
    message = exercise.judge(lambda x: x.ptp()).message
    assert "raised AttributeError" in message
    assert message.endswith(". Not numpy.")
    # a tuple names the element that differs, and a small matrix is shown
    message = exercise.judge(lambda x: (x, 3 * x)).message
    assert (
        "in element 2 of the 2 it returns, got [[3, 6], [9, 12]], " in message
    )
    assert "expected [[2, 4], [6, 8]]" in message


def test_a_difference_hidden_by_rounding_is_named_with_its_cause():
    exercise = Exercise(
        name="total",
        question="The sum of exp(x).",
        reference=lambda x: x.exp().sum(),
        cases=[(torch.tensor([1.0, 2.0], dtype=torch.float64),)],
        mistakes=[],
        fallback="Sum exp(x).",
    )
    message = exercise.judge(
        lambda x: (x.exp().sum() * (1 + 5e-5)).float()
    ).message
    assert "got 10.11, expected 10.11 (they differ by 0.00051" in message
    assert "your result is float32, the inputs float64" in message
    message = exercise.judge(lambda x: x.exp().sum() * (1 + 5e-5)).message
    assert (
        "beyond the check's tolerance)" in message and "float32" not in message
    )


def test_the_inputs_are_not_shared_with_the_answer():
    seen = []
    exercise = Exercise(
        name="negate",
        question="Minus x.",
        reference=lambda x: -x,
        cases=[(torch.tensor([1.0, 2.0]),)],
        mistakes=[],
        fallback="Negate it.",
    )

    def in_place(x):
        seen.append(x)
        return x.neg_()

    assert exercise.judge(in_place).correct
    assert exercise.cases[0][0].tolist() == [1.0, 2.0]  # the case survived


def check_calls(chapter):
    """{exercise name: (question number, source of the check cell)} for every
    check call in the chapter."""
    calls, number = {}, None
    for cell in build.read(build.ROOT / "book" / f"{chapter}.ipynb").cells:
        if cell.cell_type == "markdown":
            found = re.findall(r"^\*\*(\d+)\.\*\*", cell.source, re.M)
            number = int(found[-1]) if found else number
        for name in re.findall(r"\bcheck\.(\w+)\(", cell.source):
            assert name not in calls, f"{chapter}: check.{name} called twice"
            calls[name] = (number, cell)
    return calls


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_check_is_called_once_in_its_chapter_and_passes_there(chapter):
    calls = check_calls(chapter)
    assert set(calls) == set(exercises(check_module(chapter))), chapter
    for name, (number, cell) in calls.items():
        assert number is not None, (
            f"{chapter}: check.{name} before any question"
        )
        assert cell.source.startswith("# NBVAL_CHECK_OUTPUT\n"), name
        assert "hide-cell" not in cell.metadata.get("tags", []), name
        printed = "".join(o.get("text", "") for o in cell.get("outputs", []))
        assert printed.startswith("✓ Correct"), (
            f"{chapter}.{name}: {printed!r}"
        )
