"""The book's trained models: one recipe each, named, printable, and complete
(each recipe's training function accepts exactly what the recipe gives it)."""

from __future__ import annotations

import inspect

import pytest

from vaecourse import cache, zoo

pytestmark = pytest.mark.usefixtures("mnist_cache")


def test_every_recipe_is_registered_under_its_name():
    assert zoo.RECIPES
    for name, recipe in zoo.RECIPES.items():
        assert recipe.name == name
        for needed in recipe.needs:
            assert zoo.RECIPES[needed.name] is needed


@pytest.mark.parametrize("name", sorted(zoo.RECIPES))
def test_a_recipe_gives_its_training_function_what_it_takes(name):
    recipe = zoo.RECIPES[name]
    needed = [object() for _ in recipe.needs]  # stand-ins: not trained here
    if recipe.needs:
        keys = set(inspect.signature(recipe.data).parameters)
        assert len(keys) == len(recipe.needs)
        data = dict.fromkeys(_data_keys(recipe))
    else:
        data = recipe.data(*needed)
    signature = inspect.signature(recipe.train)
    signature.bind(recipe.model(), **data, **recipe.settings)  # raises if not
    text = str(recipe)
    assert text.startswith(f"{name}: ") and "trained by" in text
    # the whole description of the data, however its docstring is wrapped
    doc = " ".join(inspect.getdoc(recipe.data).split())
    assert doc.rstrip(".") in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) <= 79


def _data_keys(recipe):
    # the keys a data function that needs trained models returns, from its code
    source = inspect.getsource(recipe.data)
    return [
        k
        for k in ("images", "seconds", "codes", "indices")
        if f'"{k}"' in source
    ]


def test_load_names_the_models_when_asked_for_an_unknown_one():
    with pytest.raises(KeyError, match="vae-main"):
        zoo.load("vae-mian")


def test_the_digest_is_stable_and_tells_recipes_apart():
    digests = {name: r.digest() for name, r in zoo.RECIPES.items()}
    assert digests == {name: r.digest() for name, r in zoo.RECIPES.items()}
    assert len(set(digests.values())) == len(digests)


def test_a_recipe_cannot_be_changed_after_it_is_made():
    recipe = zoo.RECIPES["vae-main"]
    with pytest.raises(AttributeError):
        recipe.settings = {}
    with pytest.raises(TypeError):
        recipe.settings["epochs"] = 1
    assert isinstance(recipe, cache.Recipe)


def test_a_seed_recipe_is_its_seed_0_recipe_with_another_seed():
    """Chapters compare models across training seeds: "<name>-seed<N>" must be
    "<name>" with seed N (initial weights; the batch order too where the
    training function takes a seed), and nothing else that decides weights.
    The progress label and the number of threads (which only reorders sums)
    may differ."""
    seeded = [n for n in zoo.RECIPES if "-seed" in n]
    assert len(seeded) >= 70
    for name in seeded:
        base_name, seed = name.rsplit("-seed", 1)
        recipe, base = zoo.RECIPES[name], zoo.RECIPES[base_name]
        assert recipe.seed == int(seed) > 0 and base.seed == 0, name
        for part in ("model", "train", "data", "needs"):
            assert cache.describe(getattr(recipe, part)) == cache.describe(
                getattr(base, part)
            ), (name, part)
        settings, base_settings = dict(recipe.settings), dict(base.settings)
        assert settings.pop("seed", int(seed)) == int(seed), name
        settings.pop("desc", None), base_settings.pop("desc", None)
        assert cache.describe(settings) == cache.describe(base_settings), name
        assert recipe.digest() != base.digest(), name
    # the regularized chapter's table: six models, seeds 1 and 2
    assert sum(n.startswith("regularized-") for n in seeded) == 12
