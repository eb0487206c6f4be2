"""Tests of vaecourse.explorer: the exported decoder, the page in headless Chromium, and the
live widgets under ipywidgets 8 (installed) and 7.7.1 (Colab's, in a subprocess).

The browser tests (marker ``site``) open a standalone page written by ``standalone_page``
with Debian's chromium (the ``browser`` fixture of conftest.py); they check that the
JavaScript decoder reproduces PyTorch's output for every supported activation and for the
chapters' decoders, and that a drag, a touch, a key and a class button move the point.
(The time per decode is measured by ``make bench``, not asserted here.)
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vaecourse.chapters.cvae import CVAE
from vaecourse.chapters.vae import VAE
from vaecourse.explorer import (
    export_decoder,
    image_png,
    interpolation,
    latent_sliders,
    site_explorer,
    standalone_page,
)

pytestmark = pytest.mark.usefixtures("isolated")

ROOT = Path(__file__).resolve().parent.parent
ACTIVATIONS = {
    "relu": nn.ReLU(),
    "leaky_relu": nn.LeakyReLU(0.2),
    "elu": nn.ELU(alpha=0.7),
    "gelu": nn.GELU(),
    "gelu_tanh": nn.GELU(approximate="tanh"),
    "tanh": nn.Tanh(),
    "sigmoid": nn.Sigmoid(),
    "softplus": nn.Softplus(beta=2.0, threshold=3.0),
    "silu": nn.SiLU(),
}
POINTS = [(0.0, 0.0), (1.3, -0.7), (-2.5, 2.5), (2.9, 2.1), (-0.05, -2.95)]


def decoder(
    activation: nn.Module, sizes=(2, 32, 48), seed: int = 0, final=None
):
    """A random decoder whose hidden units reach well into both tails of the activation
    (weights scaled up), so every branch of the JavaScript is exercised."""
    torch.manual_seed(seed)
    layers = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), activation]
    layers.append(nn.Linear(sizes[-1], 784))
    if final is not None:
        layers.append(final)
    layers.append(nn.Unflatten(1, (1, 28, 28)))
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(3.0)
                layer.bias.uniform_(-1, 1)
    return net.eval()


def scatter(n: int = 500, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), torch.randint(
        0, 10, (n,), generator=g
    )


def torch_images(net, z, y=None, classes=0, output="logits"):
    """What the explorer should show: (B, 784) intensities in [0, 1]."""
    z = torch.as_tensor(z, dtype=torch.float32).reshape(-1, 2)
    if classes:
        one_hot = torch.zeros(len(z), classes)
        one_hot[:, y] = 1
        z = torch.cat([z, one_hot], dim=1)
    with torch.no_grad():
        out = net(z).reshape(len(z), -1)
    return (
        torch.sigmoid(out) if output == "logits" else out.clamp(0, 1)
    ).double()


# --- Export and HTML, without a browser -----------------------------------------------


def test_export_writes_little_endian_float32_weights():
    net = decoder(nn.ReLU())
    model = export_decoder(net, output="logits")
    linears = [m for m in net if isinstance(m, nn.Linear)]
    exported = [lay for lay in model["layers"] if lay["op"] == "linear"]
    assert [lay["op"] for lay in model["layers"]] == [
        "linear",
        "relu",
        "linear",
        "relu",
        "linear",
    ]
    for layer, lay in zip(linears, exported, strict=True):
        w = np.frombuffer(base64.b64decode(lay["w"]), dtype="<f4")
        np.testing.assert_array_equal(w, layer.weight.detach().numpy().ravel())
        b = np.frombuffer(base64.b64decode(lay["b"]), dtype="<f4")
        np.testing.assert_array_equal(b, layer.bias.detach().numpy())
    assert model["parameters"] == sum(p.numel() for p in net.parameters())
    assert model["inputs"] == 2 and model["output"] == "logits"


def test_export_flattens_nested_sequentials_and_ignores_shape_layers():
    net = nn.Sequential(
        nn.Flatten(),
        nn.Sequential(
            nn.Linear(2, 8, bias=False), nn.Dropout(0.5), nn.Identity()
        ),
        nn.ELU(),
        nn.Linear(8, 784),
        nn.Sigmoid(),
        nn.Unflatten(1, (1, 28, 28)),
    )
    model = export_decoder(net)
    assert [lay["op"] for lay in model["layers"]] == [
        "linear",
        "elu",
        "linear",
        "sigmoid",
    ]
    assert model["output"] == "probabilities"  # a final Sigmoid says so
    bias = np.frombuffer(base64.b64decode(model["layers"][0]["b"]), "<f4")
    assert (bias == 0).all() and len(bias) == 8


@pytest.mark.parametrize(
    "net, output, error, message",
    [
        (nn.Linear(2, 784), None, TypeError, "nn.Sequential"),
        (
            nn.Sequential(nn.Linear(2, 784), nn.BatchNorm1d(784)),
            "logits",
            ValueError,
            "BatchNorm1d.*ReLU, LeakyReLU",
        ),
        (
            nn.Sequential(
                nn.Linear(2, 10), nn.Hardswish(), nn.Linear(10, 784)
            ),
            "logits",
            ValueError,
            "Hardswish",
        ),
        (nn.Sequential(nn.Linear(2, 100)), "logits", ValueError, "784"),
        (nn.Sequential(nn.ReLU()), "logits", ValueError, "no Linear"),
        (
            nn.Sequential(nn.Linear(2, 784)),
            None,
            ValueError,
            "output='logits'",
        ),
        (nn.Sequential(nn.Linear(2, 784)), "probs", ValueError, "'logits' or"),
        (
            nn.Sequential(nn.Linear(2, 784), nn.Sigmoid()),
            "logits",
            ValueError,
            "Sigmoid",
        ),
        (
            nn.Sequential(
                nn.Linear(2, 784),
                nn.Unflatten(1, (1, 28, 28)),
                nn.Linear(28, 28),
            ),
            "logits",
            ValueError,
            "Unflatten",
        ),
    ],
)
def test_export_rejects_what_the_page_cannot_evaluate(
    net, output, error, message
):
    with pytest.raises(error, match=message):
        export_decoder(net, output=output)


def test_site_explorer_checks_the_latent_size_and_the_scatter():
    z, y = scatter()
    with pytest.raises(ValueError, match="takes 3 inputs but the pad gives 2"):
        site_explorer(nn.Sequential(nn.Linear(3, 784)), z, y, output="logits")
    with pytest.raises(ValueError, match=r"one-hot of 10 classes"):
        site_explorer(
            decoder(nn.ReLU()), z, y, output="logits", condition_classes=10
        )
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        site_explorer(
            decoder(nn.ReLU()), torch.zeros(5, 3), y[:5], output="logits"
        )
    with pytest.raises(ValueError, match="one label per code"):
        site_explorer(decoder(nn.ReLU()), z, y[:4], output="logits")
    with pytest.raises(ValueError, match="NaN or infinite"):
        site_explorer(decoder(nn.ReLU()), z * np.nan, y, output="logits")
    with pytest.raises(ValueError, match=r"start must be a point"):
        site_explorer(
            decoder(nn.ReLU()), z, y, output="logits", start=(1, 2, 3)
        )
    with pytest.raises(ValueError, match="min < max"):
        site_explorer(
            decoder(nn.ReLU()), z, y, output="logits", extent=(1, 0, 0, 1)
        )


def test_site_explorer_is_self_contained_html_with_unique_ids():
    z, y = scatter()
    net = decoder(nn.ReLU())
    a = site_explorer(net, z, y, output="logits")
    b = site_explorer(net, z, y, output="logits")
    assert a.element_id != b.element_id
    assert str(a) == a.data == a._repr_html_()
    assert f'id="{a.element_id}"' in str(
        a
    ) and 'class="vaecourse-explorer"' in str(a)
    assert a.parameters == sum(p.numel() for p in net.parameters())
    assert a.weight_bytes == 4 * a.parameters
    assert a.page_bytes == len(str(a).encode())
    assert (
        a.page_bytes > 4 / 3 * a.weight_bytes
    )  # the weights travel as base64
    code = re.sub(
        r'<script type="application/json".*?</script>', "", str(a), flags=re.S
    )
    assert not re.search(
        r"https?:|src=|href=|@import|url\(|fetch\(|XMLHttp", code
    )
    assert (
        "$" not in code
    )  # the site's test reads any $ on a page as unrendered math
    page = standalone_page(a, b)
    assert (
        page.startswith("<!doctype html>")
        and str(a) in page
        and str(b) in page
    )


def test_scatter_is_quantized_inside_the_extent():
    """Codes are stored as uint16 fractions of the extent; codes outside are left out."""
    z = torch.tensor([[0.0, 0.0], [1.0, -1.0], [5.0, 0.0], [-1.0, 1.0]])
    y = torch.tensor([1, 2, 3, 4])
    html = str(
        site_explorer(
            decoder(nn.ReLU()), z, y, output="logits", extent=(-1, 1, -1, 1)
        )
    )
    spec = json.loads(
        re.search(r'class="vx-data">(.*?)</script>', html, flags=re.S).group(1)
    )
    grid = np.frombuffer(base64.b64decode(spec["points"]), "<u2").reshape(
        -1, 2
    )
    labels = np.frombuffer(base64.b64decode(spec["labels"]), "u1")
    np.testing.assert_array_equal(
        grid, [[32768, 32768], [65535, 0], [0, 65535]]
    )
    np.testing.assert_array_equal(labels, [1, 2, 4])
    assert spec["legend"] == [1, 2, 3, 4] and spec["extent"] == [-1, 1, -1, 1]


# --- In headless Chromium ---------------------------------------------------------------


class Page:
    """A standalone explorer page open in Chromium, with what went wrong recorded."""

    def __init__(self, browser, path: Path, **context):
        self.context = browser.new_context(
            viewport={"width": 900, "height": 700}, **context
        )
        self.page = self.context.new_page()
        self.errors, self.outside = [], []
        self.page.on(
            "console",
            lambda m: (
                self.errors.append(m.text)
                if m.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "request",
            lambda r: (
                None if r.url == path.as_uri() else self.outside.append(r.url)
            ),
        )
        self.page.goto(path.as_uri(), wait_until="load")

    def api(self, element_id: str, call: str):
        return self.page.evaluate(
            f"(() => {{ const x = window.vaecourseExplorers[{element_id!r}]; return {call}; }})()"
        )

    def pixels(self, element_id: str) -> np.ndarray:
        """The grey levels of the decoded image as drawn on its canvas."""
        data = self.page.evaluate(
            f"""(() => {{ const c = document.getElementById({element_id!r})
                    .querySelector('.vx-image');
                return Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data); }})()"""
        )
        return np.array(data).reshape(784, 4)[:, 0]

    def drawn(self, element_id: str) -> np.ndarray:
        """Wait for the next frame, then read the image."""
        self.page.evaluate(
            "new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))"
        )
        return self.pixels(element_id)

    def close(self):
        self.context.close()


def expected_pixels(net, z, y=None, classes=0, output="logits") -> np.ndarray:
    return np.round(
        255 * (1 - torch_images(net, z, y, classes, output)[0].numpy())
    )


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """One page with an explorer per activation, one with probabilities and a conditional
    one: several explorers on one page, as a chapter may have."""
    z, y = scatter()
    cases = {
        name: (decoder(act, seed=i), "logits", 0)
        for i, (name, act) in enumerate(ACTIVATIONS.items())
    }
    cases["final_sigmoid"] = (
        decoder(nn.Tanh(), final=nn.Sigmoid()),
        "probabilities",
        0,
    )
    cases["conditional"] = (
        decoder(nn.ReLU(), sizes=(12, 40), seed=9),
        "logits",
        10,
    )
    # the decoders the VAE and CVAE chapters export, as the chapters build them
    torch.manual_seed(10)
    cases["vae_chapter"] = (
        VAE(2, (128, 64), nn.SiLU).decoder.eval(),
        "logits",
        0,
    )
    cases["cvae_chapter"] = (CVAE(2, (256,)).decoder.eval(), "logits", 10)
    explorers = {
        name: site_explorer(
            net,
            z,
            y,
            output=None if output == "probabilities" else output,
            extent=(-3, 3, -3, 3),
            condition_classes=classes or None,
            title=f"Explorer: {name}",
        )
        for name, (net, output, classes) in cases.items()
    }
    path = tmp_path_factory.mktemp("explorer") / "gallery.html"
    path.write_text(standalone_page(*explorers.values()))
    return path, cases, explorers


@pytest.fixture(scope="module")
def gallery_page(browser, gallery):
    path, cases, explorers = gallery
    page = Page(browser, path)
    yield page, cases, explorers
    page.close()


@pytest.mark.site
def test_page_is_clean_and_offline(gallery_page):
    page, _, explorers = gallery_page
    page.page.wait_for_timeout(200)
    assert page.errors == [], f"console errors: {page.errors}"
    assert page.outside == [], f"requests leaving the page: {page.outside}"
    found = page.page.evaluate(
        "[...document.querySelectorAll('div.vaecourse-explorer')].map(e => e.id)"
    )
    assert found == [e.element_id for e in explorers.values()]
    assert sorted(
        page.page.evaluate("Object.keys(window.vaecourseExplorers)")
    ) == sorted(found)


@pytest.mark.site
@pytest.mark.parametrize(
    "name",
    [
        *ACTIVATIONS,
        "final_sigmoid",
        "conditional",
        "vae_chapter",
        "cvae_chapter",
    ],
)
def test_javascript_decoder_matches_pytorch(gallery_page, name):
    """At fixed latent points, the page's raw outputs and displayed intensities agree with
    PyTorch's within 1e-4 (max over the 784 pixels)."""
    page, cases, explorers = gallery_page
    net, output, classes = cases[name]
    element_id = explorers[name].element_id
    for point in POINTS:
        for label in [0, 7] if classes else [None]:
            inputs = torch.tensor([point], dtype=torch.float32)
            if classes:
                inputs = torch.cat(
                    [
                        inputs,
                        nn.functional.one_hot(torch.tensor([label]), classes),
                    ],
                    1,
                )
            with torch.no_grad():
                raw = net(inputs.float()).reshape(-1).double().numpy()
            js_raw = np.array(
                page.api(
                    element_id, f"Array.from(x.forward({inputs[0].tolist()}))"
                )
            )
            assert np.abs(js_raw - raw).max() < 1e-4, (name, point, label)
            shown = np.array(
                page.api(
                    element_id,
                    f"Array.from(x.decode({list(point)}, {label or 0}))",
                )
            )
            want = torch_images(net, point, label, classes, output)[0].numpy()
            assert np.abs(shown - want).max() < 1e-4, (name, point, label)
            assert 0 <= shown.min() and shown.max() <= 1


@pytest.mark.site
def test_javascript_erf_is_accurate(gallery_page):
    page, _, explorers = gallery_page
    xs = np.linspace(-7, 7, 2801).tolist() + [
        1e-8,
        -3e-5,
        2.4999,
        2.5,
        5.9999,
        6.0,
        30.0,
    ]
    got = page.api(explorers["gelu"].element_id, f"{xs}.map(v => x.erf(v))")
    assert (
        max(abs(g - math.erf(v)) for g, v in zip(got, xs, strict=True)) < 1e-13
    )


def drag(page, element_id: str, start, end, steps: int = 10):
    """Press on the pad at ``start`` and release at ``end`` (fractions of its box)."""
    pad = page.page.locator(f"#{element_id} .vx-pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    page.page.mouse.move(
        box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"]
    )
    page.page.mouse.down()
    page.page.mouse.move(
        box["x"] + end[0] * box["width"],
        box["y"] + end[1] * box["height"],
        steps=steps,
    )
    page.page.mouse.up()


@pytest.mark.site
@pytest.mark.parametrize("name", ["relu", "conditional"])
def test_a_drag_moves_the_point_and_redraws_the_digit(gallery_page, name):
    page, cases, explorers = gallery_page
    net, output, classes = cases[name]
    element_id = explorers[name].element_id
    page.api(element_id, "x.set([0, 0])")
    before = page.drawn(element_id)
    np.testing.assert_allclose(
        before, expected_pixels(net, (0, 0), 0, classes), atol=1
    )
    drag(page, element_id, (0.3, 0.3), (0.8, 0.75))
    after = page.drawn(element_id)
    z = page.api(element_id, "x.state().z")
    assert z[0] > 1 and z[1] < -1  # right and down on the pad: z1 up, z2 down
    assert np.abs(after - before).max() > 10
    np.testing.assert_allclose(
        after, expected_pixels(net, z, 0, classes), atol=1
    )
    shown = page.page.locator(f"#{element_id} .vx-coords").inner_text()
    assert f"{z[0]:.2f}" in shown and f"{abs(z[1]):.2f}" in shown


@pytest.mark.site
def test_class_buttons_and_arrow_keys(gallery_page):
    page, cases, explorers = gallery_page
    net, _, classes = cases["conditional"]
    element_id = explorers["conditional"].element_id
    page.api(element_id, "x.set([0.5, -0.5])")
    page.page.locator(f"#{element_id} .vx-picker button", has_text="7").click()
    assert page.api(element_id, "x.state().y") == 7
    np.testing.assert_allclose(
        page.drawn(element_id),
        expected_pixels(net, (0.5, -0.5), 7, classes),
        atol=1,
    )
    assert (
        page.page.locator(
            f"#{element_id} button[aria-pressed=true]"
        ).inner_text()
        == "7"
    )
    page.page.locator(f"#{element_id} .vx-pad").focus()
    page.page.keyboard.press("ArrowRight")
    page.page.keyboard.press("Shift+ArrowUp")
    z = page.api(element_id, "x.state().z")
    assert z == pytest.approx([0.5 + 0.02 * 6, -0.5 + 0.1 * 6])


@pytest.mark.site
def test_a_touch_drag_moves_the_point(browser, gallery):
    """Touch (a phone or tablet): the pad takes pointer events and does not scroll."""
    path, cases, explorers = gallery
    page = Page(browser, path, has_touch=True, is_mobile=True)
    try:
        element_id = explorers["relu"].element_id
        pad = page.page.locator(f"#{element_id} .vx-pad")
        pad.scroll_into_view_if_needed()
        box = pad.bounding_box()
        cdp = page.context.new_cdp_session(page.page)

        def touch(kind, fx, fy):
            points = [
                {
                    "x": box["x"] + fx * box["width"],
                    "y": box["y"] + fy * box["height"],
                }
            ]
            cdp.send(
                "Input.dispatchTouchEvent",
                {
                    "type": kind,
                    "touchPoints": points if kind != "touchEnd" else [],
                },
            )

        touch("touchStart", 0.5, 0.5)
        for k in range(1, 6):
            touch("touchMove", 0.5 - 0.06 * k, 0.5 - 0.06 * k)
        touch("touchEnd", 0, 0)
        page.drawn(element_id)
        z = page.api(element_id, "x.state().z")
        assert z[0] < -0.5 and z[1] > 0.5, z
        assert page.errors == []
    finally:
        page.close()


@pytest.mark.site
def test_works_when_inserted_as_jupyterlab_does(browser, tmp_path):
    """JupyterLab sets an output's innerHTML, then re-creates its scripts (which run only
    once the output is attached): the explorer must find its element all the same."""
    site = site_explorer(decoder(nn.ReLU()), *scatter(), output="logits")
    path = tmp_path / "empty.html"
    path.write_text(standalone_page())
    page = Page(browser, path)
    try:
        page.page.evaluate(
            """(html) => {
                const host = document.createElement("div");
                host.innerHTML = html;
                for (const old of host.querySelectorAll("script")) {
                    const script = document.createElement("script");
                    for (const a of old.attributes) script.setAttribute(a.name, a.value);
                    script.textContent = old.textContent;
                    old.parentNode.replaceChild(script, old);
                }
                document.body.appendChild(host);
            }""",
            str(site),
        )
        shown = page.drawn(site.element_id)
        np.testing.assert_allclose(
            shown, expected_pixels(decoder(nn.ReLU()), (0, 0)), atol=1
        )
        assert page.errors == []
    finally:
        page.close()


@pytest.mark.site
def test_a_decoder_of_a_realistic_size_matches_pytorch(browser, tmp_path):
    """Half a million parameters (a 2 MB page): the page's decoder still agrees with
    PyTorch's at every point."""
    net = decoder(nn.ReLU(), sizes=(2, 256, 512))
    z, y = scatter()
    site = site_explorer(net, z, y, output="logits")
    assert site.parameters > 500_000
    path = tmp_path / "large.html"
    path.write_text(standalone_page(site))
    page = Page(browser, path)
    try:
        for point in POINTS:
            shown = np.array(
                page.api(
                    site.element_id, f"Array.from(x.decode({list(point)}))"
                )
            )
            assert (
                np.abs(shown - torch_images(net, point)[0].numpy()).max()
                < 1e-4
            )
        assert page.errors == []
    finally:
        page.close()


# --- Live widgets: ipywidgets 8 here, 7.7.1 in a subprocess ---------------------------


def png_pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"))


def shown_digit(png: bytes, scale: int = 6) -> np.ndarray:
    """The 28x28 grey levels of an image widget (one sample per scale x scale block)."""
    pixels = png_pixels(png)
    assert pixels.shape == (28 * scale, 28 * scale)
    return pixels[scale // 2 :: scale, scale // 2 :: scale]


def expected_digit(decode, z, *label) -> np.ndarray:
    with torch.no_grad():
        x = decode(torch.tensor([z], dtype=torch.float32), *label)
    return np.round(255 * (1 - x[0, 0].numpy()))


def live_decode(dim: int, classes: int = 0):
    net = decoder(nn.Tanh(), sizes=(dim + classes, 32), seed=dim + classes)

    def decode(z, y=None):
        if classes:
            z = torch.cat(
                [z, nn.functional.one_hot(y, classes).float()], dim=1
            )
        return torch.sigmoid(net(z))

    return decode


def test_live_latent_sliders():
    decode = live_decode(3)
    box = latent_sliders(decode, 3)
    first = box.image.value
    np.testing.assert_array_equal(
        shown_digit(first), expected_digit(decode, [0, 0, 0])
    )
    box.sliders[1].value = 1.5
    box.sliders[2].value = -2.0
    assert box.image.value != first
    np.testing.assert_array_equal(
        shown_digit(box.image.value), expected_digit(decode, [0, 1.5, -2.0])
    )
    assert box.classes is None and box.z().tolist() == [[0, 1.5, -2.0]]


def test_live_latent_sliders_with_a_class_menu():
    decode = live_decode(2, classes=10)
    box = latent_sliders(decode, 2, condition_classes=10)
    box.sliders[0].value = 0.8
    before = box.image.value
    box.classes.value = 4
    assert box.image.value != before
    np.testing.assert_array_equal(
        shown_digit(box.image.value),
        expected_digit(decode, [0.8, 0.0], torch.tensor([4])),
    )


def test_live_interpolation_walks_between_the_two_codes():
    decode = live_decode(2)
    weight = (
        torch.randn(784, 2, generator=torch.Generator().manual_seed(1)) / 20
    )

    def encode(x):
        return x.reshape(len(x), -1) @ weight

    g = torch.Generator().manual_seed(2)
    images, labels = (
        torch.rand(20, 1, 28, 28, generator=g),
        torch.arange(20) % 10,
    )
    box = interpolation(
        encode, decode, images, labels, steps=5, first=3, second=8
    )
    za, zb = encode(images[3:4])[0], encode(images[8:9])[0]
    box.t.value = 0.0
    np.testing.assert_array_equal(
        shown_digit(box.image.value), expected_digit(decode, za.tolist())
    )
    box.t.value = 1.0
    np.testing.assert_array_equal(
        shown_digit(box.image.value), expected_digit(decode, zb.tolist())
    )
    strip = png_pixels(box.strip.value)
    assert strip.shape == (
        30 * 4,
        (7 * 29 + 1) * 4,
    )  # 2 originals + 5 steps, padded
    np.testing.assert_array_equal(
        strip[4 + 2 :: 4, 4 + 2 :: 4][:28, :28],
        np.round(255 * (1 - images[3, 0].numpy())),
    )
    before = box.strip.value
    box.first.value = 11
    assert box.strip.value != before and "image 11 (a 1)" in box.caption.value


def test_live_conditional_interpolation_passes_the_class():
    """With condition_classes, decode gets the chosen class and encode the true labels."""
    decode = live_decode(2, classes=10)
    seen = []

    def encode(x, labels):
        seen.append(labels.tolist())
        return x.reshape(len(x), -1)[:, :2] + labels[:, None]

    images, labels = torch.rand(5, 1, 28, 28), torch.tensor([3, 1, 4, 1, 5])
    box = interpolation(encode, decode, images, labels, condition_classes=10)
    box.classes.value = 2
    box.t.value = 0.0
    assert [3] in seen and [1] in seen
    np.testing.assert_array_equal(
        shown_digit(box.image.value),
        expected_digit(
            decode, (images[0, 0, 0, :2] + 3).tolist(), torch.tensor([2])
        ),
    )


def test_live_explorers_reject_bad_decoders():
    with pytest.raises(ValueError, match=r"shape \(1, 1, 28, 28\)"):
        latent_sliders(lambda z: torch.zeros(len(z), 784), 2)
    with pytest.raises(ValueError, match="dim must be at least 1"):
        latent_sliders(live_decode(2), 0)


def test_image_png_is_black_ink_on_white():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 3, 5] = 1.0
    pixels = png_pixels(image_png(x, scale=2))
    assert pixels.shape == (56, 56)
    assert pixels[6, 10] == 0 and pixels[7, 11] == 0 and pixels[0, 0] == 255


# --- ipywidgets 7.7.1, as Colab ships it --------------------------------------------------

COLAB_WIDGETS = [
    "ipywidgets==7.7.1",
    "widgetsnbextension==3.6.1",
    "jupyterlab-widgets==1.1.1",
    "ipython-genutils==0.2.0",
]
OFFLINE = (
    "NewConnectionError",
    "Failed to establish",
    "ConnectTimeout",
    "ProxyError",
)


def colab_widgets_dir() -> Path:
    """ipywidgets 7.7.1 installed once into the user's cache (atomic: a rename)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    target = cache / "vaecourse" / "test-ipywidgets-7.7.1"
    if (target / "ipywidgets" / "__init__.py").exists():
        return target
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--target",
            str(partial),
            *COLAB_WIDGETS,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        if any(word in done.stdout + done.stderr for word in OFFLINE):
            pytest.skip(
                f"the package index is unreachable: {done.stderr[-300:]}"
            )
        pytest.fail(f"pip could not install {COLAB_WIDGETS}:\n{done.stderr}")
    try:
        partial.rename(target)
    except OSError:  # another run finished first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def test_colab_ipywidgets_7_7_1_passes_the_same_widget_checks():
    """Colab ships ipywidgets 7.7.1: the live tests above run again with it first on the
    path, in a subprocess (which does import 7.7.1, not the installed 8)."""
    if os.environ.get("VAECOURSE_TEST_IPYWIDGETS"):
        pytest.skip("already inside the ipywidgets 7.7.1 run")
    target = colab_widgets_dir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(target), os.environ.get("PYTHONPATH", "")]
        ),
        "VAECOURSE_TEST_IPYWIDGETS": "7.7.1",
    }
    version = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ipywidgets; print(ipywidgets.__version__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert version.stdout.strip() == "7.7.1", version.stdout + version.stderr
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(Path(__file__)),
            "-k",
            "live",
            "-p",
            "no:cacheprovider",
            "-q",
            "-W",
            "ignore::DeprecationWarning",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    live = sum(1 for name in globals() if name.startswith("test_live"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(rf"\b{live} passed", done.stdout), done.stdout[-1000:]
