"""The book's trained models: one recipe each, and the only place that trains
for the cache.

A chapter loads a model by name, ``zoo.load("vae-main")``, and shows how it was
made with ``print(zoo.RECIPES["vae-main"])``. The first load trains it (the
models it is trained from first) and stores it in the checkpoint cache; later
loads, in any chapter, take the same weights from there in seconds. A recipe is
the whole description: change a setting here, or the code that trains the
model, and the next load trains a new one.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from functools import partial

import torch
from torch import nn

from vaecourse.cache import Recipe
from vaecourse.cache import load as _load
from vaecourse.chapters import (
    autoencoders,
    beta_vae,
    cvae,
    diffusion,
    gan,
    likelihood,
    regularized,
    reparameterization,
    vae,
    vqvae,
)
from vaecourse.data import (
    binarize_static,
    gaussian_noise,
    load_mnist,
    masking_noise,
    train_val_split,
)
from vaecourse.metrics import Classifier, classifier_loss
from vaecourse.train import fit

RECIPES: dict[str, Recipe] = {}


def load(name: str) -> nn.Module:
    """The trained model ``name`` (a key of ``RECIPES``), in eval mode, with
    its training record as ``.record`` (history, training time, whether it came
    from the cache)."""
    if name not in RECIPES:
        raise KeyError(
            f"no model {name!r} in the zoo; the models are {sorted(RECIPES)}"
        )
    return _load(RECIPES[name])


def _add(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def _add_seeds(names, threads=None, fit_seed=True) -> None:
    """Training seeds 1 and 2 of each named model ("<name>-seed1", "-seed2"),
    for the comparisons that training randomness decides: the same recipe with
    other initial weights and, with ``fit_seed``, another batch order and
    training noise (the training function's ``seed``)."""
    for seed in (1, 2):
        for name in names:
            base = RECIPES[name]
            settings = base.settings
            if fit_seed:
                settings = dict(settings, seed=seed)
            _add(
                replace(
                    base,
                    name=f"{name}-seed{seed}",
                    settings=settings,
                    threads=threads or base.threads,
                    seed=seed,
                )
            )


# --- The data the models train on
# ---------------------------------------------------


def _fit_split():
    train_images, train_labels = load_mnist("train")
    return train_val_split(train_images, train_labels)


def train_images():
    """all 60,000 training images"""
    return {"images": load_mnist("train")[0]}


def train_images_as_data():
    """all 60,000 training images"""
    return {"train_data": (load_mnist("train")[0],)}


def labelled_train_images():
    """all 60,000 training images and their labels"""
    return {"train_data": load_mnist("train")}


def fit_images():
    """the 50,000 training images of the fixed split (the other 10,000 for
    validation)"""
    (fit_x, _), (val_x, _) = _fit_split()
    return {"train_data": (fit_x,), "val_data": (val_x,)}


def fit_vectors():
    """the 50,000 training images of the fixed split, as vectors of 784 grey
    levels"""
    (fit_x, _), _ = _fit_split()
    return {"train_data": (fit_x.flatten(1),)}


def fit_binary_vectors():
    """the 50,000 training images of the fixed split, binarized once (seed 0),
    as vectors"""
    (fit_x, _), _ = _fit_split()
    return {"train_data": (binarize_static(fit_x.flatten(1), seed=0),)}


def fit_images_30k():
    """the first 30,000 of the fixed split's 50,000 training images (a random
    subset)"""
    (fit_x, _), _ = _fit_split()
    return {"images": fit_x[:30_000]}


def fit_images_and_labels():
    """the 50,000 training images of the fixed split and their labels"""
    (fit_x, fit_y), _ = _fit_split()
    return {"images": fit_x, "labels": fit_y}


def fit_images_plain():
    """the 50,000 training images of the fixed split"""
    (fit_x, _), _ = _fit_split()
    return {"images": fit_x}


def circle_points():
    """4,000 points on the unit circle (seed 3)"""
    angles = (
        2
        * math.pi
        * torch.rand(4000, generator=torch.Generator().manual_seed(3))
    )
    return {"train_data": (torch.stack([angles.cos(), angles.sin()], dim=1),)}


def vq_codes(vq):
    """the code indices that vqvae-revive gives the 50,000 training images of
    the fixed split"""
    (fit_x, _), _ = _fit_split()
    return {"indices": vqvae.encode_indices(vq, fit_x)}


def vae_codes(main_vae):
    """vae-main's posterior means of all 60,000 training images, binarized
    once (seed 0)"""
    return {"codes": diffusion.vae_codes(main_vae, load_mnist("train")[0])}


def train_images_for_the_same_time(main_vae):
    """all 60,000 training images, for vae-main's recorded training time (its
    weights are not used)"""
    return {
        "images": load_mnist("train")[0],
        "seconds": main_vae.record.train_seconds,
    }


# --- The measuring classifier
# ------------------------------------------------------------

_add(
    Recipe(
        "mnist-classifier",
        Classifier,
        fit,
        labelled_train_images,
        dict(
            loss_fn=classifier_loss,
            epochs=2,
            batch_size=128,
            lr=3e-3,
            warmup=0.15,
            desc="MNIST classifier",
        ),
    )
)

# --- Autoencoders
# ------------------------------------------------------------------------

Autoencoder = autoencoders.Autoencoder
for name, model, loss, epochs in [
    ("ae-bce", partial(Autoencoder, 32, (256,)), autoencoders.bce_loss, 3),
    ("ae-mse", partial(Autoencoder, 32, (256,)), autoencoders.mse_loss, 3),
    ("ae-vanilla", partial(Autoencoder, 32, ()), autoencoders.bce_loss, 3),
    ("ae-narrow", partial(Autoencoder, 32, (64,)), autoencoders.bce_loss, 3),
    (
        "ae-deep",
        partial(Autoencoder, 32, (256, 128)),
        autoencoders.bce_loss,
        3,
    ),
    (
        "ae-convolutional",
        autoencoders.ConvAutoencoder,
        autoencoders.bce_loss,
        3,
    ),
    ("ae-tied", autoencoders.TiedAutoencoder, autoencoders.bce_loss, 3),
    (
        "ae-overcomplete",
        partial(Autoencoder, 1024, ()),
        autoencoders.mse_loss,
        2,
    ),
    *[
        (f"ae-k{k}", partial(Autoencoder, k, (256,)), autoencoders.bce_loss, 3)
        for k in (2, 8, 64)
    ],
]:
    _add(
        Recipe(
            name,
            model,
            fit,
            fit_images,
            dict(
                loss_fn=loss, epochs=epochs, batch_size=256, lr=5e-3, desc=name
            ),
        )
    )
# Two more training seeds ("ae-bce-seed1", "-seed2", ...) of the models the
# chapter compares with each other (losses, architectures, code sizes): one
# training costs a few seconds, so its comparisons rest on three runs. On one
# thread, so that `make book` trains two at a time.
_add_seeds(
    [
        "ae-bce",
        "ae-mse",
        "ae-vanilla",
        "ae-narrow",
        "ae-deep",
        "ae-convolutional",
        "ae-tied",
        "ae-k2",
        "ae-k8",
        "ae-k64",
    ],
    threads=1,
)
_add(
    Recipe(
        "ae-linear",
        partial(autoencoders.LinearAutoencoder, 16),
        autoencoders.train_linear,
        fit_images_plain,
        dict(steps=1500, lr=1e-2),
    )
)

# --- Regularized autoencoders
# ------------------------------------------------------------

for name, loss in [
    ("plain", regularized.plain_loss),
    ("sparse-l1", regularized.l1_loss),
    ("sparse-kl", regularized.kl_loss),
    ("contractive", regularized.contractive_loss),
    (
        "denoising-gaussian",
        partial(
            regularized.denoising_loss,
            corrupt=partial(gaussian_noise, sigma=regularized.SIGMA),
        ),
    ),
    *[
        (
            f"denoising-masking-{nu}",
            partial(
                regularized.denoising_loss,
                corrupt=partial(masking_noise, nu=nu),
            ),
        )
        for nu in regularized.MASK_LEVELS
    ],
]:
    _add(
        Recipe(
            f"regularized-{name}",
            partial(regularized.SigmoidAutoencoder, 256),
            fit,
            fit_vectors,
            dict(loss_fn=loss, epochs=4, batch_size=128, lr=3e-3, desc=name),
        )
    )
# The chapter's side-by-side table repeats its six models with two more
# seeds of their initial weights (the batch order and the training noise
# stay those of fit's seed 0), "regularized-<name>-seed1" and "-seed2": one
# training costs about 10 s, so its comparisons rest on three runs, not one.
_add_seeds(
    [
        f"regularized-{name}"
        for name in [
            "plain",
            "sparse-l1",
            "sparse-kl",
            "denoising-gaussian",
            f"denoising-masking-{regularized.MASK_LEVELS[1]}",
            "contractive",
        ]
    ],
    fit_seed=False,
)
_add(
    Recipe(
        "regularized-toy-dae",
        partial(autoencoders.mlp, [2, 64, 64, 2], nn.Tanh),
        fit,
        circle_points,
        dict(
            loss_fn=regularized.toy_loss,
            epochs=40,
            batch_size=128,
            lr=3e-3,
            desc="circle",
            progress=False,
        ),
    )
)

# --- The reparameterization trick
# ----------------------------------------------------

# Three seeds of each (the seed sets the initial weights and the batch
# order): the chapter compares the objectives across seeds. Seed 0 keeps the
# name (and the key) it had before there were seeds.
for objective in ("reconstruction only", "KL only", "both"):
    for seed in (0, 1, 2):
        _add(
            Recipe(
                "rep-tiny-vae-"
                + objective.lower().replace(" ", "-")
                + (f"-seed{seed}" if seed else ""),
                reparameterization.TinyVAE,
                fit,
                fit_binary_vectors,
                dict(
                    loss_fn=partial(
                        reparameterization.objective_loss, objective=objective
                    ),
                    epochs=3,
                    batch_size=128,
                    lr=1e-3,
                    desc=objective,
                    **({"seed": seed} if seed else {}),
                ),
                seed=seed,
                # one thread: trained while the build machine was shared
                threads=1 if seed else None,
            )
        )

# --- The variational autoencoder
# -----------------------------------------------------

VAE_MAIN = _add(
    Recipe(
        "vae-main",
        partial(vae.VAE, 32, (512, 256), nn.SiLU),
        vae.train_vae,
        train_images,
        dict(
            epochs=45,
            batch_size=512,
            lr=1e-2,
            kl_warmup=0.3,
            mixed_precision=True,
        ),
        threads=1,
    )
)
_add(
    Recipe(
        "vae-official-recipe",
        partial(vae.VAE, 20, (400,), nn.ReLU),
        vae.train_official_recipe,
        train_images_for_the_same_time,
        dict(batch_size=128, lr=1e-3),
        needs=(VAE_MAIN,),
        threads=1,
    )
)
_add(
    Recipe(
        "vae-plain-ae",
        partial(Autoencoder, 32, (512, 256), nn.SiLU),
        vae.train_vae,
        train_images,
        dict(
            epochs=3,
            terms=vae.ae_terms,
            mixed_precision=True,
            desc="autoencoder",
        ),
    )
)
# the L experiment: three training seeds of each (seed 0 keeps its old name)
for (name, samples, epochs), seed in itertools.product(
    [
        ("vae-small-L1", 1, 1),
        ("vae-small-L4", 4, 1),
        ("vae-small-L1-2x", 1, 2),
    ],
    (0, 1, 2),
):
    _add(
        Recipe(
            name + (f"-seed{seed}" if seed else ""),
            partial(vae.VAE, 16, (256,), nn.SiLU),
            vae.train_vae,
            train_images,
            dict(
                epochs=epochs,
                terms=partial(vae.negative_elbo, samples=samples),
                desc=f"L = {samples}",
            )
            | (dict(seed=seed) if seed else {}),
            seed=seed,
        )
    )
_add(
    Recipe(
        "vae-2d",
        partial(vae.VAE, 2, (128, 64), nn.SiLU),
        vae.train_vae,
        train_images,
        dict(epochs=5, desc="2-D VAE"),
    )
)
_add(
    Recipe(
        "vae-2d-ae",
        partial(Autoencoder, 2, (128, 64), nn.SiLU),
        vae.train_vae,
        train_images,
        dict(epochs=5, terms=vae.ae_terms, desc="2-D autoencoder"),
    )
)
_add(
    Recipe(
        "vae-reference-001",
        vae.ReferenceVAE,
        fit,
        train_images_as_data,
        dict(
            loss_fn=vae.reference_fit_loss,
            epochs=5,
            batch_size=128,
            lr=1e-3,
            desc="source 001",
        ),
    )
)
for sigma in (0.05, 0.15, 0.5):
    _add(
        Recipe(
            f"vae-gaussian-{sigma}",
            partial(vae.VAE, 16, (256,), nn.SiLU),
            vae.train_vae,
            train_images,
            dict(
                epochs=3,
                binarize=False,
                terms=partial(vae.gaussian_negative_elbo, sigma=sigma),
                desc=f"sigma_x = {sigma}",
            ),
        )
    )

# --- The β-VAE and the conditional VAE
# ----------------------------------------------

for beta in beta_vae.BETAS:
    _add(
        Recipe(
            f"beta-vae-{beta:g}",
            partial(vae.VAE, 10, (256,)),
            beta_vae.train_beta_vae,
            fit_images_30k,
            dict(beta=beta, epochs=3),
        )
    )
# Two more training seeds of each ("beta-vae-<β>-seed1", "-seed2"): one
# training costs about 5 s, so the chapter compares the values of β across
# three runs. On one thread, so that `make book` trains two at a time.
_add_seeds([f"beta-vae-{beta:g}" for beta in beta_vae.BETAS], threads=1)
for latent_dim in (8, 2):
    _add(
        Recipe(
            f"cvae-{latent_dim}d",
            partial(cvae.CVAE, latent_dim, (256,)),
            cvae.train_cvae,
            fit_images_and_labels,
            dict(epochs=10),
        )
    )

# --- The VQ-VAE
# --------------------------------------------------------------------------

VQ_SETTINGS = dict(
    epochs=1, batch_size=128, lr=3e-3, beta=0.25, trace_every=25
)
# The VQ-VAEs train on one thread: on two, two runs of the same recipe gave
# different weights (the order in which threads add up gradients varies), and
# the chapter's counts of dead codes moved between builds.
VQVAE_REVIVE = _add(
    Recipe(
        "vqvae-revive",
        partial(vqvae.VQVAE, 128, 16, 16),
        vqvae.train_vqvae,
        fit_images_plain,
        dict(VQ_SETTINGS, revive_every=100, desc="VQ-VAE, with revival"),
        threads=1,
    )
)
_add(
    Recipe(
        "vqvae-plain",
        partial(vqvae.VQVAE, 128, 16, 16),
        vqvae.train_vqvae,
        fit_images_plain,
        dict(VQ_SETTINGS, revive_every=0, desc="VQ-VAE, without revival"),
        threads=1,
    )
)
for codes in (8, 32, 512):  # the codebook-size sweep, with revival
    _add(
        Recipe(
            f"vqvae-K{codes}",
            partial(vqvae.VQVAE, codes, 16, 16),
            vqvae.train_vqvae,
            fit_images_plain,
            dict(VQ_SETTINGS, revive_every=100, desc=f"VQ-VAE, K = {codes}"),
            threads=1,
        )
    )
# Two more training seeds of each of these five, for the comparisons that
# training randomness decides (revival or not; one codebook size or another):
# the chapter compares across seeds 0, 1 and 2.
for seed in (1, 2):
    for variant, codes, revive_every in (
        ("revive", 128, 100),
        ("plain", 128, 0),
        ("K8", 8, 100),
        ("K32", 32, 100),
        ("K512", 512, 100),
    ):
        _add(
            Recipe(
                f"vqvae-{variant}-seed{seed}",
                partial(vqvae.VQVAE, codes, 16, 16),
                vqvae.train_vqvae,
                fit_images_plain,
                dict(
                    VQ_SETTINGS,
                    revive_every=revive_every,
                    seed=seed,
                    desc=f"VQ-VAE {variant}, seed {seed}",
                ),
                threads=1,
                seed=seed,
            )
        )
_add(
    Recipe(
        "vqvae-prior",
        partial(vqvae.CodePrior, 128, 49, embed=8, hidden=128),
        vqvae.train_prior,
        vq_codes,
        dict(epochs=2, batch_size=256, lr=3e-3),
        needs=(VQVAE_REVIVE,),
    )
)

# --- GANs and diffusion
# ------------------------------------------------------------------

_add(
    Recipe(
        "gan-stable",
        partial(gan.GAN, hidden=(128, 256)),
        gan.train_gan,
        train_images,
        dict(steps=1500),
    )
)
# the same GAN and steps, but the generator learns ten times faster than D
_add(
    Recipe(
        "gan-fast-generator",
        partial(gan.GAN, hidden=(128, 256)),
        gan.train_gan,
        train_images,
        dict(steps=1500, lr_g=2e-3),
    )
)
# both GANs again with seeds 1 and 2 ("gan-stable-seed1", ...): one training
# costs about 12 s, so the GAN chapter compares the settings over three runs
_add_seeds(["gan-stable", "gan-fast-generator"])
for schedule in ("cosine", "linear"):
    _add(
        Recipe(
            f"ddpm-{schedule}",
            partial(diffusion.DDPM, schedule, diffusion.T_STEPS),
            diffusion.train_ddpm,
            train_images,
            dict(
                epochs=2,
                batch_size=256,
                lr=2e-3,
                desc=f"DDPM, {schedule} schedule",
            ),
        )
    )
    _add(
        Recipe(
            f"latent-ddpm-{schedule}",
            partial(diffusion.LatentDDPM, schedule, diffusion.T_STEPS, 32),
            diffusion.train_latent_ddpm,
            vae_codes,
            dict(
                epochs=10,
                batch_size=256,
                lr=2e-3,
                desc=f"latent DDPM, {schedule} schedule",
            ),
            needs=(VAE_MAIN,),
        )
    )


# --- How far a VAE goes on a CPU
# --------------------------------------------------------
# One network size (MLPs with two hidden layers of 512 ReLU units, 64 latent
# units in the first stochastic layer, 32 in the second), one short budget:
# about a minute each on one thread, so that `make book` trains two at a
# time; the epochs differ because the variants cost differently per epoch.
# The headline model uses both cores for about six minutes.
LIKELIHOOD_ROWS = {
    # name: (latent sizes, prior, samples k, epochs, KL warm-up, other settings)
    "elbo": ((64,), "normal", 1, 12, 0.3, {}),
    "iwae": ((64,), "normal", 5, 6, 0.3, {}),
    "iwae-dreg": ((64,), "normal", 5, 6, 0.3, {"dreg": True}),
    "vamp": ((64,), "vamp", 1, 8, 0.3, {}),
    "two-layer": ((64, 32), "vamp", 1, 5, 0.3, {}),
    "two-layer-no-warmup": ((64, 32), "vamp", 1, 5, 0.0, {}),
    # free bits instead of the warm-up: 0.125 nats per unit, set beforehand
    "two-layer-free-bits": ((64, 32), "vamp", 1, 5, 0.0, {"free_bits": 0.125}),
}
for _name, (
    _latent,
    _prior,
    _k,
    _epochs,
    _warm,
    _other,
) in LIKELIHOOD_ROWS.items():
    _add(
        Recipe(
            f"likelihood-{_name}",
            partial(likelihood.DeepVAE, _latent, 512, _prior),
            likelihood.train_deep_vae,
            train_images,
            dict(
                samples=_k,
                epochs=_epochs,
                batch_size=256,
                lr=3e-3,
                kl_warmup=_warm,
                **_other,
                desc=f"VAE ({_name})",
            ),
            threads=1,
        )
    )
_add(
    Recipe(
        "likelihood-best",
        partial(likelihood.DeepVAE, (64,), 512, "vamp"),
        likelihood.train_deep_vae,
        train_images,
        dict(
            samples=1,
            epochs=65,
            batch_size=256,
            lr=3e-3,
            kl_warmup=0.3,
            desc="VAE (headline)",
        ),
    )
)
