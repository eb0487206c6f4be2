"""Maintainers' tooling: execute stale chapters, check freshness, keep the README in step.

A chapter's committed outputs are *fresh* when they were produced, in full mode, by the
current code: its own code cells, the package modules it imports (followed through their
imports), and the recipes of the trained models it loads (``vaecourse.zoo``: each
recipe's digest covers its settings and the source of the code that trains it). The
executor stores the digests in the notebook's metadata; ``check`` recomputes them. So a
fix to the explorer re-executes only the chapters that show an explorer. Before the
chapters run, the missing models that train on one thread are trained two at a time
(``pretrain``), which takes minutes off a cold build on two cores.

    python -m tools.build execute [NOTEBOOK ...]   # run stale chapters (or those named)
    python -m tools.build check                    # exit 1 if any chapter is stale
    python -m tools.build readme                   # rewrite the README's chapter table,
                                                   # the chapters' Colab install URL and
                                                   # student-edition link, and the
                                                   # teachers' page's exercise table

The repository URL is one line of ``_config.yml``: ``readme`` (and ``execute``) write it
into every chapter's Colab install cell and student-edition link, and neither is part of
a chapter's inputs (markdown is not), so moving the repository re-executes nothing.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "vaecourse"
# The registry of trained models: a chapter depends on the recipes it loads (recorded
# when it runs), not on every model of the book, so imports are not followed past it.
REGISTRY = "vaecourse.zoo"
README_START, README_END = "<!-- chapters:start -->", "<!-- chapters:end -->"
# a chapter's exercises section, and the number of each question in it ("**4.**")
EXERCISES = re.compile(r"^## Exercises", re.M)
QUESTION = re.compile(r"^\*\*(\d+)\.\*\*", re.M)


def toc_files() -> list[str]:
    """Every file of ``_toc.yml``, in reading order, without extension."""
    text = (ROOT / "_toc.yml").read_text()
    return re.findall(r"^\s*(?:root|-\s*file):\s*(\S+)", text, flags=re.M)


def chapters() -> list[Path]:
    """The notebooks of the book, in reading order."""
    paths = [ROOT / f"{f.removesuffix('.ipynb')}.ipynb" for f in toc_files()]
    return [p for p in paths if p.exists()]


def config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "_config.yml").read_text())


def repository_url() -> str:
    return config()["repository"]["url"].rstrip("/")


def colab_url(notebook: Path) -> str:
    """The Colab link of a chapter, as the site's launch button builds it."""
    cfg = config()
    repo = repository_url().removeprefix("https://github.com/")
    rel = notebook.resolve().relative_to(ROOT).as_posix()
    colab = cfg["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{repo}/blob/{cfg['repository']['branch']}/{rel}"


def imported_modules(source: str, root: Path = ROOT) -> set[str]:
    """The vaecourse modules that Python ``source`` imports, wherever the import
    statement stands (a function body too): ``from vaecourse import zoo`` names
    ``vaecourse.zoo``, ``from vaecourse.chapters.vae import VAE`` names
    ``vaecourse.chapters.vae``. Notebook magics (``%pip``) are skipped."""
    code = re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.M)
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and not node.level
        ):
            names = [node.module] + [
                f"{node.module}.{a.name}" for a in node.names
            ]
        else:
            continue
        found |= {
            n
            for n in names
            if n.split(".")[0] == PACKAGE and module_file(n, root) is not None
        }
    return found


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a vaecourse module or package under ``root``, or None."""
    path = root.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_closure(modules: set[str], root: Path = ROOT) -> set[str]:
    """``modules``, their parent packages (importing a module runs them) and everything
    they import, transitively; the registry's own imports are not followed."""
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        if module != REGISTRY:
            todo += imported_modules(
                module_file(module, root).read_text(), root
            )
    return seen


def inputs_digest(nb, root: Path = ROOT) -> str:
    """SHA-256 of what a chapter's outputs depend on besides its trained models: its
    code cells and the files of the vaecourse modules it imports, transitively (with a
    package's data files, such as the explorer's script). The registry ``zoo.py`` is
    not hashed: the recipes of the models the chapter loads are (``model_digests``)."""
    h = hashlib.sha256()
    cells = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    for source in cells:
        # where Colab installs the package from does not change the outputs
        source = INSTALL_URL.sub(r"\1<repository>", source)
        h.update(b"\0cell\0" + source.encode())
    modules = module_closure(
        set().union(*(imported_modules(c, root) for c in cells)), root
    )
    files = set()
    for module in modules - {REGISTRY}:
        path = module_file(module, root)
        files.add(path)
        if path.name == "__init__.py":  # a package: its data files too
            files |= {
                p for p in path.parent.iterdir() if p.suffix in DATA_FILES
            }
    for path in sorted(files):
        h.update(
            f"\0{path.relative_to(root).as_posix()}\0".encode()
            + path.read_bytes()
        )
    return h.hexdigest()


DATA_FILES = (".js", ".css", ".html")
# the repository URL in a chapter's Colab install line: %pip install "vaecourse @ git+URL"
INSTALL_URL = re.compile(r"(vaecourse @ git\+)[^\"'\s]+")


def sync_install_urls() -> list[Path]:
    """Write ``_config.yml``'s repository URL into every chapter's Colab install cell;
    return the chapters changed."""
    import nbformat

    changed = []
    for path in chapters():
        nb = read(path)
        first = next(c for c in nb.cells if c.cell_type == "code")
        new = INSTALL_URL.sub(rf"\g<1>{repository_url()}", first.source)
        if new != first.source:
            first.source = new
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def model_digests(names) -> dict[str, str]:
    """The current digest of each named recipe of the zoo (None for a name it no longer
    has)."""
    from vaecourse import zoo

    return {
        n: zoo.RECIPES[n].digest() if n in zoo.RECIPES else None for n in names
    }


def read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def staleness(path: Path) -> str | None:
    """Why the committed outputs of ``path`` are stale, or None when they are fresh."""
    nb = read(path)
    stamp = nb.metadata.get("vaecourse", {})
    if stamp.get("mode") != "full":
        return "never executed in full mode by `make book`"
    if stamp.get("inputs_sha256") != inputs_digest(nb):
        return "its code or a vaecourse module it imports changed since it was executed"
    recorded = stamp.get("models", {})
    changed = [
        n for n, d in model_digests(recorded).items() if d != recorded[n]
    ]
    if changed:
        return f"the recipe or training code of {', '.join(sorted(changed))} changed"
    for cell in nb.cells:
        if cell.cell_type == "code" and any(
            o.output_type == "error" for o in cell.outputs
        ):
            return "it has an error output"
    return None


def execute(path: Path) -> float:
    """Run a chapter top to bottom in full mode and store its outputs and stamp."""
    import nbformat
    from nbclient import NotebookClient

    nb = read(path)
    full_mode()
    # the kernel writes a line per trained model it loads (vaecourse.cache)
    log = Path(
        tempfile.mkstemp(prefix="vaecourse-models-", suffix=".jsonl")[1]
    )
    os.environ["VAECOURSE_MODEL_LOG"] = str(log)
    start = time.perf_counter()
    cell_seconds = {}  # each cell's run time, for the teachers' page

    def started(cell, cell_index):
        cell_seconds[cell.id] = time.perf_counter()

    def completed(cell, cell_index, execute_reply):
        cell_seconds[cell.id] = time.perf_counter() - cell_seconds[cell.id]

    try:
        NotebookClient(
            nb,
            timeout=3600,
            kernel_name="python3",
            record_timing=False,
            # live widgets are for Jupyter; the site has its own explorers
            store_widget_state=False,
            resources={"metadata": {"path": str(path.parent)}},
            on_cell_execute=started,  # just before the request is sent
            on_cell_executed=completed,  # once the kernel has replied
        ).execute()
        loaded = [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        os.environ.pop("VAECOURSE_MODEL_LOG")
        log.unlink()
    seconds = time.perf_counter() - start
    import torch

    nb.metadata["vaecourse"] = {
        "mode": "full",
        "inputs_sha256": inputs_digest(nb),
        "models": {m["name"]: m["digest"] for m in loaded},
        "seconds": round(seconds, 1),
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
        "torch": torch.__version__,
        "exercise_seconds": exercise_seconds(nb, cell_seconds),
    }
    nbformat.write(nb, path)
    return seconds


def exercise_seconds(nb, cell_seconds: dict) -> dict[str, float]:
    """{question number: seconds} of each exercise's code cells (its solution and
    its check), from the chapter's "## Exercises" heading on."""
    totals, number, inside = {}, None, False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            inside = inside or bool(EXERCISES.search(cell.source))
            found = QUESTION.findall(cell.source)
            number = found[-1] if found else number
        elif inside and number is not None and cell.id in cell_seconds:
            if "remove-cell" not in cell.metadata.get("tags", []):
                totals[number] = (
                    totals.get(number, 0.0) + cell_seconds[cell.id]
                )
    return {n: round(t, 2) for n, t in totals.items()}


def pretrain_jobs(names) -> list[str]:
    """Of the zoo models ``names``, the one-thread ones (with all they are trained from)
    that are not in the checkpoint cache, as jobs: each job names the model a worker
    loads, which trains the models it needs first. Longest chains first."""
    from vaecourse import cache, zoo

    def chain(recipe):
        return [n for need in recipe.needs for n in chain(need)] + [recipe]

    todo = {}
    for name in sorted(names):
        recipe = zoo.RECIPES.get(name)
        if recipe is None:
            continue
        models = chain(recipe)
        if all(r.threads == 1 for r in models) and not all(
            cache.entry_path(r).exists() for r in models
        ):
            todo[name] = models
    needed = {r.name for models in todo.values() for r in models[:-1]}
    jobs = [n for n in todo if n not in needed]
    return sorted(jobs, key=lambda n: -len(todo[n]))


def _train(name: str) -> None:
    from vaecourse import zoo

    zoo.load(name)


def full_mode() -> None:
    """Set this process (and the kernels and workers it starts) to full mode, with
    progress as plain lines and the text's claims asserted: the book's numbers, and
    pages without widget bars."""
    os.environ.pop("VAECOURSE_QUICK", None)
    os.environ["VAECOURSE_PROGRESS"] = "lines"
    from vaecourse.book import BUILD_ENV

    os.environ[BUILD_ENV] = "1"  # the text's claims are asserted


def pretrain(paths) -> None:
    """Train the missing one-thread models that the chapters ``paths`` load (as their
    last execution recorded), two at a time, before the chapters run.

    On two cores a one-thread training leaves a core idle. Each model still trains on
    one thread, in its own process, as its recipe says, so the weights are the ones its
    chapter would have trained; the chapters then load them from the cache. Models that
    train on every core are left to their chapters."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    names = {
        n
        for p in paths
        for n in read(p).metadata.get("vaecourse", {}).get("models", {})
    }
    jobs = pretrain_jobs(names)
    if len(jobs) < 2 or (os.cpu_count() or 1) < 2:
        return  # nothing to train side by side: the chapters train them
    print(
        f"training {len(jobs)} one-thread models, 2 at a time ...", flush=True
    )
    full_mode()
    start = time.perf_counter()
    try:
        with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
            list(pool.map(_train, jobs))
    # a model that fails here fails again in its chapter, which says where
    except Exception as e:
        print(
            f"  pre-training stopped ({e!r}); the chapters train what is left"
        )
    print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)


def glued(nb, name: str) -> str | None:
    """The text of a value a notebook glued under ``name``."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if (
                out.get("metadata", {}).get("scrapbook", {}).get("name")
                == name
            ):
                for mime, value in out.get("data", {}).items():
                    if mime.endswith("text/plain"):
                        return value.strip("'\"")
    return None


def run_times(nb) -> tuple[float, float] | None:
    """A chapter's measured run time with the cache filled, and from scratch (the
    stored training and evaluation times of what the run found in the cache added back); None
    when the committed run did not record them."""
    warm = nb.metadata.get("vaecourse", {}).get("seconds")
    run, cold = glued(nb, "chapter_seconds"), glued(nb, "chapter_cold_seconds")
    if warm is None or run is None or cold is None:
        return None
    return warm, warm + float(cold) - float(run)


def sync_student_edition() -> None:
    """The student-edition links in the chapters and the teachers' page's table."""
    from tools import student

    for path in student.sync_links():
        print(f"student-edition link updated in {path.relative_to(ROOT)}")
    if student.update_teachers():
        print(f"{student.TEACHERS.relative_to(ROOT)} updated")


def title(nb) -> str:
    """A chapter's title: its first level-1 heading."""
    return next(
        line.lstrip("# ").strip()
        for c in nb.cells
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if line.startswith("# ")
    )


def readme_table() -> str:
    """The README's chapter table: title, Colab link and measured run times."""
    rows = [
        "| chapter | open in Colab | CPU time, cache filled | CPU time, from scratch |",
        "|---|---|---|---|",
    ]
    for path in chapters():
        nb = read(path)
        times = run_times(nb)
        warm_text, cold_text = (
            (f"{times[0]:.0f}", f"{times[1]:.0f}") if times else ("?", "?")
        )
        rows.append(
            f"| {title(nb)} (`{path.relative_to(ROOT).as_posix()}`) | [Colab]({colab_url(path)}) "
            f"| {warm_text} s | {cold_text} s |"
        )
    return "\n".join(rows)


def update_readme() -> bool:
    """Rewrite the table between the README's markers; True if it changed."""
    path = ROOT / "README.md"
    text = path.read_text()
    start, end = (
        text.index(README_START) + len(README_START),
        text.index(README_END),
    )
    new = text[:start] + "\n" + readme_table() + "\n" + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "execute", help="execute stale chapters (or the ones named)"
    )
    run.add_argument("notebooks", nargs="*", type=Path)
    run.add_argument(
        "--all", action="store_true", help="execute every chapter"
    )
    sub.add_parser(
        "check", help="exit 1 if a chapter's committed outputs are stale"
    )
    sub.add_parser("readme", help="rewrite the README's chapter table")
    args = parser.parse_args(argv)

    if args.command == "check":
        stale = {p: staleness(p) for p in chapters()}
        for p, why in stale.items():
            print(
                f"{'STALE' if why else 'fresh'}  {p.relative_to(ROOT)}"
                + (f": {why}" if why else "")
            )
        return 1 if any(stale.values()) else 0
    if args.command == "readme":
        print(
            "README.md updated"
            if update_readme()
            else "README.md already up to date"
        )
        for path in sync_install_urls():
            print(f"install URL updated in {path.relative_to(ROOT)}")
        sync_student_edition()
        return 0

    todo = [p.resolve() for p in args.notebooks] or [
        p for p in chapters() if args.all or staleness(p)
    ]
    if not todo:
        print("Every chapter's outputs are fresh: nothing to execute.")
    else:
        pretrain(todo)
    for path in todo:
        print(
            f"executing {path.relative_to(ROOT)} (full mode) ...", flush=True
        )
        try:
            seconds = execute(path)
        except (
            Exception
        ) as e:  # keep the committed outputs; say which cell failed
            print(f"FAILED: {path.relative_to(ROOT)}\n{e}", file=sys.stderr)
            return 1
        print(f"  done in {seconds:.1f} s", flush=True)
    update_readme()
    sync_install_urls()
    sync_student_edition()
    return 0


if __name__ == "__main__":
    sys.exit(main())
