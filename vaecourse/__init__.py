"""vaecourse: the helper package of the course "From autoencoders to VAEs".

The chapters teach the ideas in their own code; this package holds what they
share.

- Plumbing: ``data`` (MNIST, binarizations, corruptions, batches), ``train``
  (the fit loop, seeds, quick mode, threads), ``cache`` (recipes and trained
  weights on disk), ``plot`` (figures) and ``book`` (glued numbers, tables, the
  chapter's clock).
- Instruments and probability: ``metrics`` (the measuring classifier, the
  Fréchet distance, class coverage) and ``prob`` (log-densities and the
  importance-weighted bound).
- ``chapters``: one module per chapter, named like it (``chapters.kl``,
  ``chapters.vae``, ...), holding what that chapter writes out.
- ``zoo``: the book's trained models, one recipe each:
  ``zoo.load("vae-main")``.
- ``explorer``: latent-space explorers, live in Jupyter and Colab, kernel-free
  on the site.

The maintainers' tools (``make book``, ``make bench``) live in ``tools/``,
outside the package.
"""
