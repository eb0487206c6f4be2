"""The Colab-like run (tools/colab.py): what it changes in a chapter, and that it finds
its interpreter or says how to get one. The run itself is `make colab`, in CI."""

from __future__ import annotations

import nbformat
import pytest

from tools import build, colab


def test_the_colab_copy_installs_from_the_clone_and_changes_nothing_else(
    tmp_path,
):
    path = build.chapters()[0]
    original = build.read(path)
    copy = nbformat.read(colab.colab_copy(path, tmp_path), as_version=4)
    first = next(c for c in copy.cells if c.cell_type == "code")
    url = f"git+{build.repository_url()}"
    assert url not in first.source
    assert f"vaecourse @ {build.ROOT.as_uri()}" in first.source
    assert (
        first.source.replace(build.ROOT.as_uri(), url)
        == next(c for c in original.cells if c.cell_type == "code").source
    )
    assert [c.source for c in copy.cells[1:]] == [
        c.source for c in original.cells[1:]
    ]
    assert all(
        not c.get("outputs") for c in copy.cells if c.cell_type == "code"
    )


def test_a_chapter_without_the_configured_install_is_refused(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%pip install something-else")]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(SystemExit, match="does not install from"):
        colab.colab_copy(path, tmp_path / "out")


def test_a_wrong_interpreter_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("COLAB_PYTHON", "/bin/true")
    with pytest.raises(SystemExit, match="is not a Python 3.13"):
        colab.find_python()
