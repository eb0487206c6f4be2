"""vaecourse: the small helper package of the course "From autoencoders to VAEs".

The chapters teach the ideas in their own code; this package holds the plumbing they share:
``data`` (MNIST and its corruptions), ``train`` (the fit loop, seeds, device, quick mode),
``cache`` (trained weights on disk), ``plot`` (figures) and ``book`` (notebook helpers).
"""

__version__ = "0.1.0"
