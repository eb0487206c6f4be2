"""Latent-space explorers: live widgets in Jupyter and Colab, and kernel-free ones for the site.

A reader understands a latent space by moving through it and watching the decoded digit
change. In a running notebook a Python callback can decode; on the published site there is
no kernel, so the trained decoder is exported into the page and evaluated in the browser.

Kernel-free (works on the static site, in Jupyter and in Colab; no network, no CDN):

    site = site_explorer(decoder, z_test, y_test, output="logits")
    site                     # the cell's output: an IPython HTML object; str(site) is the HTML
    site.weight_bytes        # float32 weights exported (bytes); site.page_bytes: whole output
    standalone_page(site)    # a complete HTML document, e.g. to save and open in a browser

``decoder`` is an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations
(ReLU, LeakyReLU, ELU, GELU, Tanh, Sigmoid, Softplus, SiLU; Identity, Dropout and Flatten
are ignored, Unflatten is allowed after the last Linear) with 784 outputs. ``output`` says
what they are: ``"logits"`` (the page applies a sigmoid) or ``"probabilities"`` (shown as
they are, clipped to [0, 1]); a decoder ending in ``nn.Sigmoid`` needs no ``output``.
``z_test`` (N, 2) and ``y_test`` (N,) are the test set's codes and labels, drawn under the
pad. With ``condition_classes=10`` (or a list of class names) the decoder's input is
concat(z, one_hot(y)) and the explorer shows a class picker (conditional VAE).

The page holds the explorer in a ``div.vaecourse-explorer`` (unique id) with a pad canvas
(``.vx-pad``) and the decoded image (``canvas.vx-image``); ``window.vaecourseExplorers[id]``
exposes ``decode(z, y)`` (784 displayed intensities), ``forward(input)`` (the raw network
output), ``set(z, y)`` and ``state()``, which the tests use.

Live (ipywidgets 7.7 as in Colab, and 8): each takes plain callables and returns a widget.

    latent_sliders(decode, dim)                        # a slider per latent dimension
    latent_pad(decode, z_test, y_test)                 # two sliders over the scatter
    interpolation(encode, decode, x_test, y_test)      # walk between two test digits

``decode(z)`` maps a float tensor (B, d) to images (B, 1, 28, 28) in [0, 1] (apply the
sigmoid yourself); ``encode(x)`` maps images (B, 1, 28, 28) to codes (B, d), e.g. the
posterior mean. With ``condition_classes`` they are called as ``decode(z, y)`` and
``encode(x, y)``, ``y`` a long tensor (B,) of labels, and a class menu appears.

The site explorer is for 2-D latent spaces (the pad is the plane); for more dimensions
use the live sliders.

In a chapter (myst-nb 1.4 with ``nb_ipywidgets_js: {}`` renders a widget output as an empty
``<script type="application/vnd.jupyter.widget-view+json">``, and copies the notebook's
stored widget state, with every PNG the widgets showed, into the page's head):

- the cell that builds a live widget gets the tag ``remove-output``, and the text says it
  is live in Jupyter and Colab only;
- the next cell shows ``site_explorer(...)`` of the same model (glue ``weight_bytes`` or
  ``page_bytes`` from a separate cell if the text states the page weight);
- chapters are executed without stored widget state (nbclient's ``store_widget_state=False``
  in ``vaecourse.build.execute``); tests/test_site.py checks that no page carries any.

Jupyter runs the page's script only in a trusted notebook; otherwise the explorer says so
(re-running the cell trusts its output).
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
from collections.abc import Sequence

import numpy as np
import torch
from IPython.display import HTML
from torch import nn

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


# --- Kernel-free explorer: the decoder exported to the page ---------------------------


def _activation(layer: nn.Module) -> dict | None:
    """The JSON description of an elementwise activation, or None if it is not one
    (exact types: a subclass may compute something else)."""
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
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode()


def export_decoder(decoder: nn.Sequential, output: str | None = None) -> dict:
    """The decoder as JSON-ready layers, weights as base64 little-endian float32.

    Returns ``{"layers": [...], "inputs": int, "output": "logits" | "probabilities",
    "parameters": int}``. Raises on anything the page could not evaluate exactly.
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
        raise ValueError("site_explorer: the decoder has no Linear layer to export")
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
        raise ValueError(f"output must be 'logits' or 'probabilities', got {output!r}")
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


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


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
    """A box around the bulk of the codes (0.5% to 99.5% per axis, plus 10% margin)."""
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
    if len(extent) != 4 or not (extent[0] < extent[1] and extent[2] < extent[3]):
        raise ValueError(
            f"extent is (z1_min, z1_max, z2_min, z2_max) with min < max, got {extent}"
        )
    return extent


def _codes_and_labels(z_scatter, labels) -> tuple[np.ndarray, np.ndarray]:
    z = _numpy(z_scatter).astype(np.float64)
    y = _numpy(labels).astype(np.int64).reshape(-1)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"z_scatter must be 2-D codes of shape (N, 2), got {z.shape}")
    if len(y) != len(z):
        raise ValueError(f"{len(z)} codes but {len(y)} labels: give one label per code")
    if not np.isfinite(z).all():
        raise ValueError("z_scatter holds NaN or infinite codes: check the encoder")
    if len(z) and (y.min() < 0 or y.max() > 255):
        raise ValueError("labels must be class indices between 0 and 255")
    return z, y


class SiteExplorer(HTML):
    """The explorer's HTML output, with its size for the chapter's page-weight note."""

    def __init__(self, html: str, element_id: str, parameters: int):
        super().__init__(html)
        self.element_id = element_id
        self.parameters = parameters
        self.weight_bytes = 4 * parameters  # float32, before base64 (x 4/3 in the page)
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
    """A self-contained HTML/JS explorer: the decoder runs in the browser, no kernel.

    The pad shows the test codes ``z_scatter`` coloured by ``labels``; dragging (mouse,
    pen or touch) or the arrow keys move the point whose decoding is shown. ``extent`` is
    (z1_min, z1_max, z2_min, z2_max), by default the bulk of the codes; ``start`` the
    first point, by default the origin.
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
        (z[inside] - [box[0], box[2]]) / [box[1] - box[0], box[3] - box[2]] * 65535
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
        _TEMPLATE.replace("@STYLE@", _STYLE)
        .replace("@SCRIPT@", _SCRIPT)
        .replace("@ID@", element_id)
        .replace("@DATA@", payload)
    )
    return SiteExplorer(html, element_id, model["parameters"])


def standalone_page(*explorers: SiteExplorer, title: str = "vaecourse explorer") -> str:
    """A complete HTML document holding the explorers, to save and open in a browser."""
    body = "\n".join(str(e) for e in explorers)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{title}</title></head>\n<body style="font-family: sans-serif; '
        f'margin: 24px">\n{body}\n</body></html>\n'
    )


_TEMPLATE = """<div class="vaecourse-explorer" id="@ID@" data-explorer-id="@ID@">
<style>@STYLE@</style>
<div class="vx-title"></div>
<div class="vx-row">
<div class="vx-left"><canvas class="vx-pad" tabindex="0" role="slider"
 aria-label="latent plane: drag, or use the arrow keys, to choose the point to decode">
</canvas><div class="vx-legend"></div></div>
<div class="vx-right"><canvas class="vx-image" width="28" height="28"
 aria-label="the decoded image"></canvas>
<div class="vx-coords">&nbsp;</div><div class="vx-picker"></div>
<div class="vx-note">This explorer needs JavaScript (in Jupyter: trust the notebook).</div>
</div></div>
<script type="application/json" class="vx-data">@DATA@</script>
<script>@SCRIPT@</script>
</div>"""

_STYLE = """
.vaecourse-explorer{font:14px/1.4 system-ui,sans-serif;color:#222;background:#fff;
 border:1px solid #ddd;border-radius:6px;padding:10px 12px;margin:8px 0;max-width:640px}
.vaecourse-explorer .vx-title{font-weight:600;margin-bottom:6px}
.vaecourse-explorer .vx-row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.vaecourse-explorer .vx-right{width:210px}
.vaecourse-explorer .vx-left{flex:0 1 340px;min-width:0}
.vaecourse-explorer .vx-pad{width:100%;max-width:340px;aspect-ratio:1/1;height:auto;
 touch-action:none;cursor:crosshair;display:block;outline:none}
.vaecourse-explorer .vx-pad:focus-visible{box-shadow:0 0 0 2px #1f77b4}
.vaecourse-explorer .vx-legend{display:flex;flex-wrap:wrap;gap:2px 10px;margin-top:4px;
 font-size:12px;max-width:340px}
.vaecourse-explorer .vx-legend i{display:inline-block;width:9px;height:9px;
 border-radius:50%;margin-right:3px}
.vaecourse-explorer .vx-image{width:196px;height:196px;image-rendering:pixelated;
 border:1px solid #bbb;display:block}
.vaecourse-explorer .vx-coords{font-family:ui-monospace,monospace;margin-top:8px;
 white-space:pre-line}
.vaecourse-explorer .vx-picker{margin-top:6px}
.vaecourse-explorer .vx-picker button{min-width:32px;margin:2px;padding:3px 6px;
 border:1px solid #999;border-radius:4px;background:#f4f4f4;color:#222;cursor:pointer}
.vaecourse-explorer .vx-picker button[aria-pressed=true]{background:#222;color:#fff}
.vaecourse-explorer .vx-note{font-size:12px;color:#555;margin-top:8px}
"""

# The decoder in plain JavaScript: Float32Array weights, a matrix-vector loop per layer,
# float64 arithmetic, and an erf accurate to about 1e-15 for the exact GELU.
_SCRIPT = r"""(function (root) {
  "use strict";
  const spec = JSON.parse(root.querySelector(".vx-data").textContent);
  function bytes(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function floats(b64) {  // little-endian float32, whatever the machine's byte order
    const view = new DataView(bytes(b64).buffer), out = new Float32Array(view.byteLength / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }
  function erf(x) {
    const a = Math.abs(x);
    let r;
    if (a < 2.5) {  // 2/sqrt(pi) exp(-a^2) sum 2^n a^(2n+1) / (1*3*...*(2n+1))
      let term = a, sum = a;
      for (let n = 1; term > 1e-17 * sum; n++) { term *= 2 * a * a / (2 * n + 1); sum += term; }
      r = 2 / Math.sqrt(Math.PI) * Math.exp(-a * a) * sum;
    } else if (a < 6) {  // erfc as a continued fraction, evaluated from its tail
      let f = a;
      for (let k = 60; k > 0; k--) f = a + (k / 2) / f;
      r = 1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
    } else r = 1;
    return x < 0 ? -r : r;
  }
  const ACT = {
    relu: (x) => (x > 0 ? x : 0),
    leaky_relu: (x, p) => (x > 0 ? x : p.slope * x),
    elu: (x, p) => (x > 0 ? x : p.alpha * Math.expm1(x)),
    gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
    gelu_tanh: (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x))),
    tanh: (x) => Math.tanh(x),
    sigmoid: (x) => 1 / (1 + Math.exp(-x)),
    softplus: (x, p) => (p.beta * x > p.threshold ? x : Math.log1p(Math.exp(p.beta * x)) / p.beta),
    silu: (x) => x / (1 + Math.exp(-x)),
  };
  const layers = spec.layers.map((l) => (l.op === "linear" ? { ...l, w: floats(l.w), b: floats(l.b) } : l));
  const classes = spec.classes, nz = 2;
  function forward(input) {  // the raw network output, as PyTorch computes it
    let x = Float64Array.from(input);
    for (const l of layers) {
      if (l.op === "linear") {
        const y = new Float64Array(l.out);
        for (let o = 0; o < l.out; o++) {
          let s = l.b[o];
          const row = o * l.in;
          for (let i = 0; i < l.in; i++) s += l.w[row + i] * x[i];
          y[o] = s;
        }
        x = y;
      } else {
        const f = ACT[l.op];
        for (let i = 0; i < x.length; i++) x[i] = f(x[i], l);
      }
    }
    return x;
  }
  function decode(z, y) {  // the displayed intensities in [0, 1]
    const input = new Float64Array(spec.inputs);
    input[0] = z[0]; input[1] = z[1];
    if (classes) input[nz + (y || 0)] = 1;
    const raw = forward(input), out = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) {
      const v = spec.output === "logits" ? 1 / (1 + Math.exp(-raw[i])) : raw[i];
      out[i] = Math.min(1, Math.max(0, v));
    }
    return out;
  }

  const [x0, x1, y0, y1] = spec.extent, W = 340, H = 340, L = 40, R = 8, T = 8, B = 30;
  const pad = root.querySelector(".vx-pad"), img = root.querySelector(".vx-image");
  const coords = root.querySelector(".vx-coords"), picker = root.querySelector(".vx-picker");
  const dpr = window.devicePixelRatio || 1;
  pad.width = W * dpr; pad.height = H * dpr;
  const toX = (v) => L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const toY = (v) => H - B - ((v - y0) / (y1 - y0)) * (H - T - B);
  const fromX = (px) => x0 + ((px - L) / (W - L - R)) * (x1 - x0);
  const fromY = (py) => y0 + ((H - B - py) / (H - T - B)) * (y1 - y0);
  function ticks(lo, hi) {
    const raw = (hi - lo) / 5, p = Math.pow(10, Math.floor(Math.log10(raw))), m = raw / p;
    const step = (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p, out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.abs(v) < 1e-9 ? 0 : v);
    return out;
  }
  const back = document.createElement("canvas");  // the scatter, drawn once
  back.width = pad.width; back.height = pad.height;
  (function drawBack() {
    const c = back.getContext("2d");
    c.scale(dpr, dpr);
    c.fillStyle = "#fff"; c.fillRect(0, 0, W, H);
    c.strokeStyle = "#eee"; c.fillStyle = "#444"; c.font = "11px sans-serif";
    c.textAlign = "center";
    for (const v of ticks(x0, x1)) {
      c.beginPath(); c.moveTo(toX(v), T); c.lineTo(toX(v), H - B); c.stroke();
      c.fillText(+v.toFixed(2), toX(v), H - B + 13);
    }
    c.textAlign = "right";
    for (const v of ticks(y0, y1)) {
      c.beginPath(); c.moveTo(L, toY(v)); c.lineTo(W - R, toY(v)); c.stroke();
      c.fillText(+v.toFixed(2), L - 4, toY(v) + 4);
    }
    c.textAlign = "center"; c.font = "13px sans-serif";
    c.fillText("z\u2081", (L + W - R) / 2, H - 3);
    c.save(); c.translate(11, (T + H - B) / 2); c.rotate(-Math.PI / 2); c.fillText("z\u2082", 0, 0); c.restore();
    const pts = new DataView(bytes(spec.points).buffer), labels = bytes(spec.labels);
    c.globalAlpha = 0.55;
    for (let i = 0; i < labels.length; i++) {
      const u = pts.getUint16(4 * i, true) / 65535, v = pts.getUint16(4 * i + 2, true) / 65535;
      c.fillStyle = spec.colors[labels[i] % spec.colors.length];
      c.fillRect(toX(x0 + u * (x1 - x0)) - 1, toY(y0 + v * (y1 - y0)) - 1, 2, 2);
    }
    c.globalAlpha = 1; c.strokeStyle = "#999"; c.strokeRect(L, T, W - L - R, H - T - B);
  })();
  function add(parent, tag, text) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    return parent.appendChild(e);
  }
  const legend = root.querySelector(".vx-legend");
  add(legend, "span", "test codes by digit:");
  for (const k of spec.legend) {
    const item = add(legend, "span");
    add(item, "i").style.background = spec.colors[k % spec.colors.length];
    item.appendChild(document.createTextNode(String(k)));
  }
  root.querySelector(".vx-title").textContent = spec.title;

  const state = { z: spec.start.slice(), y: 0 };
  let pending = false;
  function draw() {
    pending = false;
    const c = pad.getContext("2d");
    c.setTransform(1, 0, 0, 1, 0, 0); c.drawImage(back, 0, 0); c.scale(dpr, dpr);
    const px = toX(state.z[0]), py = toY(state.z[1]);
    c.lineWidth = 3; c.strokeStyle = "#fff";
    c.beginPath(); c.arc(px, py, 7, 0, 2 * Math.PI); c.stroke();
    c.lineWidth = 2; c.strokeStyle = "#000";
    c.beginPath(); c.arc(px, py, 7, 0, 2 * Math.PI); c.stroke();
    c.beginPath(); c.moveTo(px - 11, py); c.lineTo(px - 4, py); c.moveTo(px + 4, py); c.lineTo(px + 11, py);
    c.moveTo(px, py - 11); c.lineTo(px, py - 4); c.moveTo(px, py + 4); c.lineTo(px, py + 11); c.stroke();
    const p = decode(state.z, state.y), g = img.getContext("2d"), data = g.createImageData(28, 28);
    for (let i = 0; i < p.length; i++) {  // black ink on white, as in the book's figures
      const v = Math.round(255 * (1 - p[i]));
      data.data[4 * i] = data.data[4 * i + 1] = data.data[4 * i + 2] = v; data.data[4 * i + 3] = 255;
    }
    g.putImageData(data, 0, 0);
    const f = (v) => (v < 0 ? "\u2212" : "\u2007") + Math.abs(v).toFixed(2);
    coords.textContent = "z\u2081 = " + f(state.z[0]) + ", z\u2082 = " + f(state.z[1]) +
      (classes ? "\nclass " + classes[state.y] : "");
    pad.setAttribute("aria-valuetext", coords.textContent);
  }
  function set(z, y) {
    state.z = [Math.min(x1, Math.max(x0, z[0])), Math.min(y1, Math.max(y0, z[1]))];
    if (classes && y !== undefined) {
      state.y = y;
      picker.querySelectorAll("button").forEach((b, k) => b.setAttribute("aria-pressed", k === y));
    }
    if (!pending) { pending = true; requestAnimationFrame(draw); }
  }
  function pointTo(e) {
    const r = pad.getBoundingClientRect();
    set([fromX(((e.clientX - r.left) * W) / r.width), fromY(((e.clientY - r.top) * H) / r.height)]);
  }
  let dragging = false;
  pad.addEventListener("pointerdown", (e) => {
    dragging = true; pad.setPointerCapture(e.pointerId); pointTo(e); e.preventDefault();
  });
  pad.addEventListener("pointermove", (e) => { if (dragging) pointTo(e); });
  pad.addEventListener("pointerup", () => { dragging = false; });
  pad.addEventListener("pointercancel", () => { dragging = false; });
  pad.addEventListener("keydown", (e) => {
    const k = e.shiftKey ? 0.1 : 0.02, dx = k * (x1 - x0), dy = k * (y1 - y0);
    const move = { ArrowLeft: [-dx, 0], ArrowRight: [dx, 0], ArrowUp: [0, dy], ArrowDown: [0, -dy] }[e.key];
    if (move) { set([state.z[0] + move[0], state.z[1] + move[1]]); e.preventDefault(); }
  });
  if (classes) {
    add(picker, "div", "class");
    classes.forEach((name, k) => {
      const b = add(picker, "button", name);
      b.type = "button";
      b.addEventListener("click", () => set(state.z, k));
    });
  }
  root.querySelector(".vx-note").textContent = classes
    ? "Drag over the plane (or use the arrow keys) to move z; pick a class."
    : "Drag over the plane (or use the arrow keys) to move z.";
  set(state.z, classes ? 0 : undefined);
  window.vaecourseExplorers = window.vaecourseExplorers || {};
  window.vaecourseExplorers[root.id] = {
    decode, forward, set, erf, element: root,
    state: () => ({ z: state.z.slice(), y: classes ? state.y : null }),
  };
})((document.currentScript && document.currentScript.parentNode) || document.getElementById("@ID@"));"""


# --- Live explorers: ipywidgets, for Jupyter (8.x) and Colab (7.7) -------------------


def image_png(images, scale: int = 6) -> bytes:
    """PNG bytes of images (B, 1, 28, 28) in [0, 1], side by side, black ink on white,
    each pixel a ``scale`` x ``scale`` block (sharp, whatever the browser's smoothing)."""
    from PIL import Image

    from vaecourse.plot import image_grid

    x = np.clip(_numpy(images).astype(np.float64), 0, 1)
    if x.ndim == 3:
        x = x[None]
    grid = image_grid(x, nrow=len(x), pad=1 if len(x) > 1 else 0, pad_value=0.0)
    pixels = np.round(255 * (1 - grid)).astype(np.uint8)
    pixels = np.kron(pixels, np.ones((scale, scale), dtype=np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _decoder(decode, condition_classes):
    """``decode`` called the same way with or without a condition, without gradients."""
    names = _class_names(condition_classes)

    def run(z: torch.Tensor, y: int) -> torch.Tensor:
        with torch.no_grad():
            z = torch.as_tensor(z, dtype=torch.float32)
            if names:
                out = decode(z, torch.full((len(z),), y, dtype=torch.long))
            else:
                out = decode(z)
        out = torch.as_tensor(out).float()
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
        options=[(n, i) for i, n in enumerate(names)], value=0, description="class"
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
    """A slider per latent dimension (from -limit to limit) and the decoded image.

    Returns an HBox; ``.sliders``, ``.classes`` (Dropdown or None) and ``.image`` are its
    parts, ``.z()`` the current code. Sliding one coordinate shows what it encodes.
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
        image.value = image_png(run(z(), classes.value if classes else 0), scale)

    image = _image_widget(image_png(run(z(), 0), scale), scale)
    for control in sliders + ([classes] if classes else []):
        control.observe(update, names="value")
    controls = widgets.VBox(([classes] if classes else []) + sliders)
    box = widgets.HBox([controls, image])
    box.sliders, box.classes, box.image, box.z = sliders, classes, image, z
    return box


class _Scatter:
    """The test codes drawn once by matplotlib; a marker is painted on a copy per update,
    so moving the point costs a PNG encode, not a new figure."""

    def __init__(self, z: np.ndarray, y: np.ndarray, box: list[float], size: int):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from vaecourse.plot import latent_scatter

        fig = Figure(figsize=(size / 100, size / 100), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        latent_scatter(z, y, ax=ax, s=1.5)
        ax.set_xlim(box[0], box[1])
        ax.set_ylim(box[2], box[3])
        fig.tight_layout()
        fig.canvas.draw()
        self.rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        self.transform = ax.transData.transform

    def pixel(self, z1: float, z2: float) -> tuple[float, float]:
        """The (row, column) of a latent point in the picture."""
        x, y = self.transform((z1, z2))
        return self.rgb.shape[0] - y, x

    def png(self, z1: float, z2: float) -> bytes:
        from PIL import Image

        rows, cols = np.ogrid[: self.rgb.shape[0], : self.rgb.shape[1]]
        r, c = self.pixel(z1, z2)
        d = np.hypot(rows - r, cols - c)
        rgb = self.rgb.copy()
        rgb[(d >= 5) & (d <= 9)] = (255, 255, 255)
        rgb[(d >= 6) & (d <= 8)] = (0, 0, 0)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="PNG")
        return buffer.getvalue()


def latent_pad(
    decode,
    z_scatter,
    labels,
    *,
    extent=None,
    condition_classes=None,
    step: float = 0.02,
    scale: int = 6,
    size: int = 360,
):
    """Two sliders over a 2-D latent plane, the test codes with a marker, the decoding.

    Sliders (not clicks) choose the point: they work the same in ipywidgets 7 and 8.
    Returns an HBox; ``.sliders``, ``.classes``, ``.pad`` (the scatter image), ``.image``
    and ``.z()`` are its parts.
    """
    import ipywidgets as widgets

    z, y = _codes_and_labels(z_scatter, labels)
    box = _extent(z, extent)
    run, names = _decoder(decode, condition_classes)
    scatter = _Scatter(z, y, box, size)
    start = [min(max(0.0, box[0]), box[1]), min(max(0.0, box[2]), box[3])]
    sliders = [
        widgets.FloatSlider(
            value=start[i],
            min=box[2 * i],
            max=box[2 * i + 1],
            step=step,
            description=f"z{i + 1}",
            continuous_update=True,
        )
        for i in range(2)
    ]
    classes = _class_menu(names)

    def zz():
        return torch.tensor([[sliders[0].value, sliders[1].value]], dtype=torch.float32)

    pad = widgets.Image(value=scatter.png(*start), format="png", width=str(size))
    image = _image_widget(image_png(run(zz(), 0), scale), scale)

    def update(_=None):
        pad.value = scatter.png(sliders[0].value, sliders[1].value)
        image.value = image_png(run(zz(), classes.value if classes else 0), scale)

    for control in sliders + ([classes] if classes else []):
        control.observe(update, names="value")
    controls = widgets.VBox(([classes] if classes else []) + sliders + [image])
    out = widgets.HBox([pad, controls])
    out.sliders, out.classes, out.image, out.z = sliders, classes, image, zz
    out.pad, out.scatter = pad, scatter
    return out


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

    Two index sliders pick the images (their labels are shown), ``t`` moves from the first
    code (t = 0) to the second (t = 1); a strip shows ``steps`` evenly spaced decodings
    between the two originals. Returns a VBox with ``.first``, ``.second``, ``.t``,
    ``.classes``, ``.image`` (decoding at t), ``.strip``, ``.caption`` and ``.z()``.
    """
    import ipywidgets as widgets

    x = torch.as_tensor(_numpy(images)).float()
    y = torch.as_tensor(_numpy(labels)).long().reshape(-1)
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28) or len(x) != len(y) or len(x) < 2:
        raise ValueError(
            "interpolation needs at least two images of shape (N, 1, 28, 28) and one "
            f"label each; got images {tuple(x.shape)} and {len(y)} labels"
        )
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    run, names = _decoder(decode, condition_classes)

    def code(i: int) -> torch.Tensor:
        with torch.no_grad():
            out = encode(x[i : i + 1], y[i : i + 1]) if names else encode(x[i : i + 1])
        return torch.as_tensor(out).float().reshape(1, -1)

    pick = [
        widgets.IntSlider(value=v, min=0, max=len(x) - 1, description=d)
        for v, d in ((first, "first"), (second, "second"))
    ]
    t = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="t")
    classes = _class_menu(names)
    caption = widgets.Label()
    codes = {}

    def zz():
        return (1 - t.value) * codes["a"] + t.value * codes["b"]

    def label():
        return classes.value if classes else 0

    def update_strip(_=None):
        a, b = pick[0].value, pick[1].value
        codes["a"], codes["b"] = code(a), code(b)
        ts = torch.linspace(0, 1, steps).reshape(-1, 1)
        walk = run((1 - ts) * codes["a"] + ts * codes["b"], label())
        strip.value = image_png(torch.cat([x[a : a + 1], walk, x[b : b + 1]]), scale)
        caption.value = (
            f"image {a} (a {int(y[a])}) \u2192 image {b} (a {int(y[b])}): originals at "
            f"the ends, {steps} decodings between"
        )
        update_image()

    def update_image(_=None):
        image.value = image_png(run(zz(), label()), 6)

    strip = _image_widget(b"", scale, steps + 2)
    image = _image_widget(b"", 6)
    update_strip()
    for control in pick + ([classes] if classes else []):
        control.observe(update_strip, names="value")
    t.observe(update_image, names="value")
    controls = widgets.VBox(([classes] if classes else []) + pick + [t])
    out = widgets.VBox([widgets.HBox([controls, image]), caption, strip])
    out.first, out.second, out.t, out.classes = pick[0], pick[1], t, classes
    out.image, out.strip, out.caption, out.z = image, strip, caption, zz
    return out


__all__ = [
    "SiteExplorer",
    "export_decoder",
    "image_png",
    "interpolation",
    "latent_pad",
    "latent_sliders",
    "site_explorer",
    "standalone_page",
]
