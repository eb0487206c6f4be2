"""Latent-space explorers: a reader understands a latent space by moving
through it and watching the decoded digit change.

- ``site_explorer`` (``explorer.export``): the trained decoder exported into
  the page and run by the browser, so it responds on the published site, which
  has no kernel;
- ``latent_sliders`` and ``interpolation`` (``explorer.live``): ipywidgets
  driven by Python, in Jupyter and Colab.
"""

from vaecourse.explorer.export import (
    SiteExplorer,
    export_decoder,
    site_explorer,
    standalone_page,
)
from vaecourse.explorer.live import image_png, interpolation, latent_sliders

__all__ = [
    "SiteExplorer",
    "export_decoder",
    "image_png",
    "interpolation",
    "latent_sliders",
    "site_explorer",
    "standalone_page",
]
