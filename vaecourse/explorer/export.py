"""The kernel-free latent explorer: the trained decoder exported into the page,
run by the browser. On the published site there is no kernel; this explorer
still responds there, and in Jupyter and Colab too (no network, no CDN).

    site = site_explorer(decoder, z_test, y_test, output="logits") site
    # the cell's output: an IPython HTML object; str(site) is the HTML
    site.weight_bytes        # float32 weights exported (bytes);
    site.page_bytes: whole output standalone_page(site)    # a complete HTML
    document, e.g. to save and open in a browser

``decoder`` is an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise
activations (ReLU, LeakyReLU, ELU, GELU, Tanh, Sigmoid, Softplus, SiLU;
Identity, Dropout and Flatten are ignored, Unflatten is allowed after the last
Linear) with 784 outputs. ``output`` says what they are: ``"logits"`` (the page
applies a sigmoid) or ``"probabilities"`` (shown as they are, clipped to [0,
1]); a decoder ending in ``nn.Sigmoid`` needs no ``output``. ``z_test`` (N, 2)
and ``y_test`` (N,) are the test set's codes and labels, drawn under the pad.
With ``condition_classes=10`` (or a list of class names) the decoder's input is
concat(z, one_hot(y)) and the explorer shows a class picker (conditional VAE).

The page is ``template.html`` with ``explorer.css``, ``explorer.js`` and the
exported decoder filled in (files of this package). It holds the explorer in a
``div.vaecourse-explorer`` (unique id) with a pad canvas (``.vx-pad``) and the
decoded image (``canvas.vx-image``); ``window.vaecourseExplorers[id]`` exposes
``decode(z, y)`` (784 displayed intensities), ``forward(input)`` (the raw
network output), ``set(z, y)`` and ``state()``, which the tests use. Jupyter
runs the page's script only in a trusted notebook; otherwise the explorer says
so. The site explorer is for 2-D latent spaces (the pad is the plane); for more
dimensions use the live sliders (``explorer.live``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
from collections.abc import Sequence
from importlib import resources

import numpy as np
from IPython.display import HTML
from torch import nn

from vaecourse.plot import to_numpy

PIXELS = 28 * 28
TAB10 = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]
SUPPORTED = (
    "Linear, ReLU, LeakyReLU, ELU, GELU, Tanh, Sigmoid, Softplus, SiLU "
    "(ignored: Identity, Dropout, Flatten; Unflatten after the last Linear)"
)
_COUNTER = itertools.count()


def _activation(layer: nn.Module) -> dict | None:
    """The JSON description of an elementwise activation, or None if it is not
    one (exact types: a subclass may compute something else)."""
    if type(layer) is nn.ReLU:
        return {"op": "relu"}
    if type(layer) is nn.LeakyReLU:
        return {"op": "leaky_relu", "slope": float(layer.negative_slope)}
    if type(layer) is nn.ELU:
        return {"op": "elu", "alpha": float(layer.alpha)}
    if type(layer) is nn.GELU:
        return {"op": "gelu_tanh" if layer.approximate == "tanh" else "gelu"}
    if type(layer) is nn.Tanh:
        return {"op": "tanh"}
    if type(layer) is nn.Sigmoid:
        return {"op": "sigmoid"}
    if type(layer) is nn.Softplus:
        return {
            "op": "softplus",
            "beta": float(layer.beta),
            "threshold": float(layer.threshold),
        }
    if type(layer) is nn.SiLU:
        return {"op": "silu"}
    return None


def _flat_layers(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _flat_layers(child)]
    return [module]


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(
        np.ascontiguousarray(array, dtype=dtype).tobytes()
    ).decode()


def export_decoder(decoder: nn.Sequential, output: str | None = None) -> dict:
    """The decoder as JSON-ready layers, weights as base64 little-endian
    float32.

    Returns ``{"layers": [...], "inputs": int, "output": "logits" |
    "probabilities", "parameters": int}``. Raises on anything the page could
    not evaluate exactly.
    """
    if not isinstance(decoder, nn.Sequential):
        raise TypeError(
            "site_explorer exports an nn.Sequential of Linear layers and activations; got "
            f"{type(decoder).__name__}. Pass the Sequential inside your model "
            "(for example model.decoder)."
        )
    layers, linears, reshaped = [], 0, False
    for layer in _flat_layers(decoder):
        if isinstance(layer, nn.Linear):
            if reshaped:
                raise ValueError(
                    "site_explorer: Unflatten must come after the last Linear layer"
                )
            w = layer.weight.detach().cpu().float().numpy()
            b = (
                layer.bias.detach().cpu().float().numpy()
                if layer.bias is not None
                else np.zeros(layer.out_features, dtype=np.float32)
            )
            layers.append(
                {
                    "op": "linear",
                    "in": layer.in_features,
                    "out": layer.out_features,
                    "w": _b64(w, "<f4"),
                    "b": _b64(b, "<f4"),
                }
            )
            linears += w.size + b.size
        elif isinstance(layer, nn.Unflatten):
            reshaped = True
        elif isinstance(layer, (nn.Identity, nn.Dropout, nn.Flatten)):
            continue
        elif (act := _activation(layer)) is not None:
            layers.append(act)
        else:
            raise ValueError(
                f"site_explorer cannot export the layer {layer!r}: the page evaluates only "
                f"{SUPPORTED}"
            )
    sizes = [lay for lay in layers if lay["op"] == "linear"]
    if not sizes:
        raise ValueError(
            "site_explorer: the decoder has no Linear layer to export"
        )
    if sizes[-1]["out"] != PIXELS:
        raise ValueError(
            f"site_explorer: the decoder must output {PIXELS} values (28x28 pixels), "
            f"its last Linear gives {sizes[-1]['out']}"
        )
    ends_in_sigmoid = layers[-1]["op"] == "sigmoid"
    if output is None:
        if not ends_in_sigmoid:
            raise ValueError(
                "site_explorer: say what the decoder outputs: output='logits' (the page "
                "applies a sigmoid) or output='probabilities' (values in [0, 1])"
            )
        output = "probabilities"
    if output not in ("logits", "probabilities"):
        raise ValueError(
            f"output must be 'logits' or 'probabilities', got {output!r}"
        )
    if ends_in_sigmoid and output == "logits":
        raise ValueError(
            "site_explorer: the decoder ends in a Sigmoid, so it outputs probabilities, "
            "not logits (use output='probabilities')"
        )
    return {
        "layers": layers,
        "inputs": sizes[0]["in"],
        "output": output,
        "parameters": linears,
    }


def _class_names(condition_classes) -> list[str] | None:
    if condition_classes is None:
        return None
    if isinstance(condition_classes, int):
        if condition_classes < 2:
            raise ValueError(
                f"condition_classes must be at least 2, got {condition_classes}"
            )
        return [str(i) for i in range(condition_classes)]
    names = [str(c) for c in condition_classes]
    if len(names) < 2:
        raise ValueError("condition_classes needs at least two class names")
    return names


def _extent(z: np.ndarray, extent) -> list[float]:
    """A box around the bulk of the codes (0.5% to 99.5% per axis, plus 10%
    margin)."""
    if extent is None:
        lo, hi = np.quantile(z, [0.005, 0.995], axis=0)
        margin = 0.1 * np.maximum(hi - lo, 1e-3)
        return [
            float(lo[0] - margin[0]),
            float(hi[0] + margin[0]),
            float(lo[1] - margin[1]),
            float(hi[1] + margin[1]),
        ]
    extent = [float(v) for v in extent]
    if len(extent) != 4 or not (
        extent[0] < extent[1] and extent[2] < extent[3]
    ):
        raise ValueError(
            f"extent is (z1_min, z1_max, z2_min, z2_max) with min < max, got {extent}"
        )
    return extent


def _codes_and_labels(z_scatter, labels) -> tuple[np.ndarray, np.ndarray]:
    z = to_numpy(z_scatter).astype(np.float64)
    y = to_numpy(labels).astype(np.int64).reshape(-1)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(
            f"z_scatter must be 2-D codes of shape (N, 2), got {z.shape}"
        )
    if len(y) != len(z):
        raise ValueError(
            f"{len(z)} codes but {len(y)} labels: give one label per code"
        )
    if not np.isfinite(z).all():
        raise ValueError(
            "z_scatter holds NaN or infinite codes: check the encoder"
        )
    if len(z) and (y.min() < 0 or y.max() > 255):
        raise ValueError("labels must be class indices between 0 and 255")
    return z, y


@functools.cache
def _page_file(name: str) -> str:
    """A file of the page (the template, its style, its script), shipped with
    the package."""
    return resources.files("vaecourse.explorer").joinpath(name).read_text()


class SiteExplorer(HTML):
    """The explorer's HTML output, with its size for the chapter's page-weight
    note."""

    def __init__(self, html: str, element_id: str, parameters: int):
        super().__init__(html)
        self.element_id = element_id
        self.parameters = parameters
        # float32, before base64 (x 4/3 in the page)
        self.weight_bytes = 4 * parameters
        self.page_bytes = len(html.encode())

    def __str__(self) -> str:
        return self.data


def site_explorer(
    decoder: nn.Sequential,
    z_scatter,
    labels,
    *,
    output: str | None = None,
    extent=None,
    condition_classes: int | Sequence[str] | None = None,
    start=None,
    title: str = "Drag over the latent plane",
) -> SiteExplorer:
    """A self-contained HTML/JS explorer: the decoder runs in the browser, no
    kernel.

    The pad shows the test codes ``z_scatter`` coloured by ``labels``; dragging
    (mouse, pen or touch) or the arrow keys move the point whose decoding is
    shown. ``extent`` is (z1_min, z1_max, z2_min, z2_max), by default the bulk
    of the codes; ``start`` the first point, by default the origin.
    """
    model = export_decoder(decoder, output)
    names = _class_names(condition_classes)
    wanted = 2 + (len(names) if names else 0)
    if model["inputs"] != wanted:
        raise ValueError(
            f"site_explorer: the decoder takes {model['inputs']} inputs but the pad gives "
            f"{wanted} (2 latent coordinates"
            + (f" + a one-hot of {len(names)} classes" if names else "")
            + "); the site explorer is for 2-D latent spaces"
        )
    z, y = _codes_and_labels(z_scatter, labels)
    box = _extent(z, extent)
    if start is None:
        start = [
            min(max(0.0, box[0]), box[1]),
            min(max(0.0, box[2]), box[3]),
        ]
    start = [float(v) for v in start]
    if len(start) != 2 or not all(np.isfinite(start)):
        raise ValueError(f"start must be a point (z1, z2), got {start}")
    inside = (
        (z[:, 0] >= box[0])
        & (z[:, 0] <= box[1])
        & (z[:, 1] >= box[2])
        & (z[:, 1] <= box[3])
    )
    grid = np.round(
        (z[inside] - [box[0], box[2]])
        / [box[1] - box[0], box[3] - box[2]]
        * 65535
    )
    spec = {
        **model,
        "classes": names,
        "extent": box,
        "start": start,
        "points": _b64(grid, "<u2"),
        "labels": _b64(y[inside], "u1"),
        "legend": sorted({int(v) for v in y}),
        "colors": TAB10,
        "title": title,
    }
    payload = json.dumps(spec, separators=(",", ":")).replace("</", "<\\/")
    digest = hashlib.sha256(payload.encode()).hexdigest()[:10]
    element_id = f"vx-{digest}-{next(_COUNTER)}"
    html = (
        _page_file("template.html")
        .replace("@STYLE@", _page_file("explorer.css"))
        .replace("@SCRIPT@", _page_file("explorer.js"))
        .replace("@ID@", element_id)
        .replace("@DATA@", payload)
    )
    return SiteExplorer(html, element_id, model["parameters"])


def standalone_page(
    *explorers: SiteExplorer, title: str = "vaecourse explorer"
) -> str:
    """A complete HTML document holding the explorers, to save and open in a
    browser."""
    body = "\n".join(str(e) for e in explorers)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{title}</title></head>\n<body style="font-family: sans-serif; '
        f'margin: 24px">\n{body}\n</body></html>\n'
    )
