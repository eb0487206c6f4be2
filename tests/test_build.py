"""Freshness per chapter: a chapter is stale when its own code cells, the
vaecourse modules it imports (followed through their imports), or the recipes
of the trained models it loads change; not when any file of the package does."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import nbformat
import pytest

from tools import build
from vaecourse import cache, zoo


@pytest.fixture
def tree(tmp_path):
    """A copy of the package and the chapters, to edit."""
    shutil.copytree(build.ROOT / "vaecourse", tmp_path / "vaecourse")
    shutil.copytree(build.ROOT / "book", tmp_path / "book")
    return tmp_path


def digest(root, chapter):
    return build.inputs_digest(
        build.read(root / "book" / f"{chapter}.ipynb"), root
    )


def touch(root, path, text):
    file = root / path
    file.write_text(file.read_text() + text)


def test_a_copy_of_the_tree_gives_the_same_digests(tree):
    for chapter in ("kl", "vae", "comparison"):
        assert digest(tree, chapter) == digest(build.ROOT, chapter)


def test_touching_the_explorer_leaves_the_kl_chapter_fresh(tree):
    kl, vae, cvae = (digest(tree, c) for c in ("kl", "vae", "cvae"))
    touch(tree, "vaecourse/explorer/explorer.js", "\n// touched\n")
    assert digest(tree, "kl") == kl
    # the chapters that show an explorer depend on its script
    assert digest(tree, "vae") != vae and digest(tree, "cvae") != cvae
    vae = digest(tree, "vae")
    touch(tree, "vaecourse/explorer/export.py", "\n# touched\n")
    assert digest(tree, "kl") == kl and digest(tree, "vae") != vae


def test_a_module_counts_for_the_chapters_that_import_it(tree):
    before = {c: digest(tree, c) for c in ("kl", "elbo", "vae", "gan")}
    touch(tree, "vaecourse/chapters/kl.py", "\n# touched\n")
    after = {c: digest(tree, c) for c in before}
    # the KL chapter imports chapters.kl, the ELBO chapter imports mvn_kl from
    # it, the VAE chapter gaussian_kl_standard; the GAN chapter none of it
    assert after["kl"] != before["kl"] and after["elbo"] != before["elbo"]
    assert after["vae"] != before["vae"]
    assert after["gan"] == before["gan"]


def test_the_registry_is_not_followed_into_every_chapter_module(tree):
    # the VAE chapter loads models from the zoo, which imports every chapter
    # module; a change to the GAN's module must not make the VAE chapter stale
    vae = digest(tree, "vae")
    touch(tree, "vaecourse/chapters/gan.py", "\n# touched\n")
    touch(tree, "vaecourse/zoo.py", "\n# touched\n")
    assert digest(tree, "vae") == vae


def test_a_changed_cell_makes_its_chapter_stale(tree):
    path = tree / "book" / "kl.ipynb"
    nb = build.read(path)
    before = build.inputs_digest(nb, tree)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.source += "\n# touched"
    assert build.inputs_digest(nb, tree) != before


def test_imported_modules_reads_every_form_of_import():
    source = (
        "%pip install nothing\n"
        "import math\n"
        "import vaecourse.data\n"
        "from vaecourse import zoo, book\n"
        "from vaecourse.chapters.vae import VAE\n"
        "from vaecourse.chapters import gan as g\n"
        "def f():\n"
        "    from vaecourse.metrics import classify\n"
        "from torch import nn\n"
    )
    assert build.imported_modules(source) == {
        "vaecourse",
        "vaecourse.data",
        "vaecourse.zoo",
        "vaecourse.book",
        "vaecourse.chapters.vae",
        "vaecourse.chapters",
        "vaecourse.chapters.gan",
        "vaecourse.metrics",
    }


@pytest.fixture
def stamped(tmp_path):
    """A chapter that loads vae-main, stamped as if `make book` had just run."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        nbformat.v4.new_code_cell(
            'from vaecourse import zoo\nzoo.load("vae-main")'
        )
    )
    nb.metadata["vaecourse"] = {
        "mode": "full",
        "inputs_sha256": build.inputs_digest(nb),
        "models": {"vae-main": zoo.RECIPES["vae-main"].digest()},
    }
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_changed_recipe_makes_the_chapters_that_load_it_stale(
    stamped, monkeypatch
):
    assert build.staleness(stamped) is None
    main = zoo.RECIPES["vae-main"]
    faster = replace(main, settings={**main.settings, "epochs": 44})
    monkeypatch.setitem(zoo.RECIPES, "vae-main", faster)
    assert "vae-main" in build.staleness(stamped)
    monkeypatch.delitem(zoo.RECIPES, "vae-main")
    assert "vae-main" in build.staleness(stamped)


def test_the_models_a_chapter_loads_are_logged(
    isolated, mnist_cache, monkeypatch, tmp_path
):
    log = tmp_path / "models.jsonl"
    monkeypatch.setenv("VAECOURSE_MODEL_LOG", str(log))
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    zoo.load("vqvae-prior")  # trains vqvae-revive first: both are logged
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {m["name"]: m["digest"] for m in lines} == {
        name: zoo.RECIPES[name].digest()
        for name in ("vqvae-revive", "vqvae-prior")
    }
    assert cache.USED[-1].path.name.startswith("vqvae-prior-")


def test_pretraining_takes_the_missing_one_thread_models_with_their_needs(
    isolated,
):
    names = {"vae-main", "vae-official-recipe", "gan-stable", "vqvae-plain"}
    # vae-main trains inside the official recipe's job (its data needs
    # vae-main's training time); the GAN trains on every core, in its chapter
    assert build.pretrain_jobs(names) == ["vae-official-recipe", "vqvae-plain"]
    cache.entry_path(zoo.RECIPES["vqvae-plain"]).parent.mkdir(parents=True)
    cache.entry_path(zoo.RECIPES["vqvae-plain"]).write_bytes(b"cached")
    assert build.pretrain_jobs(names) == ["vae-official-recipe"]
    assert build.pretrain_jobs({"vae-main"}) == ["vae-main"]


def _install_notebook(path, url, extra=""):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            'import sys\n\nif "google.colab" in sys.modules:\n'
            f'    %pip install --quiet "vaecourse @ git+{url}"{extra}'
        ),
        nbformat.v4.new_code_cell("x = 1"),
    ]
    nbformat.write(nb, path)
    return nb


def test_the_install_url_is_not_an_input_but_the_rest_of_its_cell_is(tmp_path):
    """Moving the repository re-executes nothing; any other change to the cell does."""
    a = _install_notebook(tmp_path / "a.ipynb", "https://github.com/a/b")
    b = _install_notebook(tmp_path / "b.ipynb", "https://example.org/c/d.git")
    c = _install_notebook(
        tmp_path / "c.ipynb", "https://github.com/a/b", " numpy"
    )
    assert build.inputs_digest(a) == build.inputs_digest(b)
    assert build.inputs_digest(a) != build.inputs_digest(c)


def test_readme_writes_the_configured_url_into_every_install_cell(
    tmp_path, monkeypatch
):
    path = tmp_path / "a.ipynb"
    _install_notebook(path, "https://github.com/old/place")
    monkeypatch.setattr(build, "chapters", lambda: [path])
    monkeypatch.setattr(
        build, "repository_url", lambda: "https://github.com/new/home"
    )
    assert build.sync_install_urls() == [path]
    first = nbformat.read(path, as_version=4).cells[0].source
    assert '"vaecourse @ git+https://github.com/new/home"' in first
    assert "old/place" not in first
    assert build.sync_install_urls() == []  # already in step
