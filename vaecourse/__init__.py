"""vaecourse: the small helper package of the course "From autoencoders to VAEs".

The chapters teach the ideas in their own code; this package holds the plumbing they share:
``data`` (MNIST and its corruptions), ``train`` (the fit loop, seeds, device, quick mode),
``cache`` (trained weights on disk), ``plot`` (figures), ``book`` (notebook helpers),
``divergences`` (KL divergences, log-densities and bounds) and ``explorer`` (latent-space
explorers: live widgets in Jupyter and Colab, and in-browser ones for the published site).
``build`` and ``bench`` are the maintainers' tools behind ``make book`` and ``make bench``.
"""

__version__ = "0.1.0"
