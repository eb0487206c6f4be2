"""The student edition: generated from the chapters, solutions replaced by stubs
that the checks recognise as unwritten, everything else unchanged; filled with the
book's solutions, every student notebook runs from top to bottom in quick mode."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tools import build, student
from vaecourse.book import BUILD_ENV
from vaecourse.checks import exercises

CHAPTERS = build.chapters()


def check_module(chapter):
    return importlib.import_module(f"vaecourse.checks.{chapter}")


ids = [p.stem for p in CHAPTERS]


def test_a_checked_solution_keeps_its_imports_signatures_and_docstrings():
    solution = (
        "import math\n"
        "from torch import nn\n\n"
        "SCALE = 2.0\n\n\n"
        "def area(r, *, pi=math.pi):\n"
        '    """The area of a circle of radius r."""\n'
        "    # the body, and this comment, are the answer\n"
        "    return pi * r**2\n\n\n"
        "print(area(1.0))\n"
    )
    assert student.stub(solution) == (
        "import math\n"
        "from torch import nn\n\n\n"
        "SCALE = ...  # your answer\n\n\n"
        "def area(r, *, pi=math.pi):\n"
        '    """The area of a circle of radius r."""\n'
        '    raise NotImplementedError("write area")'
    )
    assert student.stub("print(1)\n") == student.EMPTY
    with pytest.raises(ValueError, match="no docstring"):
        student.stub("def f(x):\n    return x\n")


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    written = student.write(out)
    return {path.stem: nbformat.read(path, 4) for path in written}


def test_make_student_writes_one_notebook_per_chapter(edition):
    assert sorted(edition) == sorted(ids)
    text = (build.ROOT / "Makefile").read_text()
    assert re.search(
        r"^student: .*\n\t\$\(BIN\)/python -m tools.student$", text, re.M
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_only_the_solutions_change_and_the_outputs_are_cleared(path, edition):
    book, nb = build.read(path), edition[path.stem]
    at = [c.id for c in nb.cells].index("student-edition")
    assert nb.cells[at - 1].source.startswith("# ")  # right under the title
    cells = [c for c in nb.cells if c.id != "student-edition"]
    assert [c.id for c in cells] == [c.id for c in book.cells]
    solutions = set(student.solutions(book))
    assert solutions, "no solution cells"
    for i, (mine, theirs) in enumerate(zip(cells, book.cells, strict=True)):
        if i in solutions:
            assert mine.source != theirs.source
            assert "hide-cell" not in mine.metadata.get("tags", [])
        else:
            assert mine.source == theirs.source
        if mine.cell_type == "code":
            assert mine.outputs == [] and mine.execution_count is None
    nbformat.validate(nb)


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_the_checks_tell_a_student_to_write_each_stub(path, edition):
    """Each checked solution becomes a stub, which its check answers with 'not
    written yet'."""
    nb = edition[path.stem]
    found = exercises(check_module(path.stem))
    stubs = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert len(stubs) >= 3
    namespace = {}
    for cell in stubs:
        assert "NotImplementedError" in cell.source or "= ..." in cell.source
        exec(cell.source, namespace)  # imports and stubbed definitions only
    for cell in nb.cells:
        for name, argument in re.findall(
            r"\bcheck\.(\w+)\((\w+)\)", cell.source
        ):
            verdict = found[name].judge(namespace[argument])
            assert "is not written yet" in verdict.message, verdict.message


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_filled_with_the_solutions_it_is_the_chapter(path, edition):
    filled, book = (
        student.fill(edition[path.stem], build.read(path)),
        build.read(path),
    )
    assert [c.source for c in filled.cells] == [c.source for c in book.cells]


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_filled_with_the_solutions_it_runs_in_quick_mode(
    path, edition, tmp_path
):
    """From top to bottom, as a student who solved everything would run it (in
    a directory outside the repository)."""
    nb = student.fill(edition[path.stem], build.read(path))
    env = {**os.environ, "VAECOURSE_QUICK": "1"}
    env.pop(
        BUILD_ENV, None
    )  # a student's run asserts none of the text's claims
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute(env=env)
    printed = [
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code" and re.search(r"\bcheck\.\w+\(", c.source)
        for o in c.outputs
    ]
    assert printed and all(p.startswith("✓ Correct") for p in printed), printed


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_each_chapter_links_its_student_edition(path):
    nb = build.read(path)
    cell = nb.cells[student.exercises_start(nb)]
    assert student.link_line(path) in cell.source.split("\n")


def test_the_teachers_page_lists_every_exercise_as_generated():
    text = student.TEACHERS.read_text()
    start = text.index(student.TABLE_START) + len(student.TABLE_START)
    assert text[start : text.index(student.TABLE_END)].strip() == (
        student.teachers_table()
    )
    assert "| ? |" not in text, "a solution without its measured time"
    for path in CHAPTERS:
        assert student.colab_url(path) in text
        for name in exercises(check_module(path.stem)):
            assert f"`{name}` (checked)" in text


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_every_exercise_says_what_it_needs(path):
    """A worked exercise's solution carries what it does and needs (for the
    teachers' page); a checked one has them in its check."""
    nb = build.read(path)
    numbers = {e["number"] for e in student.exercise_list(path)}
    asked = {
        int(n)
        for c in nb.cells[student.exercises_start(nb) :]
        if c.cell_type == "markdown"
        for n in re.findall(r"^\*\*(\d+)\.\*\*", c.source, re.M)
    }
    assert numbers == asked
    # measured in the book's build (to 10 ms: a quick one rounds to 0)
    seconds = [e["seconds"] for e in student.exercise_list(path)]
    assert None not in seconds and sum(seconds) > 0, seconds
    for i in student.solutions(nb):
        cell = nb.cells[i]
        if "solution" not in cell.metadata.get("tags", []):
            info = cell.metadata.get("vaecourse", {})
            assert info.get("exercise") and "needs" in info, cell.source[:80]


def test_the_teachers_page_quotes_a_check_as_it_answers():
    from vaecourse.checks import kl

    def jensen_shannon(p, q):  # without the convention 0 log 0 = 0
        import torch

        m = (p + q) / 2
        return 0.5 * (p * torch.log(p / m)).sum(-1) + 0.5 * (
            q * torch.log(q / m)
        ).sum(-1)

    message = kl.jensen_shannon.judge(jensen_shannon).message
    assert f"```text\n{message}\n```" in student.TEACHERS.read_text()


def test_the_student_command_runs_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools.student"],
        cwd=build.ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.count("wrote _build/student/") == len(CHAPTERS)
