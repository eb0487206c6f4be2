"""The checkpoint cache's keys cover what decides a model's weights: its recipe,
the source of the code that trains it, the models it is trained from, the data,
torch's version, the CPU's fast dtype and quick mode. Editing a training
function must retrain the models it trains, and only those."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from tools import build
from vaecourse import cache, zoo
from vaecourse.chapters import gan, vae

pytestmark = pytest.mark.usefixtures("isolated")

DIGESTS = (
    "import json, vaecourse, vaecourse.zoo as z; "
    "print(json.dumps([vaecourse.__file__, "
    "{n: r.digest() for n, r in z.RECIPES.items()}]))"
)


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    """A function that copies the package, applies an edit to one of its
    files, and returns every recipe's digest as that copy computes it."""
    root = tmp_path_factory.mktemp("copies")

    def digests(edit=None):
        target = root / f"copy{len(list(root.iterdir()))}"
        shutil.copytree(build.ROOT / "vaecourse", target / "vaecourse")
        if edit:
            path, old, new = edit
            file = target / "vaecourse" / path
            text = file.read_text()
            assert text.count(old) == 1, f"{old!r} is not once in {path}"
            file.write_text(text.replace(old, new))
        env = {**os.environ, "PYTHONPATH": str(target)}
        env.pop("VAECOURSE_QUICK", None)
        out = subprocess.run(
            [sys.executable, "-c", DIGESTS],
            capture_output=True,
            text=True,
            env=env,
            cwd=target,
            check=True,
        ).stdout
        where, result = json.loads(out)
        assert where.startswith(str(target)), "imported the wrong package"
        return result

    return digests


def changed(before, after):
    return {name for name in before if before[name] != after[name]}


def test_editing_a_training_function_changes_the_keys_of_the_models_it_trains(
    package_copy,
):
    before = package_copy()
    # the VAE recipe's KL warm-up reaches beta over 40% of the steps, not 30%
    after = package_copy(
        (
            "chapters/vae.py",
            "warmup_steps = kl_warmup * total_steps(",
            "warmup_steps = 4 / 3 * kl_warmup * total_steps(",
        )
    )
    moved = changed(before, after)
    # every model trained by train_vae moves: the VAE chapter's, the β-VAEs
    # (train_beta_vae calls it) and the CVAEs (train_cvae calls it)
    assert {"vae-main", "vae-2d", "beta-vae-4", "cvae-8d"} <= moved
    # so do the models trained from the main VAE
    assert {"vae-official-recipe", "latent-ddpm-linear"} <= moved
    # models that never run train_vae keep their keys
    assert not moved & {
        "gan-stable",
        "mnist-classifier",
        "ae-bce",
        "ddpm-cosine",
    }


def test_editing_a_function_that_training_calls_changes_the_key(package_copy):
    before = package_copy()
    # fit is called by train_vae: every model trained through fit moves
    after = package_copy(
        (
            "train.py",
            "optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)",
            "optimizer = torch.optim.Adam(model.parameters(), lr=lr)",
        )
    )
    moved = changed(before, after)
    assert {"vae-main", "ae-bce", "mnist-classifier", "ddpm-linear"} <= moved
    # the GAN has its own loop, and the linear autoencoder its own full-batch one
    assert not moved & {"gan-stable", "gan-fast-generator", "ae-linear"}


def test_comments_docstrings_and_formatting_keep_every_key(package_copy):
    before = package_copy()
    after = package_copy(
        (
            "chapters/vae.py",
            "    dtype = fast_dtype() if mixed_precision else torch.float32\n",
            "    # the matrix products' precision\n"
            "    dtype = (\n"
            "        fast_dtype() if mixed_precision else torch.float32\n"
            "    )\n",
        )
    )
    assert changed(before, after) == set()
    after = package_copy(
        (
            "chapters/vae.py",
            '"""Train ``model`` on ``images`` with the book\'s recipe',
            '"""Train ``model`` on ``images`` with this chapter\'s recipe',
        )
    )
    assert changed(before, after) == set()


def test_editing_code_no_training_runs_keeps_every_key(package_copy):
    before = package_copy()
    after = package_copy(
        (
            "chapters/vae.py",
            "def iw_nll(model, x, samples=1000, batch_size=100, chunk=50, seed=0):",
            "def iw_nll(model, x, samples=1000, batch_size=100, chunk=40, seed=0):",
        )
    )
    assert changed(before, after) == set()


def test_a_recipe_setting_changes_the_key_and_the_models_trained_from_it():
    main = zoo.RECIPES["vae-main"]
    official = zoo.RECIPES["vae-official-recipe"]
    longer = replace(main, settings={**main.settings, "epochs": 46})
    assert longer.digest() != main.digest()
    assert replace(official, needs=(longer,)).digest() != official.digest()
    assert replace(main, threads=2).digest() != main.digest()
    assert replace(main, seed=1).digest() != main.digest()


def test_the_key_of_a_model_changes_with_its_class_but_not_another_class():
    stable = zoo.RECIPES["gan-stable"]
    assert "vaecourse.chapters.gan.GAN" in cache.code_sources(stable.model)
    sources = cache.code_sources(zoo.RECIPES["vae-main"].model)
    assert "vaecourse.chapters.vae.VAE" in sources
    assert (
        "vaecourse.chapters.autoencoders.mlp" in sources
    )  # VAE builds with it
    assert not any(
        name.startswith("vaecourse.chapters.gan") for name in sources
    )


def test_the_key_follows_defaults_and_constants(monkeypatch):
    # l1_loss's weight is a default set from a constant: not in its source text
    recipe = zoo.RECIPES["regularized-sparse-l1"]
    before = recipe.digest()
    from vaecourse.chapters import regularized

    monkeypatch.setattr(regularized.l1_loss, "__defaults__", (2.0,))
    assert recipe.digest() != before


def test_the_cache_key_holds_the_machine_and_the_data(monkeypatch):
    recipe = zoo.RECIPES["ae-linear"]
    key = cache.cache_key(recipe)
    assert key["torch"] == ".".join(torch.__version__.split(".")[:2])
    monkeypatch.setattr(torch, "__version__", "9.9.0")
    assert cache.cache_key(recipe) != key
    monkeypatch.undo()
    monkeypatch.setattr(cache, "fast_dtype", lambda: torch.float16)
    assert cache.cache_key(recipe) != key
    monkeypatch.undo()
    monkeypatch.setenv("VAECOURSE_QUICK", "1")
    assert cache.cache_key(recipe) != key
    monkeypatch.delenv("VAECOURSE_QUICK")
    digest = recipe.digest()
    monkeypatch.setattr(cache, "DATA_FINGERPRINT", "other data")
    assert recipe.digest() != digest


def test_an_entry_made_by_other_code_is_not_used(quick_zoo):
    """A cache restored from an older build (as CI's cache action does) holds
    entries of code that changed: they sit under other keys and are not used."""
    recipe = zoo.RECIPES["ae-linear"]
    first = cache.load(recipe)
    assert not first.record.from_cache
    assert cache.load(recipe).record.from_cache
    # the same recipe trained by other code: another key, so another file
    edited = replace(recipe, train=vae.train_official_recipe)
    assert cache.entry_path(edited) != cache.entry_path(recipe)
    # and a file at the right place that another recipe wrote is refused
    payload = cache.load_entry(first.record.path)
    payload["key"] = {**payload["key"], "recipe": "another recipe's digest"}
    cache.save_entry(first.record.path, payload)
    with pytest.warns(UserWarning, match="another recipe or machine"):
        again = cache.load(recipe)
    assert not again.record.from_cache


@pytest.fixture
def quick_zoo(isolated, mnist_cache, monkeypatch):
    monkeypatch.setenv("VAECOURSE_QUICK", "1")


def test_a_recipe_refuses_what_the_key_cannot_follow():
    with pytest.raises(TypeError, match="module-level functions"):
        cache.Recipe("x", gan.GAN, lambda m: [], dict, {})
    with pytest.raises(TypeError, match="plain values"):
        cache.Recipe(
            "x", gan.GAN, gan.train_gan, dict, {"images": torch.ones(1)}
        )
