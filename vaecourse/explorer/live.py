"""Live explorers in Jupyter (ipywidgets 8) and Colab (ipywidgets 7.7): Python
decodes.

Each takes plain callables and returns a widget:

    latent_sliders(decode, dim)                        # a slider per latent
    dimension interpolation(encode, decode, x_test, y_test)      # walk between
    two test digits

``decode(z)`` maps a float tensor (B, d) to images (B, 1, 28, 28) in [0, 1]
(apply the sigmoid yourself); ``encode(x)`` maps images (B, 1, 28, 28) to codes
(B, d), e.g. the posterior mean. With ``condition_classes`` they are called as
``decode(z, y)`` and ``encode(x, y)``, ``y`` a long tensor (B,) of labels, and
a class menu appears. The explorers pass CPU tensors: a callable moves them to
its model's device (``z.to(device)``); what it returns may be on any device.
On the published site there is no kernel: there the
kernel-free ``site_explorer`` responds.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from vaecourse.explorer.export import _class_names
from vaecourse.plot import image_grid, to_numpy


def image_png(images, scale: int = 6) -> bytes:
    """PNG bytes of images (B, 1, 28, 28) in [0, 1], side by side, black ink on
    white, each pixel a ``scale`` x ``scale`` block (sharp, whatever the
    browser's smoothing)."""
    from PIL import Image

    x = np.clip(to_numpy(images).astype(np.float64), 0, 1)
    if x.ndim == 3:
        x = x[None]
    grid = image_grid(
        x, nrow=len(x), pad=1 if len(x) > 1 else 0, pad_value=0.0
    )
    pixels = np.round(255 * (1 - grid)).astype(np.uint8)
    pixels = np.kron(pixels, np.ones((scale, scale), dtype=np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _decoder(decode, condition_classes):
    """``decode`` called the same way with or without a condition, without
    gradients."""
    names = _class_names(condition_classes)

    def run(z: torch.Tensor, y: int) -> torch.Tensor:
        with torch.no_grad():
            z = torch.as_tensor(z, dtype=torch.float32)
            if names:
                out = decode(z, torch.full((len(z),), y, dtype=torch.long))
            else:
                out = decode(z)
        out = torch.as_tensor(out).float().cpu()
        if out.shape[1:] != (1, 28, 28) or len(out) != len(z):
            raise ValueError(
                f"decode must return images of shape ({len(z)}, 1, 28, 28), got "
                f"{tuple(out.shape)}"
            )
        return out

    return run, names


def _class_menu(names):
    import ipywidgets as widgets

    if not names:
        return None
    return widgets.Dropdown(
        options=[(n, i) for i, n in enumerate(names)],
        value=0,
        description="class",
    )


def _image_widget(png: bytes, scale: int, count: int = 1):
    import ipywidgets as widgets

    return widgets.Image(
        value=png,
        format="png",
        width=str((28 * count + (count > 1) * (count + 1)) * scale),
    )


def latent_sliders(
    decode,
    dim: int,
    *,
    limit: float = 3.0,
    step: float = 0.05,
    condition_classes=None,
    scale: int = 6,
):
    """A slider per latent dimension (from -limit to limit) and the decoded
    image.

    Returns an HBox; ``.sliders``, ``.classes`` (Dropdown or None) and
    ``.image`` are its parts, ``.z()`` the current code. Sliding one coordinate
    shows what it encodes.
    """
    import ipywidgets as widgets

    if dim < 1:
        raise ValueError(f"dim must be at least 1, got {dim}")
    run, names = _decoder(decode, condition_classes)
    sliders = [
        widgets.FloatSlider(
            value=0.0,
            min=-limit,
            max=limit,
            step=step,
            description=f"z{i + 1}",
            continuous_update=True,
        )
        for i in range(dim)
    ]
    classes = _class_menu(names)

    def z():
        return torch.tensor([[s.value for s in sliders]], dtype=torch.float32)

    def update(_=None):
        image.value = image_png(
            run(z(), classes.value if classes else 0), scale
        )

    image = _image_widget(image_png(run(z(), 0), scale), scale)
    for control in sliders + ([classes] if classes else []):
        control.observe(update, names="value")
    controls = widgets.VBox(([classes] if classes else []) + sliders)
    box = widgets.HBox([controls, image])
    box.sliders, box.classes, box.image, box.z = sliders, classes, image, z
    return box


def interpolation(
    encode,
    decode,
    images,
    labels,
    *,
    steps: int = 9,
    condition_classes=None,
    first: int = 0,
    second: int = 1,
    scale: int = 4,
):
    """Walk in a straight line between the codes of two chosen images.

    Two index sliders pick the images (their labels are shown), ``t`` moves
    from the first code (t = 0) to the second (t = 1); a strip shows ``steps``
    evenly spaced decodings between the two originals. Returns a VBox with
    ``.first``, ``.second``, ``.t``, ``.classes``, ``.image`` (decoding at t),
    ``.strip``, ``.caption`` and ``.z()``.
    """
    import ipywidgets as widgets

    x = torch.as_tensor(to_numpy(images)).float()
    y = torch.as_tensor(to_numpy(labels)).long().reshape(-1)
    if (
        x.ndim != 4
        or x.shape[1:] != (1, 28, 28)
        or len(x) != len(y)
        or len(x) < 2
    ):
        raise ValueError(
            "interpolation needs at least two images of shape (N, 1, 28, 28) and one "
            f"label each; got images {tuple(x.shape)} and {len(y)} labels"
        )
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    run, names = _decoder(decode, condition_classes)

    def code(i: int) -> torch.Tensor:
        with torch.no_grad():
            out = (
                encode(x[i : i + 1], y[i : i + 1])
                if names
                else encode(x[i : i + 1])
            )
        return torch.as_tensor(out).float().cpu().reshape(1, -1)

    pick = [
        widgets.IntSlider(value=v, min=0, max=len(x) - 1, description=d)
        for v, d in ((first, "first"), (second, "second"))
    ]
    t = widgets.FloatSlider(
        value=0.5, min=0.0, max=1.0, step=0.05, description="t"
    )
    classes = _class_menu(names)
    caption = widgets.Label()
    codes = {}

    def z_at_t():
        return (1 - t.value) * codes["a"] + t.value * codes["b"]

    def label():
        return classes.value if classes else 0

    def update_strip(_=None):
        a, b = pick[0].value, pick[1].value
        codes["a"], codes["b"] = code(a), code(b)
        ts = torch.linspace(0, 1, steps).reshape(-1, 1)
        walk = run((1 - ts) * codes["a"] + ts * codes["b"], label())
        strip.value = image_png(
            torch.cat([x[a : a + 1], walk, x[b : b + 1]]), scale
        )
        caption.value = (
            f"image {a} (a {int(y[a])}) \u2192 image {b} (a {int(y[b])}): originals at "
            f"the ends, {steps} decodings between"
        )
        update_image()

    def update_image(_=None):
        image.value = image_png(run(z_at_t(), label()), 6)

    strip = _image_widget(b"", scale, steps + 2)
    image = _image_widget(b"", 6)
    update_strip()
    for control in pick + ([classes] if classes else []):
        control.observe(update_strip, names="value")
    t.observe(update_image, names="value")
    controls = widgets.VBox(([classes] if classes else []) + pick + [t])
    out = widgets.VBox([widgets.HBox([controls, image]), caption, strip])
    out.first, out.second, out.t, out.classes = pick[0], pick[1], t, classes
    out.image, out.strip, out.caption, out.z = image, strip, caption, z_at_t
    return out
