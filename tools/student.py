"""The student edition: every chapter with its exercises' solutions replaced by
stubs, generated from the book (never edited by hand).

    python -m tools.student        # writes _build/student/<chapter>.ipynb

A solution is a code cell after a chapter's "## Exercises" heading that the book
hides behind a toggle. A checked exercise's solution (tagged ``solution``) keeps
its imports and, for each function, the ``def`` line and docstring, with the body
replaced by ``raise NotImplementedError``; a top-level assignment becomes
``name = ...``. Any other solution becomes an empty cell for the student's code.
Everything else is the chapter as the book has it, outputs cleared. The book is
the instructor edition.
"""

from __future__ import annotations

import ast
import copy
import re
import sys
from pathlib import Path

import nbformat

from tools import build

OUT = build.ROOT / "_build" / "student"
BRANCH = "student"  # the branch the Pages workflow publishes the edition to
EMPTY = "# Your code here."
LINK_START = (
    "The [student edition]("  # the line build.sync writes in each chapter
)
TEACHERS = build.ROOT / "book" / "teachers.md"
TABLE_START, TABLE_END = "<!-- exercises:start -->", "<!-- exercises:end -->"


def stub(source: str) -> str:
    """A checked exercise's solution with its code taken out."""
    tree = ast.parse(source)
    lines = source.splitlines()
    kept = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            kept.append(ast.get_source_segment(source, node))
        elif isinstance(node, ast.FunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is None:
                raise ValueError(
                    f"solution function {node.name} has no docstring: the "
                    "student edition keeps it to say what to write"
                )
            first = node.decorator_list[0] if node.decorator_list else node
            head = lines[first.lineno - 1 : node.body[0].end_lineno]
            indent = " " * node.body[0].col_offset
            kept.append(
                "\n".join(head)
                + f'\n{indent}raise NotImplementedError("write {node.name}")'
            )
        elif isinstance(node, ast.Assign) and all(
            isinstance(t, ast.Name) for t in node.targets
        ):
            names = " = ".join(t.id for t in node.targets)
            kept.append(f"{names} = ...  # your answer")
    imports = [k for k in kept if k.startswith(("import ", "from "))]
    rest = [k for k in kept if not k.startswith(("import ", "from "))]
    blocks = (["\n".join(imports)] if imports else []) + rest
    return "\n\n\n".join(blocks) if blocks else EMPTY


def exercises_start(nb) -> int:
    return next(
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "markdown" and build.EXERCISES.search(c.source)
    )


def solutions(nb) -> list[int]:
    """Indices of the solution cells: hidden code cells after "## Exercises"."""
    start = exercises_start(nb)
    return [
        i
        for i, c in enumerate(nb.cells)
        if i > start
        and c.cell_type == "code"
        and "hide-cell" in c.metadata.get("tags", [])
    ]


def banner(path: Path) -> str:
    book = f"{build.repository_url()}/blob/{build.config()['repository']['branch']}"
    return (
        "**Student edition.** The solutions of this chapter's exercises are "
        "replaced by stubs: write your code where a cell raises "
        f"`NotImplementedError` or says `{EMPTY}`, then run the check below each "
        "checked exercise. The rest is the book's chapter: run it from the top "
        "first. The worked solutions are in the book's notebook, "
        f"[{path.relative_to(build.ROOT).as_posix()}]({book}/"
        f"{path.relative_to(build.ROOT).as_posix()})."
    )


def student_notebook(path: Path):
    """The chapter at ``path`` as the student edition has it."""
    nb = copy.deepcopy(build.read(path))
    for i in solutions(nb):
        cell = nb.cells[i]
        tags = cell.metadata.get("tags", [])
        cell.source = stub(cell.source) if "solution" in tags else EMPTY
        cell.metadata["tags"] = [t for t in tags if t != "hide-cell"]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    title = next(
        i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
    )
    note = nbformat.v4.new_markdown_cell(banner(path))
    note.id = "student-edition"
    nb.cells.insert(title + 1, note)
    nb.metadata.pop("vaecourse", None)  # the book's execution stamp
    return nb


def fill(student, book):
    """The student edition with its stubs replaced by the book's solutions
    (as a student who solved everything would have it)."""
    filled = copy.deepcopy(student)
    answers = {book.cells[i].id: book.cells[i].source for i in solutions(book)}
    filled.cells = [c for c in filled.cells if c.id != "student-edition"]
    for cell in filled.cells:
        cell.source = answers.get(cell.id, cell.source)
    return filled


def write(out: Path = OUT) -> list[Path]:
    """Write the student edition of every chapter to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in build.chapters():
        target = out / path.name
        nbformat.write(student_notebook(path), target)
        written.append(target)
    for old in set(out.glob("*.ipynb")) - set(written):
        old.unlink()
    return written


def colab_url(path: Path) -> str:
    """The Colab link of a chapter's student edition, published on BRANCH."""
    repo = build.repository_url().removeprefix("https://github.com/")
    colab = build.config()["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{repo}/blob/{BRANCH}/{path.name}"


def link_line(path: Path) -> str:
    return (
        f"{LINK_START}{colab_url(path)}) of this chapter, to open in Colab or "
        f'<a href="../student/{path.name}" download>download</a>, has every '
        "solution replaced by a stub; the [page for teachers](teachers.md) "
        "says how to use it."
    )


def sync_links(paths=None) -> list[Path]:
    """Write the student-edition line into each chapter's Exercises section
    (after its heading); return the chapters changed."""
    changed = []
    for path in paths or build.chapters():
        nb = build.read(path)
        cell = nb.cells[exercises_start(nb)]
        lines = cell.source.split("\n")
        lines = [line for line in lines if not line.startswith(LINK_START)]
        at = next(
            i
            for i, line in enumerate(lines)
            if line.startswith("## Exercises")
        )
        lines[at + 1 : at + 1] = ["", link_line(path)]
        new = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
        if new != cell.source:
            cell.source = new
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def exercise_list(path: Path) -> list[dict]:
    """Every exercise of a chapter, in order: its number, the checked
    exercise's name (None for a worked one), what the student does, what it
    needs, its solution's run time in the book's build, and the wrong answers
    its check recognises."""
    import importlib

    from vaecourse.checks import exercises

    nb = build.read(path)
    checked = exercises(
        importlib.import_module(f"vaecourse.checks.{path.stem}")
    )
    seconds = nb.metadata.get("vaecourse", {}).get("exercise_seconds", {})
    found, number = {}, None
    for cell in nb.cells[exercises_start(nb) :]:
        if cell.cell_type == "markdown":
            numbers = build.QUESTION.findall(cell.source)
            number = int(numbers[-1]) if numbers else number
            continue
        entry = found.setdefault(number, {"number": number, "name": None})
        entry["seconds"] = seconds.get(str(number))
        worked = cell.metadata.get("vaecourse", {})
        if "exercise" in worked:
            entry.update(does=worked["exercise"], needs=worked["needs"])
        for name in re.findall(r"\bcheck\.(\w+)\(", cell.source):
            exercise = checked[name]
            entry.update(
                name=name,
                does=exercise.question,
                needs=exercise.needs,
                mistakes=[m.name for m in exercise.mistakes],
            )
    return [
        e for n, e in sorted(found.items()) if n is not None and "does" in e
    ]


def teachers_table() -> str:
    """The teachers' page's tables: per chapter, the student notebook, its run
    times, and every exercise with what it needs, how long its solution ran,
    and the wrong answers its check recognises."""
    rows = []
    for path in build.chapters():
        nb = build.read(path)
        times = build.run_times(nb)
        warm, cold = map(minutes, times) if times else ("?", "?")
        rows += [
            f"### {build.title(nb)}",
            "",
            f"[Student edition in Colab]({colab_url(path)}) · "
            f'<a href="../student/{path.name}" download>download</a> · '
            f"the whole chapter runs in about {cold} on a 2-core CPU with "
            "every model trained from scratch (as in a fresh Colab session), "
            f"{warm} with the cache filled (trained models and stored "
            "evaluations).",
            "",
            "| exercise | what the student does | needs | its solution ran |",
            "|---|---|---|---|",
        ]
        caught = []
        for e in exercise_list(path):
            label = f"{e['number']}. " + (
                f"`{e['name']}` (checked)" if e["name"] else "(worked)"
            )
            took = e.get("seconds")
            took = (
                "?"
                if took is None
                else ("< 1 s" if took < 1 else minutes(took))
            )
            needs = e["needs"] or "no trained model"
            rows.append(f"| {label} | {e['does']} | {needs} | {took} |")
            if e["name"]:
                caught.append(
                    f"- `{e['name']}`: " + "; ".join(e["mistakes"]) + "."
                )
        rows += [
            "",
            "The wrong answers the checks recognise:",
            "",
            *caught,
            "",
        ]
    return "\n".join(rows).rstrip()


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def update_teachers() -> bool:
    """Rewrite the table between the teachers' page's markers; True if it
    changed."""
    text = TEACHERS.read_text()
    start = text.index(TABLE_START) + len(TABLE_START)
    end = text.index(TABLE_END)
    new = text[:start] + "\n" + teachers_table() + "\n" + text[end:]
    if new != text:
        TEACHERS.write_text(new)
    return new != text


def main() -> int:
    for path in write():
        print(f"wrote {path.relative_to(build.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
