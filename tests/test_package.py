"""What a reader installs (in Colab: the wheel built from this repository) and
how the package is laid out: by audience, with imports that only run down."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tools import build


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "-q",
            "-w",
            out,
        ],
        cwd=build.ROOT,
        check=True,
    )
    (path,) = out.glob("vaecourse-*.whl")
    return set(zipfile.ZipFile(path).namelist())


def test_the_wheel_holds_what_chapters_import_and_no_maintainer_tooling(wheel):
    files = {name for name in wheel if name.startswith("vaecourse/")}
    assert {
        "vaecourse/zoo.py",
        "vaecourse/chapters/vae.py",
        "vaecourse/explorer/explorer.js",
        "vaecourse/explorer/explorer.css",
        "vaecourse/explorer/template.html",
    } <= files
    assert not any(
        name.startswith(("tools/", "tests/", "book/")) for name in wheel
    )
    assert not any("bench" in name or "build.py" in name for name in files)


# Who may import whom: each module has a rank, and imports only modules of a
# lower rank; the chapters' modules may import each other (the regularized
# chapter uses the KL chapter's Bernoulli divergence), without a cycle.
ORDER = [f.removeprefix("book/") for f in build.toc_files()]
RANK = {
    "vaecourse": 0,  # the package's face: imports nothing
    "vaecourse.data": 0,
    "vaecourse.prob": 0,
    "vaecourse.plot": 0,
    "vaecourse.uncertainty": 0,
    "vaecourse.train": 1,
    "vaecourse.cache": 2,
    "vaecourse.metrics": 2,
    "vaecourse.explorer.export": 2,
    "vaecourse.book": 3,
    "vaecourse.chapters": 3,
    "vaecourse.explorer.live": 3,
    "vaecourse.explorer": 4,
    **{f"vaecourse.chapters.{name}": 4 for name in ORDER},
    "vaecourse.zoo": 5,  # the book's trained models
    "vaecourse.checks": 0,  # the exercises' checking machinery
    # each chapter's checks, which compare with anything the book has
    **{f"vaecourse.checks.{name}": 6 for name in ORDER},
}


def package_modules():
    root = build.ROOT / "vaecourse"
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(build.ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def import_graph():
    """{module: the vaecourse modules it imports}, packages of a module left
    out (importing a module runs its package first)."""
    return {
        module: {
            imported
            for imported in build.imported_modules(path.read_text())
            if not module.startswith(imported + ".")
        }
        for module, path in package_modules()
    }


def test_every_import_runs_down_the_ranks():
    graph = import_graph()
    assert set(graph) <= set(RANK), f"unranked: {set(graph) - set(RANK)}"
    for module, imports in graph.items():
        for imported in imports:
            same = (
                RANK[module] == RANK[imported] == 4 and "chapters." in module
            )
            assert same or RANK[imported] < RANK[module], (
                f"{module} imports {imported}: an arrow running back up"
            )


def test_the_import_graph_has_no_cycle():
    graph, done, path = import_graph(), set(), []

    def visit(module):
        assert module not in path, f"import cycle: {path + [module]}"
        if module in done:
            return
        path.append(module)
        for imported in graph.get(module, ()):
            visit(imported)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_each_chapter_module_is_named_like_its_chapter():
    chapters = {
        m for m, _ in package_modules() if m.startswith("vaecourse.chapters.")
    }
    names = {m.split(".")[-1] for m in chapters}
    assert names <= set(ORDER), (
        f"modules without a chapter: {names - set(ORDER)}"
    )
    checks = {
        m.split(".")[-1]
        for m, _ in package_modules()
        if m.startswith("vaecourse.checks.")
    }
    notebooks = {path.stem for path in build.chapters()}
    assert checks == notebooks, (
        f"chapters without checks: {notebooks - checks}, "
        f"checks without a chapter: {checks - notebooks}"
    )
