"""The conventions every chapter follows, checked on the committed notebooks.

- the first cell installs the package from the repository only inside Colab, and its URL
  is the one in ``_config.yml`` (the single source of truth);
- the committed outputs are fresh: produced in full mode by the current code;
- every figure has alt text; numbers in the prose are glued, not typed;
- the chapter states its run time; exercises have solutions hidden in toggles;
- the README's chapter table is the one the notebooks' metadata gives.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
import textwrap

import pytest

from tools import build

CHAPTERS = build.chapters()
ids = [p.stem for p in CHAPTERS]


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_toc_lists_real_files_only():
    """Every _toc.yml entry exists; no stub pages (a page must have real content)."""
    for entry in build.toc_files():
        matches = [
            build.ROOT / f"{entry}{ext}" for ext in ("", ".md", ".ipynb")
        ]
        path = next((p for p in matches if p.is_file()), None)
        assert path is not None, (
            f"_toc.yml lists {entry}, which does not exist"
        )
        text = path.read_text()
        body = [
            line
            for line in text.splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert len("".join(body)) > 150, (
            f"{path} looks like a stub: it has almost no content"
        )


def test_there_is_at_least_one_chapter():
    assert CHAPTERS, "no notebook chapters found through _toc.yml"


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_first_cell_installs_from_the_configured_repository_only_in_colab(
    path,
):
    """The first cell installs ``vaecourse`` from the repository of _config.yml, and only
    when running inside Colab."""
    first = code_cells(build.read(path))[0].source
    url = build.repository_url()
    assert 'if "google.colab" in sys.modules:' in first
    installs = re.findall(r"pip install[^\n]*", first)
    assert installs, "the first cell installs nothing"
    for line in installs:
        assert f"git+{url}" in line, (
            f"install URL differs from _config.yml ({url}): {line}"
        )
    assert "torch" not in first, "never reinstall torch in Colab"


def test_first_cell_prints_nothing_outside_colab(tmp_path):
    """Run the install cell as plain Python (IPython magics become a call that must not
    happen): outside Colab it prints nothing and does not try to install."""
    first = code_cells(build.read(CHAPTERS[0]))[0].source
    script = first.replace("%pip", "raise SystemExit('tried to install') #")
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_committed_outputs_are_fresh(path):
    """The outputs were produced by `make book` in full mode from the current code."""
    why = build.staleness(path)
    assert why is None, (
        f"{path.name} is stale: {why}. Run `make book` and commit it."
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_every_figure_has_alt_text(path):
    """A cell that draws a figure says in words what the figure shows."""
    for cell in code_cells(build.read(path)):
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        if images:
            alt = (
                cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
            )
            assert len(alt) > 40, (
                f"figure without real alt text:\n{cell.source[:200]}"
            )


# control characters; a tab counts too, except in code
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
PAGES = [*CHAPTERS, *sorted(build.ROOT.glob("book/*.md"))]


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_sources_hold_no_control_characters(path):
    """A lost backslash turns LaTeX's \\frac into a form feed and \\theta into a
    tab: MathJax then shows "Math input error" on the page, and no build step
    fails."""
    if path.suffix == ".md":
        texts = [path.read_text(encoding="utf-8")]
    else:
        cells = build.read(path).cells
        texts = [
            c.source.replace("\t", "") if c.cell_type == "code" else c.source
            for c in cells
        ] + [str(c.metadata) for c in cells]
    for text in texts:
        found = CONTROL.search(text)
        assert found is None, (
            f"{path.name}: control character {found.group()!r} in "
            f"{text[max(0, found.start() - 40) : found.end() + 20]!r}"
        )


def test_control_character_check_catches_a_lost_backslash():
    assert CONTROL.search("$\\frac12$") is None
    assert CONTROL.search("$\frac12$") is not None  # a form feed
    assert CONTROL.search("$\theta$") is not None  # a tab


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_prose_numbers_are_glued(path):
    """Every {glue} reference in the text has a value glued by the executed
    chapter (its committed outputs), and the chapter glues its measured run
    time and states it."""
    nb = build.read(path)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    used = set(re.findall(r"\{glue(?::\w+)?\}`([\w]+)", prose))
    defined = {
        output.metadata["scrapbook"]["name"]
        for cell in code_cells(nb)
        for output in cell.get("outputs", [])
        if "scrapbook" in output.get("metadata", {})
    }
    assert used, "the chapter glues no numbers into its text"
    assert used <= defined, (
        f"glued names that the executed chapter does not glue: {used - defined}"
    )
    assert "chapter_seconds" in used, "the chapter must state its run time"
    assert {"chapter_seconds", "chapter_cold_seconds"} <= defined


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_exercises_have_hidden_solutions_that_ran(path):
    """The chapter ends with exercises; each solution is a code cell hidden behind a
    toggle, and it ran without error in the committed full-mode execution."""
    nb = build.read(path)
    heading = next(
        (
            i
            for i, c in enumerate(nb.cells)
            if re.search(r"^## Exercises", c.source, re.M)
        ),
        None,
    )
    assert heading is not None, "no '## Exercises' section"
    solutions = [
        c
        for c in nb.cells[heading:]
        if c.cell_type == "code" and "hide-cell" in c.metadata.get("tags", [])
    ]
    assert len(solutions) >= 2
    # a checked exercise's solution defines functions and prints nothing: its
    # check cell's output is tested in test_checks.py
    for cell in solutions:
        if "solution" in cell.metadata.get("tags", []):
            continue
        assert cell.outputs, f"solution never ran:\n{cell.source[:200]}"
        assert not any(o.output_type == "error" for o in cell.outputs)


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_checked_outputs_exist(path):
    """Mode-independent facts are marked for nbval to compare with the committed output."""
    marked = [
        c
        for c in code_cells(build.read(path))
        if "# NBVAL_CHECK_OUTPUT" in c.source
    ]
    assert marked and all(c.outputs for c in marked)


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_citations_exist_in_the_bibliography(path):
    """Every {cite} key of a chapter is an entry of book/references.bib."""
    nb = build.read(path)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    keys = {
        k.strip()
        for group in re.findall(r"\{cite\}`([^`]+)`", prose)
        for k in group.split(",")
    }
    bib = (build.ROOT / "book" / "references.bib").read_text()
    entries = set(re.findall(r"@\w+\{([^,]+),", bib))
    assert keys <= entries, (
        f"cited but not in references.bib: {keys - entries}"
    )


COPY_MARK = re.compile(r"^# Also in (vaecourse[\w.]*)$")


def helper_copies(nb):
    """(module, name, the chapter's copy) for every definition or constant that
    a chapter marks with the line ``# Also in vaecourse.<module>`` right above
    it: the source of a function or class, the value of a constant. A mark
    above a block of constants (one per line, no blank line) covers them all."""
    found = []
    for cell in code_cells(nb):
        lines = cell.source.splitlines()
        marks = {
            k + 2: m[1]
            for k, line in enumerate(lines)
            if (m := COPY_MARK.match(line))
        }
        if not marks:
            continue
        code = re.sub(r"^(\s*)%.*$", r"\1pass", cell.source, flags=re.M)
        tree = ast.parse(code)
        block = None  # the module of a block of marked constants still open
        for node in tree.body:
            first = min(
                [node.lineno]
                + [d.lineno for d in getattr(node, "decorator_list", [])]
            )
            module = marks.pop(first, None)
            # the next line of a marked block of constants
            if module is None and block and node.lineno == block[1] + 1:
                module = block[0]
            block = None
            if module is None:
                continue
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                found.append(
                    (module, node.name, ast.get_source_segment(code, node))
                )
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                found.append(
                    (module, node.targets[0].id, ast.literal_eval(node.value))
                )
                block = (module, node.end_lineno)
        assert not marks, (
            f"a '# Also in' mark stands above no definition or constant: {marks}"
        )
    return found


def package_copy(module, name):
    obj = getattr(importlib.import_module(module), name)
    if inspect.isfunction(obj) or inspect.isclass(obj):
        return textwrap.dedent(inspect.getsource(obj)).strip()
    return obj


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_helper_copies_are_identical_to_the_chapter(path):
    """Where a chapter writes out a model, function or constant that vaecourse also holds
    (for later chapters and the book's trained models), the two copies are the same."""
    for module, name, chapter_copy in helper_copies(build.read(path)):
        if isinstance(chapter_copy, str):
            chapter_copy = chapter_copy.strip()
        assert chapter_copy == package_copy(module, name), (
            f"{path.name} and {module}.{name} differ: change both, then make book"
        )


def test_helper_copy_check_catches_a_difference():
    """The check above is real: an edited copy, or a constant with another value, is
    reported."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "# Also in vaecourse.chapters.kl\n"
            "def gaussian_kl_standard(mu, logvar):\n"
            "    return 0.5 * (logvar.exp() + mu**2 - 1 + logvar)\n"
            "\n"
            "\n"
            "# Also in vaecourse.chapters.regularized\n"
            "L1_WEIGHT = 2.0\n"
        )
    )
    (kl, weight) = helper_copies(nb)
    assert kl[:2] == ("vaecourse.chapters.kl", "gaussian_kl_standard")
    assert "def gaussian_kl_standard" in kl[2] and kl[2] != package_copy(
        *kl[:2]
    )
    assert weight[2] == 2.0 != package_copy(*weight[:2])


VISIBLE = ("remove-cell", "hide-cell", "remove-input", "hide-input")


def bookkeeping(source: str) -> list[str]:
    """The glue() calls and assert statements in a cell's code: the bookkeeping that
    puts numbers into the prose and checks its claims."""
    code = re.sub(r"^(\s*)%.*$", r"\1pass", source, flags=re.M)
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assert):
            found.append(f"line {node.lineno}: assert")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None))
            == "glue"
        ):
            found.append(f"line {node.lineno}: glue(...)")
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_bookkeeping_is_hidden_from_the_page(path):
    """A cell that glues numbers into the prose or asserts its claims is hidden on the
    page (a toggle, or removed): the reader sees the teaching code, not the bookkeeping.
    Mixed cells are split."""
    shown = [
        (cell.source.splitlines()[0], found)
        for cell in code_cells(build.read(path))
        if not set(cell.metadata.get("tags", [])) & set(VISIBLE)
        and (found := bookkeeping(cell.source))
    ]
    assert not shown, f"visible cells with glue or assert: {shown}"


def test_bookkeeping_check_sees_glue_and_asserts():
    assert bookkeeping("x = 1\nglue('x', x)\nif x:\n    assert x > 0\n") == [
        "line 2: glue(...)",
        "line 4: assert",
    ]
    assert bookkeeping("print(glue)\nx = 1  # assert nothing\n") == []


def test_readme_chapter_table_is_current():
    """The README's table (Colab links, measured times) is what the notebooks give."""
    readme = (build.ROOT / "README.md").read_text()
    assert build.readme_table() in readme, (
        "README is stale: run `python -m tools.build readme`"
    )
    for path in CHAPTERS:
        assert build.colab_url(path) in readme


def test_readme_gives_the_two_commands_near_the_top():
    readme = (build.ROOT / "README.md").read_text()
    top = readme[:1500]
    assert "make book" in top and "make test" in top


def test_ci_runs_the_readme_test_command():
    ci = (build.ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


@pytest.mark.parametrize("path", CHAPTERS, ids=ids)
def test_claim_checks_do_not_stop_a_readers_run(path):
    """The full-mode checks of the text's claims run under checking_claims() (the book's
    build), never under a bare full-mode test: on a reader's GPU or CPU the models differ
    a little, and an AssertionError would stop the chapter half-way."""
    for cell in code_cells(build.read(path)):
        assert not re.search(
            r"if not (QUICK|quick|quick_mode\(\))\b", cell.source
        ), (
            f"{path.name}: a claim check guarded by full mode only:\n{cell.source[:300]}"
        )
