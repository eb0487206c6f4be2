"""Checks for the chapters' coding exercises: one module per chapter, named
like it (``from vaecourse.checks import kl as check``).

A student writes a function and calls its check, ``check.jensen_shannon(
my_jsd)``. The check runs the function on random and edge-case inputs,
compares each result with the book's reference implementation, and answers in
one line: correct, or the first input where it is wrong, what it returned
against what was expected, and the likely cause. The causes come from a
catalogue of the wrong answers students commonly write (a swapped argument, a
missing log, a sum for a mean), each written as code: an answer that behaves
like one of them gets its hint. Randomness never enters a check: where an
exercise needs noise, the noise is one of the function's arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Exercise", "Mistake", "Verdict", "exercises"]

RIGHT, WRONG = "✓", "✗"


@dataclass(frozen=True)
class Mistake:
    """A common wrong answer, written as code, and the hint it earns."""

    name: str  # a few words for the teachers' page: "p and q swapped"
    answer: Callable
    hint: str  # one sentence to the student: "Did you swap p and q? ..."


@dataclass(frozen=True)
class Verdict:
    """What a check found: ``correct``, and the line the student sees."""

    correct: bool
    message: str

    def __bool__(self) -> bool:
        return self.correct


@dataclass
class Exercise:
    """One checked exercise: the reference, the inputs it is tried on, and the
    catalogue of wrong answers with their hints.

    ``cases`` is a list of argument tuples; each is passed (cloned) to the
    student's function and to ``reference``. ``labels`` optionally names each
    case for the messages ("disjoint supports"); otherwise the arguments are
    shown. ``fallback`` is the hint for a wrong answer that no mistake in the
    catalogue explains. ``needs`` says what the exercise needs besides the
    chapter's own code (a trained model, and which), for the teachers' page.
    """

    name: str
    question: str  # one line for the teachers' page
    reference: Callable
    cases: list[tuple]
    mistakes: list[Mistake]
    fallback: str
    labels: list[str] = field(default_factory=list)
    needs: str = ""
    rtol: float = 1e-5
    atol: float = 1e-8

    def __post_init__(self):
        if self.labels and len(self.labels) != len(self.cases):
            raise ValueError(
                f"{self.name}: {len(self.labels)} labels for "
                f"{len(self.cases)} cases"
            )

    def __call__(self, answer: Callable) -> None:
        """Check ``answer`` and print the verdict in one line."""
        print(self.judge(answer).message)

    def judge(self, answer: Callable) -> Verdict:
        """The verdict on ``answer``, without printing it."""
        name = f"`{getattr(answer, '__name__', 'your answer')}`"
        if answer is ... or answer is None:
            return Verdict(False, f"{WRONG} Not answered yet: write {name}.")
        if not callable(answer):
            return Verdict(
                False,
                f"{WRONG} Pass the function itself, not its result: "
                f"check.{self.name}(my_function), without parentheses after "
                "its name.",
            )
        expected = [self.reference(*_clone(args)) for args in self.cases]
        got = []
        for i, args in enumerate(self.cases):
            try:
                got.append(answer(*_clone(args)))
            except NotImplementedError:
                return Verdict(
                    False,
                    f"{WRONG} {name} is not written yet: replace its `raise "
                    "NotImplementedError` with your code, then run this check "
                    "again.",
                )
            except Exception as error:  # the student's bug, reported
                raised = (
                    f"{WRONG} {name} raised {type(error).__name__} for "
                    f"{self._describe(i)}: {error}"
                )
                hints = [  # a catalogued mistake that raises the same error
                    m.hint
                    for m in self.mistakes
                    if type(_outcome(m.answer, args)) is type(error)
                ]
                if hints:
                    raised = f"{raised.rstrip('.')}. {hints[0]}"
                return Verdict(False, raised)
        wrong = [
            i
            for i in range(len(self.cases))
            if not self._same(got[i], expected[i])
        ]
        if not wrong:
            return Verdict(
                True,
                f"{RIGHT} Correct: {name} agrees with the reference on all "
                f"{len(self.cases)} inputs, edge cases included.",
            )
        first = wrong[0]
        where = (
            f"{WRONG} {name} is wrong for {self._describe(first)}: "
            f"{_difference(got[first], expected[first], self._same)}."
        )
        return Verdict(False, f"{where} {self._cause(got, first)}")

    def _cause(self, got: list, first: int) -> str:
        """The hint of the mistake that behaves like the answer everywhere;
        failing that, of one that agrees with it where it first goes wrong."""
        for mistake in self.mistakes:
            if all(
                self._same(g, _outcome(mistake.answer, args))
                for g, args in zip(got, self.cases, strict=True)
            ):
                return mistake.hint
        for mistake in self.mistakes:
            if self._same(
                got[first], _outcome(mistake.answer, self.cases[first])
            ):
                return f"Perhaps: {mistake.hint}"
        return self.fallback

    def _same(self, a: Any, b: Any) -> bool:
        if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
            return (
                isinstance(a, (tuple, list))
                and isinstance(b, (tuple, list))
                and len(a) == len(b)
                and all(self._same(x, y) for x, y in zip(a, b, strict=True))
            )
        if isinstance(a, Exception) or isinstance(b, Exception):
            return type(a) is type(b)
        try:
            a, b = _tensor(a), _tensor(b)
        except (TypeError, ValueError, RuntimeError):
            return False
        return a.shape == b.shape and torch.allclose(
            a, b, rtol=self.rtol, atol=self.atol, equal_nan=True
        )

    def _describe(self, i: int) -> str:
        if self.labels:
            return self.labels[i]
        names = list(inspect.signature(self.reference).parameters)
        return ", ".join(
            f"{n} = {_show(v)}"
            for n, v in zip(names, self.cases[i], strict=False)
        )


def exercises(module) -> dict[str, Exercise]:
    """The exercises a chapter's check module defines, by name."""
    return {
        value.name: value
        for value in vars(module).values()
        if isinstance(value, Exercise)
    }


def _clone(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _outcome(function: Callable, args: tuple) -> Any:
    """What ``function`` returns, or the exception it raises."""
    try:
        return function(*_clone(args))
    except Exception as error:
        return error


def _tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64)
    return torch.as_tensor(value, dtype=torch.float64)


def _show(value) -> str:
    """An input or a result, short enough for one line."""
    if isinstance(value, (tuple, list)) and not isinstance(value, torch.Size):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    if isinstance(value, Exception):
        return f"an error ({type(value).__name__})"
    try:
        t = _tensor(value)
    except (TypeError, ValueError, RuntimeError):
        return repr(value)
    if t.numel() == 1:
        return f"{t.item():.4g}"
    if t.numel() <= 4:
        return _nested(t.tolist())
    return f"a tensor of shape {tuple(t.shape)}"


def _nested(values) -> str:
    if isinstance(values, list):
        return "[" + ", ".join(_nested(v) for v in values) + "]"
    return f"{values:.4g}"


def _difference(got, expected, same: Callable) -> str:
    """'got X, expected Y', naming the shape or the worst entry when the
    results are too large to show, and the element of a tuple that differs."""
    pair = (tuple, list)
    if (
        isinstance(got, pair)
        and isinstance(expected, pair)
        and len(got) == len(expected)
    ):
        j = next(
            j
            for j, (g, e) in enumerate(zip(got, expected, strict=True))
            if not same(g, e)
        )
        return (
            f"in element {j + 1} of the {len(got)} it returns, "
            f"{_difference(got[j], expected[j], same)}"
        )
    if isinstance(got, pair) or isinstance(expected, pair):
        return f"got {_show(got)}, expected {_show(expected)}"
    try:
        g, e = _tensor(got), _tensor(expected)
    except (TypeError, ValueError, RuntimeError):
        return f"got {_show(got)}, expected {_show(expected)}"
    if g.shape != e.shape:
        return f"it returned shape {tuple(g.shape)}, expected {tuple(e.shape)}"
    gap = (g - e).abs().nan_to_num(nan=float("inf")).flatten()
    if g.numel() <= 4:
        where, shown = "", (_show(g), _show(e))
    else:
        worst = int(gap.argmax())
        index = tuple(
            int(i) for i in torch.unravel_index(torch.tensor(worst), g.shape)
        )
        where = f"at index {index if len(index) > 1 else index[0]} "
        shown = (f"{g.flatten()[worst]:.4g}", f"{e.flatten()[worst]:.4g}")
    text = f"{where}got {shown[0]}, expected {shown[1]}"
    if shown[0] == shown[1]:  # equal to four digits: how far apart, and why
        text += (
            f" (they differ by {gap.max():.2g}, beyond the check's tolerance"
        )
        dtype = getattr(got, "dtype", None)
        if dtype in (torch.float32, torch.float16, torch.bfloat16):
            text += (
                f"; your result is {str(dtype).removeprefix('torch.')}, the "
                "inputs float64: compute in their precision"
            )
        text += ")"
    return text
