"""Make the built site self-contained: it must load and work with no network at all.

- MathJax 3 is served from the site (``_static/mathjax``), copied from the PyPI package
  django-static-mathjax (a plain copy of MathJax 3.2.2), instead of from a CDN.
- sphinx-thebe's scripts are dropped: the book does not offer Thebe (live code through
  Binder), and that extension writes its configuration script twice on every page
  (a console error: "Identifier 'THEBE_JS_URL' has already been declared").
- The theme starts in light mode: figures are black ink on white.
- ``static/vaecourse.css``: code cells in a font size at which the chapters'
  79-character lines fit the page.
- The student edition (``_build/student``, written by ``make student``) is served from
  ``student/``, where each chapter's download link points.
"""

import importlib.metadata
import shutil
from pathlib import Path

PARTS = [
    "tex-chtml.js",
    "input/tex/extensions",
    "output/chtml/fonts/woff-v2",
    "ui",
    "a11y",
    "sre",
]


def mathjax_root() -> Path:
    dist = importlib.metadata.distribution("django-static-mathjax")
    return Path(dist.locate_file("mathjax/static/mathjax/es5"))


def copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source, target = mathjax_root(), Path(app.outdir) / "_static" / "mathjax"
    for part in PARTS:
        src, dst = source / part, target / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)


def drop_thebe(app, pagename, templatename, context, doctree):
    def keep(asset):
        text = f"{getattr(asset, 'filename', asset)} {getattr(asset, 'attributes', {})}"
        return "thebe" not in text.lower()

    for key in ("script_files", "css_files"):
        if key in context:
            context[key] = [asset for asset in context[key] if keep(asset)]


def light_mode(app, config):
    config.html_context = {**config.html_context, "default_mode": "light"}


def copy_css(app, exception):
    if exception is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        shutil.copy2(
            Path(__file__).parent / "static" / "vaecourse.css", static
        )


def copy_student_edition(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source = Path(app.srcdir) / "_build" / "student"
    notebooks = sorted(source.glob("*.ipynb"))
    if not notebooks:
        raise RuntimeError(
            f"no student edition in {source}: run `python -m tools.student` "
            "(make site does) before building the site"
        )
    target = Path(app.outdir) / "student"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for path in notebooks:
        shutil.copy2(path, target)


def setup(app):
    if not (mathjax_root() / "tex-chtml.js").exists():
        raise RuntimeError(
            "MathJax is missing: pip install django-static-mathjax==3.2.2.1"
        )
    app.config.mathjax_path = "mathjax/tex-chtml.js"
    app.connect("config-inited", light_mode)
    app.add_css_file("vaecourse.css")
    app.connect("html-page-context", drop_thebe)
    app.connect("build-finished", copy_mathjax)
    app.connect("build-finished", copy_css)
    app.connect("build-finished", copy_student_edition)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
