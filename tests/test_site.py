"""The built site, as a reader sees it: every page in headless Chromium (Debian's).

Needs ``_build/html`` (``make site``) and ``/usr/bin/chromium`` (``make test`` installs it;
the ``browser`` fixture of conftest.py drives it). Screenshots of every page are left in
``_build/screenshots`` for a human look.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
import urllib.request
from urllib.parse import urlparse

import pytest

from tools import build, student

HTML = build.ROOT / "_build" / "html"
SHOTS = build.ROOT / "_build" / "screenshots"
PAGES = build.toc_files()
# vaecourse.explorer's kernel-free explorers, and the pages that show them: exactly these
# (test_explorers_are_on_the_pages_listed_here keeps the list true).
EXPLORER = "div.vaecourse-explorer"
PAGES_WITH_EXPLORERS = ["book/vae", "book/cvae"]

pytestmark = pytest.mark.site


@pytest.fixture(scope="module")
def site_url():
    if not (HTML / "index.html").exists():
        pytest.fail(
            "no built site in _build/html: run `make site` (make test does) first"
        )
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def visit(browser, url: str, name: str) -> dict:
    """Load a page, wait for MathJax, and report what a reader would notice."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, outside = [], []
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "requestfailed", lambda r: errors.append(f"request failed: {r.url}")
    )
    page.on(
        "response",
        lambda r: (
            errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400
            else None
        ),
    )
    page.on(
        "request",
        lambda r: (
            outside.append(r.url)
            if urlparse(r.url).hostname not in ("127.0.0.1", None)
            else None
        ),
    )
    page.goto(url, wait_until="load")
    page.wait_for_function(
        "() => !window.MathJax || (MathJax.startup && MathJax.startup.promise"
        " && (MathJax.startup.promise.then(() => window.__mjDone = true), window.__mjDone))",
        timeout=20_000,
    )
    facts = page.evaluate(
        """() => {
        const main = document.querySelector("main") || document.body;
        const imgs = [...main.querySelectorAll("img")];
        return {
          title: document.title,
          math_sources: main.querySelectorAll("span.math, div.math").length,
          math_rendered: main.querySelectorAll("mjx-container").length,
          math_errors: main.querySelectorAll("mjx-merror").length,
          images: imgs.map(i => ({src: i.getAttribute("src"), alt: i.getAttribute("alt") || "",
                                  ok: i.complete && i.naturalWidth > 0})),
          links: [...document.querySelectorAll("a[href]")].map(a => a.href),
          // code cells and their printed output that scroll sideways (toggled
          // cells that are closed have no layout and are skipped)
          overflowing: [...main.querySelectorAll("div.cell_input pre, div.cell_output pre")]
            .filter(p => p.offsetParent !== null && p.scrollWidth > p.clientWidth + 1)
            .map(p => p.innerText.split("\\n").reduce((a, l) => l.length > a.length ? l : a, "")),
          prose: (() => { const c = main.cloneNode(true);
                          c.querySelectorAll("pre, code, mjx-container, script, style").forEach(e => e.remove());
                          return c.innerText; })(),
        };
      }"""
    )
    facts["explorers"] = drag_explorers(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=str(SHOTS / f"{name.replace('/', '_')}.png"), full_page=True
    )
    page.close()
    return {**facts, "errors": errors, "outside": outside}


def drag_explorers(page) -> list[dict]:
    """Drag across the pad of every explorer on the page, as a reader would, and report
    whether its decoded image changed."""
    from playwright.sync_api import TimeoutError as Timeout

    found = []
    for root in page.query_selector_all(EXPLORER):
        root.evaluate("e => e.scrollIntoView({block: 'center'})")
        image = root.query_selector("canvas.vx-image")
        before = image.evaluate("c => c.toDataURL()")
        box = root.query_selector(".vx-pad").bounding_box()
        page.mouse.move(
            box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"]
        )
        page.mouse.down()
        page.mouse.move(
            box["x"] + 0.75 * box["width"],
            box["y"] + 0.7 * box["height"],
            steps=8,
        )
        page.mouse.up()
        try:
            page.wait_for_function(
                "([c, before]) => c.toDataURL() !== before",
                arg=[image, before],
                timeout=3_000,
            )
            changed = True
        except Timeout:  # the image never changed
            changed = False
        found.append({"id": root.get_attribute("id"), "changed": changed})
    return found


@pytest.fixture(scope="module")
def pages(site_url, browser):
    return {f: visit(browser, f"{site_url}/{f}.html", f) for f in PAGES}


@pytest.mark.parametrize("name", PAGES)
def test_page_loads_cleanly(pages, name):
    """Every page loads with no console error, no failed request and nothing fetched from
    outside the site (no CDN: the book must work offline)."""
    facts = pages[name]
    assert facts["errors"] == [], f"{name}: console errors {facts['errors']}"
    assert facts["outside"] == [], (
        f"{name}: requests outside the site {facts['outside']}"
    )
    assert "Page not found" not in facts["title"]


@pytest.mark.parametrize("name", PAGES)
def test_math_is_rendered(pages, name):
    """Every math element was typeset by MathJax, without a TeX error."""
    facts = pages[name]
    assert facts["math_errors"] == 0, (
        f"{name}: {facts['math_errors']} MathJax errors"
    )
    assert facts["math_rendered"] >= facts["math_sources"], (
        f"{name}: {facts['math_sources']} math elements but "
        f"{facts['math_rendered']} rendered by MathJax"
    )
    assert "$" not in facts["prose"], f"{name}: unrendered $ in the text"


def test_pages_with_math_have_math(pages):
    """The check above is not vacuous: the intro's notation table and the data chapter
    contain math that MathJax rendered."""
    assert pages["book/intro"]["math_rendered"] >= 20
    assert pages["book/data"]["math_rendered"] >= 5


@pytest.mark.parametrize("notebook", build.chapters(), ids=lambda p: p.stem)
def test_chapter_figures_present_with_alt_text(pages, notebook):
    """Every figure of a chapter is on its page, loaded, and has alt text."""
    nb = build.read(notebook)
    expected = sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        and "remove-output" not in cell.metadata.get("tags", [])
        and "remove-cell" not in cell.metadata.get("tags", [])
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    )
    name = notebook.relative_to(build.ROOT).with_suffix("").as_posix()
    figures = [
        i for i in pages[name]["images"] if "_images/" in (i["src"] or "")
    ]
    assert expected > 0
    assert len(figures) == expected, (
        f"{name}: {len(figures)} figures shown, {expected} made"
    )
    assert all(i["ok"] for i in figures), f"{name}: figures that did not load"
    assert all(len(i["alt"]) > 20 for i in figures), (
        f"{name}: figures without real alt text"
    )


@pytest.mark.parametrize("notebook", build.chapters(), ids=lambda p: p.stem)
def test_colab_links_point_at_the_chapter_and_its_student_edition(
    pages, notebook
):
    """The page's Colab launch link opens this chapter's notebook in the repository;
    the Exercises section's link opens its student edition."""
    name = notebook.relative_to(build.ROOT).with_suffix("").as_posix()
    colab = [
        link
        for link in pages[name]["links"]
        if "colab.research.google.com" in link
    ]
    assert colab == [build.colab_url(notebook), student.colab_url(notebook)], (
        f"{name}: Colab links {colab}"
    )


@pytest.mark.parametrize("notebook", build.chapters(), ids=lambda p: p.stem)
def test_the_student_edition_downloads_from_the_chapter(site_url, notebook):
    """The chapter's download link gives its student edition, a notebook whose
    solutions are stubs."""
    link = f"../student/{notebook.name}"
    page = (HTML / "book" / f"{notebook.stem}.html").read_text()
    assert f'href="{link}" download' in page
    with urllib.request.urlopen(f"{site_url}/book/{link}") as response:
        nb = json.loads(response.read())
    assert any(
        "NotImplementedError" in "".join(c["source"]) for c in nb["cells"]
    )
    assert "student-edition" in [c["id"] for c in nb["cells"]]


def test_the_teachers_page_links_every_student_edition(pages):
    links = pages["book/teachers"]["links"]
    for notebook in build.chapters():
        assert student.colab_url(notebook) in links


def test_search_index_lists_every_page():
    """The site's search covers every page of the table of contents."""
    text = (HTML / "searchindex.js").read_text()
    index = json.loads(text[text.index("(") + 1 : text.rindex(")")])
    assert set(PAGES) <= set(index["docnames"])


def test_explorers_are_on_the_pages_listed_here(pages):
    """The pages that show a kernel-free explorer are PAGES_WITH_EXPLORERS, all in the
    table of contents: so the drag test below covers every explorer of the site."""
    assert set(PAGES_WITH_EXPLORERS) <= set(PAGES)
    shown = sorted(name for name, facts in pages.items() if facts["explorers"])
    assert shown == sorted(PAGES_WITH_EXPLORERS)


@pytest.mark.parametrize("name", PAGES_WITH_EXPLORERS)
def test_explorers_respond_to_a_drag(pages, name):
    """The chapter shows a kernel-free explorer, and every one on the page redraws its
    digit when the reader drags across its pad."""
    explorers = pages[name]["explorers"]
    assert explorers, f"{name}: no explorer ({EXPLORER}) on the page"
    stuck = [e["id"] for e in explorers if not e["changed"]]
    assert stuck == [], f"{name}: explorers that ignored a drag: {stuck}"


def test_no_page_carries_widget_state(site_url):
    """ipywidgets state is dead weight on the site (no widget JavaScript is loaded, the
    explorers there are self-contained): chapters keep live widgets out of it."""
    heavy = [
        path.relative_to(HTML).as_posix()
        for path in HTML.rglob("*.html")
        if "application/vnd.jupyter.widget-state+json" in path.read_text()
    ]
    assert heavy == [], (
        f"pages with stored widget state: {heavy}; execute chapters with "
        "store_widget_state=False (tools.build.execute)"
    )


@pytest.mark.parametrize("name", PAGES)
def test_code_fits_the_page_without_a_horizontal_scroll(pages, name):
    """At 1280 pixels, a line of a code cell (79 characters at most, ruff checks)
    fits the page, and printed output wraps instead of scrolling sideways."""
    assert pages[name]["overflowing"] == [], (
        f"{name}: code that scrolls sideways, longest lines "
        f"{pages[name]['overflowing']}"
    )
