"""Run every chapter the way Google Colab does, in quick mode: CI's check that the book
works where its readers open it.

Colab (as of late 2026) has Python 3.13 with a preinstalled CUDA build of torch 2.11,
ipywidgets 7.7.1 and current NumPy and matplotlib, and imports ``google.colab`` before the
first cell. A chapter's own first cell then installs this package from the repository.
Here the same happens, with two differences that keep it offline: the install comes from
this clone (the repository URL of ``_config.yml`` replaced by the clone's path, nothing
else in the cell changed), and MNIST comes from the data cache that ``make test`` filled.

    python -m tools.colab [NOTEBOOK ...]   # every chapter, or those named

The environment is made once in ``_build/colab``, with ``$COLAB_PYTHON`` or the first
Python 3.13 found (pyenv's, then ``python3.13`` on the PATH). Each chapter runs from a working directory outside
the repository. The run fails if a chapter fails, or if installing the package replaced
the preinstalled torch or ipywidgets (Colab must never reinstall them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.build import ROOT, chapters, repository_url

ENV = ROOT / "_build" / "colab"
# What Colab has before a chapter runs: these versions must survive the chapters' installs.
PREINSTALLED = {"torch": "2.11.0", "ipywidgets": "7.7.1"}
# Others Colab preinstalls that the chapters import (scikit-learn is not a dependency of
# the package: Colab has it, and `make env` installs it with the book's extras).
OTHERS = [
    "numpy",
    "matplotlib",
    "scipy",
    "scikit-learn",
    "pillow",
    "tqdm",
    "ipykernel",
    "nbclient",
]
# Colab imports google.colab at start; the chapters' first cell asks for it.
STUB = '"""Stands in for Colab\'s module: its presence is what the chapters test."""\n'
STARTUP = "import google.colab  # as Colab does before the first cell\n"


def python() -> Path:
    return ENV / "bin" / "python"


def find_python() -> str:
    """A Python 3.13 interpreter: ``$COLAB_PYTHON``, pyenv's 3.13, or python3.13."""
    pyenv = (
        Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    )
    candidates = [
        os.environ.get("COLAB_PYTHON"),
        *sorted(str(p) for p in pyenv.glob("3.13*/bin/python3.13")),
        shutil.which("python3.13"),
    ]
    for candidate in filter(None, candidates):
        check = subprocess.run(
            [
                candidate,
                "-c",
                "import sys; print(sys.version_info[:2] == (3, 13))",
            ],
            capture_output=True,
            text=True,
        )
        if check.stdout.strip() == "True":
            return candidate
        if candidate == os.environ.get("COLAB_PYTHON"):
            sys.exit(
                f"tools.colab: COLAB_PYTHON={candidate} is not a Python 3.13"
            )
    sys.exit(
        "tools.colab: no Python 3.13 found. Install one (pyenv install 3.13) or set "
        "COLAB_PYTHON to a Python 3.13 interpreter."
    )


def make_env() -> None:
    """The Colab-like environment, made once (about 5 GB: pip resolves only CUDA builds
    of torch for Python 3.13)."""
    stamp = ENV / ".installed"
    wanted = json.dumps([PREINSTALLED, OTHERS])
    # a run that failed the version check leaves the wrong torch behind: start again
    if (
        stamp.exists()
        and stamp.read_text() == wanted
        and versions() == PREINSTALLED
    ):
        return
    interpreter = find_python()
    shutil.rmtree(ENV, ignore_errors=True)
    subprocess.run([interpreter, "-m", "venv", str(ENV)], check=True)
    pins = [f"{name}=={version}" for name, version in PREINSTALLED.items()]
    subprocess.run(
        [str(python()), "-m", "pip", "install", "--quiet", *pins, *OTHERS],
        check=True,
    )
    site = subprocess.run(
        [
            str(python()),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "google" / "colab").mkdir(parents=True, exist_ok=True)
    (Path(site) / "google" / "colab" / "__init__.py").write_text(STUB)
    stamp.write_text(wanted)


def versions() -> dict[str, str]:
    """The installed versions of the preinstalled packages that must not change."""
    code = (
        "import json, importlib.metadata as m; "
        f"print(json.dumps({{n: m.version(n) for n in {list(PREINSTALLED)}}}))"
    )
    out = subprocess.run(
        [str(python()), "-c", code], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def colab_copy(path: Path, workdir: Path) -> Path:
    """The chapter as Colab would run it from this clone: its first cell installs from
    the clone's path instead of the repository URL; nothing else changes."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    url = f"git+{repository_url()}"
    if url not in first.source:
        raise SystemExit(
            f"{path.name}: the first cell does not install from {url} (_config.yml)"
        )
    first.source = first.source.replace(url, ROOT.as_uri())
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    out = workdir / path.name
    nbformat.write(nb, out)
    return out


RUNNER = """
import sys
import nbformat
from nbclient import NotebookClient

path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
NotebookClient(nb, timeout=1200, kernel_name="python3",
               resources={"metadata": {"path": sys.argv[2]}}).execute()
"""


def run(path: Path, workdir: Path, ipython_dir: Path) -> None:
    """Execute the Colab copy of ``path`` in quick mode, from ``workdir``."""
    env = dict(
        os.environ,
        VAECOURSE_QUICK="1",
        IPYTHONDIR=str(ipython_dir),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    # Nothing of the book's own environment may leak in.
    for name in (
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "VAECOURSE_PROGRESS",
        "VAECOURSE_DEVICE",
    ):
        env.pop(name, None)
    env["PATH"] = f"{ENV / 'bin'}{os.pathsep}{env['PATH']}"
    copy = colab_copy(path, workdir)
    subprocess.run(
        [str(python()), "-c", RUNNER, str(copy), str(workdir)],
        check=True,
        cwd=workdir,
        env=env,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    todo = [p.resolve() for p in args.notebooks] or chapters()
    start = time.perf_counter()
    make_env()
    print(
        f"Colab-like environment ready in {time.perf_counter() - start:.0f} s: {versions()}"
    )
    before = versions()
    failed, times = [], {}
    with tempfile.TemporaryDirectory(prefix="vaecourse-colab-") as tmp:
        ipython_dir = Path(tmp) / "ipython"
        startup = ipython_dir / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-colab.py").write_text(STARTUP)
        for path in todo:
            workdir = Path(tmp) / path.stem
            workdir.mkdir()
            t0 = time.perf_counter()
            try:
                run(path, workdir, ipython_dir)
            except subprocess.CalledProcessError:
                failed.append(path.name)
            times[path.name] = time.perf_counter() - t0
            now = versions()
            if now != before:
                print(
                    f"FAILED: installing vaecourse in {path.name} replaced the preinstalled "
                    f"packages {before} with {now}; Colab must never reinstall them",
                    file=sys.stderr,
                )
                return 1
            status = "FAILED" if path.name in failed else "ok"
            print(
                f"  {status:6s} {path.name} ({times[path.name]:.0f} s)",
                flush=True,
            )
    print(
        f"Colab-like quick run: {sum(times.values()):.0f} s for {len(times)} chapters"
    )
    if failed:
        print(
            f"FAILED in the Colab-like environment: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
