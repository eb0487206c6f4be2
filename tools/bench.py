"""`make bench`: how long the book takes to build and test, measured, with a report.

Everything runs on a clean clone of the committed HEAD, with its own empty MNIST and
checkpoint caches, exactly as a reader's first `make book` would:

1. cold `make book`: the environment set up, every chapter executed with every model
   trained from scratch, the site built;
2. warm `make book` (nothing stale: the site only), then a warm re-execution of every
   chapter (models from the checkpoint cache);
3. `make test` (CI=true);
4. each chapter's execution time, each cached model's training throughput, peak memory;
5. each page's weight and each in-browser explorer's time per decode, in Chromium;
6. the training loop's overhead over a bare PyTorch loop, side by side in one process.

The report goes to ``_build/bench/report.md`` and ``report.json``, with every target marked
met or missed. This is the maintainers' tooling, outside the installed package.

    python -m tools.bench [--skip-test] [--keep]
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.server
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tools import build

OUT = build.ROOT / "_build" / "bench"
TARGETS = {  # on a 2-core CPU
    # 25 minutes until the chapter "How far a VAE goes on a CPU", which may add
    # up to 10 (its headline model trains for about six)
    "cold_book_minutes": 35.0,
    "warm_book_minutes": 2.0,
    "test_minutes": 15.0,
    "page_megabytes": 3.0,
    "decode_milliseconds": 16.0,
    "loop_overhead_percent": 5.0,
}


def run(cmd: list[str], cwd: Path, env: dict, log: Path) -> dict:
    """Run ``cmd``; return its wall time, peak resident memory and exit code.

    The peak is the largest resident set of the command or any process it waited for
    (``wait4`` rusage), so notebook kernels count too.
    """
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "command": " ".join(cmd),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # kilobytes on Linux
        "returncode": proc.returncode,
        "log": str(log),
    }


def checked(step: dict, name: str) -> dict:
    if step["returncode"] != 0:
        raise SystemExit(
            f"bench: {name} failed (exit {step['returncode']}); see {step['log']}"
        )
    return step


def chapter_seconds(clone: Path) -> dict[str, float]:
    """Execution time of each chapter, as the executor stored it in the notebook."""
    result = {}
    for entry in build.toc_files():
        path = clone / f"{entry}.ipynb"
        if path.exists():
            stamp = build.read(path).metadata.get("vaecourse", {})
            result[entry] = stamp.get("seconds")
    return result


def throughputs(checkpoints: Path) -> list[dict]:
    """Training throughput of every model in a checkpoint cache: images seen over the
    seconds of the epochs that saw them (per-epoch validation included)."""
    from vaecourse.cache import load_entry

    rows = []
    for path in sorted(checkpoints.glob("*")):
        try:
            entry = load_entry(path)
        except Exception as e:  # report it, do not hide it
            rows.append({"model": path.name, "error": str(e)})
            continue
        history = entry["history"] or []
        images = sum(row.get("images", 0) for row in history)
        # a history without per-epoch seconds (e.g. a loop that trains for a fixed
        # time) falls back on the stored training time
        seconds = sum(row.get("seconds", 0.0) for row in history)
        seconds = seconds or entry["train_seconds"]
        rows.append(
            {
                "model": entry["key"]["name"],
                "train_seconds": round(entry["train_seconds"], 1),
                "images": images or None,
                "images_per_second": (
                    round(images / seconds) if images and seconds else None
                ),
            }
        )
    return rows


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


TEXT_TYPES = ("text/", "javascript", "json", "svg", "xml")


def browser_figures(html: Path) -> dict:
    """Each page's weight and each explorer's decode time, in Debian's chromium.

    A page's weight is every byte a first visit fetches: ``raw`` as stored, and
    ``transfer`` with text compressed by gzip as a static host such as GitHub Pages sends
    it (images and fonts are already compressed). ``own`` counts only what belongs to the
    page (its HTML and images), not the theme and MathJax files every page shares.
    """
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    pages, decodes = {}, []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
            ],
        )
        for entry in build.toc_files():
            page = browser.new_page()
            responses = []
            page.on("response", lambda r, seen=responses: seen.append(r))
            page.goto(f"{base}/{entry}.html", wait_until="load")
            page.wait_for_timeout(1000)  # MathJax fetches its fonts after load
            weight = {"raw": 0, "transfer": 0, "own": 0}
            for r in responses:
                body = r.body()
                kind = r.headers.get("content-type", "")
                weight["raw"] += len(body)
                text = any(t in kind for t in TEXT_TYPES)
                weight["transfer"] += (
                    len(gzip.compress(body)) if text else len(body)
                )
                if "/_static/" not in r.url and not r.url.endswith(
                    "searchindex.js"
                ):
                    weight["own"] += len(body)
            pages[entry] = weight
            timing = page.evaluate(
                """() => Object.entries(window.vaecourseExplorers || {}).map(([id, ex]) => {
                    const n = 200, dim = 2;  // the site explorer's plane
                    const t0 = performance.now();
                    for (let i = 0; i < n; i++)
                        ex.decode(Array.from({length: dim}, (_, j) => Math.sin(i + j)));
                    return {id, ms: (performance.now() - t0) / n};
                })"""
            )
            decodes += [{"page": entry, **t} for t in timing]
            page.close()
        browser.close()
    server.shutdown()
    return {"pages": pages, "explorers": decodes}


def loop_overhead(repeats: int = 5) -> dict:
    """`train.fit` against a bare PyTorch loop: the same model, data, batch size and
    order of batches, one epoch each, alternated so that both see the same machine state.
    The fastest of the repeats is compared (as timeit does): slower runs measure the
    machine's other work, not the loop."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from vaecourse.data import load_mnist
    from vaecourse.train import fit

    images = load_mnist("train")[0][:20_000].flatten(1)

    def model():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(784, 256),
            nn.ReLU(),
            nn.Linear(256, 32),
            nn.Linear(32, 256),
            nn.ReLU(),
            nn.Linear(256, 784),
        )

    def bare():
        net = model()
        # the same optimizer as fit's default, so only the loop itself is compared
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
        gen = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        order = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images), 128):
            x = images[order[i : i + 128]]
            loss = F.mse_loss(net(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    def with_fit():
        net = model()
        start = time.perf_counter()
        fit(
            net,
            lambda m, b: {"loss": F.mse_loss(m(b[0]), b[0])},
            (images,),
            epochs=1,
            batch_size=128,
        )
        return time.perf_counter() - start

    os.environ["VAECOURSE_PROGRESS"] = "lines"  # as in the built book
    bare(), with_fit()  # warm-up
    times = {"bare": [], "fit": []}
    for _ in range(repeats):
        times["bare"].append(bare())
        times["fit"].append(with_fit())
    b, f = min(times["bare"]), min(times["fit"])
    return {
        "images_per_epoch": len(images),
        "bare_seconds": round(b, 3),
        "fit_seconds": round(f, 3),
        "bare_images_per_second": round(len(images) / b),
        "fit_images_per_second": round(len(images) / f),
        "overhead_percent": round(100 * (f - b) / b, 1),
        "median_overhead_percent": round(
            100
            * (
                statistics.median(times["fit"])
                / statistics.median(times["bare"])
                - 1
            ),
            1,
        ),
    }


def machine() -> dict:
    import torch

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_at_start": os.getloadavg()[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def verdicts(report: dict) -> list[dict]:
    """Each target with its measured figure and whether it is met."""
    rows = []

    def add(name, measured, target, unit):
        rows.append(
            {
                "target": name,
                "measured": measured,
                "limit": target,
                "unit": unit,
                "met": measured is not None and measured <= target,
            }
        )

    steps = report["steps"]
    add(
        "cold make book",
        steps["cold_book"]["seconds"] / 60,
        TARGETS["cold_book_minutes"],
        "min",
    )
    add(
        "warm make book",
        steps["warm_book"]["seconds"] / 60,
        TARGETS["warm_book_minutes"],
        "min",
    )
    if "test" in steps:
        add(
            "make test",
            steps["test"]["seconds"] / 60,
            TARGETS["test_minutes"],
            "min",
        )
    pages = report["browser"]["pages"]
    if pages:
        heaviest = max(pages, key=lambda p: pages[p]["transfer"])
        add(
            f"heaviest page, first visit ({heaviest})",
            pages[heaviest]["transfer"] / 1e6,
            TARGETS["page_megabytes"],
            "MB",
        )
    explorers = report["browser"]["explorers"]
    add(
        "explorer decode (slowest)",
        max((e["ms"] for e in explorers), default=None),
        TARGETS["decode_milliseconds"],
        "ms",
    )
    add(
        "fit overhead over a bare loop",
        report["loop"]["overhead_percent"],
        TARGETS["loop_overhead_percent"],
        "%",
    )
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Build benchmark",
        "",
        f"Commit `{report['commit']}`, {report['date']}; {m['cores']} cores ({m['cpu']}), "
        f"torch {m['torch']} with {m['threads']} threads, Python {m['python']}; "
        f"load average at start {m['load_at_start']:.2f}.",
        "",
        "## Targets",
        "",
        "| target | measured | limit | met |",
        "|---|---|---|---|",
    ]
    for v in report["verdicts"]:
        measured = (
            "n/a"
            if v["measured"] is None
            else f"{v['measured']:.2f} {v['unit']}"
        )
        lines.append(
            f"| {v['target']} | {measured} | {v['limit']} {v['unit']} | "
            f"{'yes' if v['met'] else 'NO'} |"
        )
    lines += ["", "## Steps (clean clone, empty caches)", ""]
    lines += [
        "| step | wall (s) | peak RSS (MB) | command |",
        "|---|---|---|---|",
    ]
    for name, s in report["steps"].items():
        lines.append(
            f"| {name} | {s['seconds']} | {s['peak_rss_mb']} | `{s['command']}` |"
        )
    lines += [
        "",
        "## Pages",
        "",
        "Weight of a first visit: raw bytes, bytes sent with gzip'd text (what a static",
        "host sends), and the page's own bytes (its HTML and images, without the theme and",
        "MathJax files that every page shares and the browser caches).",
        "",
        "| page | cold run (s) | warm run (s) | first visit raw (kB) | transfer (kB) | own (kB) |",
        "|---|---|---|---|---|---|",
    ]
    for entry, page in report["browser"]["pages"].items():
        cold = report["chapters"]["cold"].get(entry, "")
        warm = report["chapters"]["warm"].get(entry, "")
        lines.append(
            f"| {entry} | {cold} | {warm} | {page['raw'] / 1e3:.0f} | "
            f"{page['transfer'] / 1e3:.0f} | {page['own'] / 1e3:.0f} |"
        )
    lines += [
        "",
        "## Training throughput (cold run)",
        "",
        "| model | train (s) | images | images/s |",
        "|---|---|---|---|",
    ]
    for t in report["models"]:
        lines.append(
            f"| {t['model']} | {t.get('train_seconds')} | {t.get('images') or 'n/a'} | "
            f"{t.get('images_per_second') or 'n/a'} |"
        )
    lines += ["", "## In-browser explorers", ""]
    if report["browser"]["explorers"]:
        lines += ["| page | explorer | ms per decode |", "|---|---|---|"]
        lines += [
            f"| {e['page']} | {e['id']} | {e['ms']:.2f} |"
            for e in report["browser"]["explorers"]
        ]
    else:
        lines.append("No chapter has an in-browser explorer yet.")
    loop = report["loop"]
    lines += [
        "",
        "## Training loop overhead",
        "",
        f"`train.fit` against a bare PyTorch loop, same MLP autoencoder, {loop['images_per_epoch']} "
        f"images per epoch, batch 128, fastest of alternated runs: bare {loop['bare_images_per_second']} "
        f"images/s, fit {loop['fit_images_per_second']} images/s, overhead {loop['overhead_percent']} % "
        f"(of the medians: {loop['median_overhead_percent']} %).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--skip-test", action="store_true", help="do not time make test"
    )
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    args = parser.parse_args(argv)

    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=build.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if dirty:
        print(
            "bench: uncommitted changes are not measured (it clones HEAD)",
            file=sys.stderr,
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=build.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    OUT.mkdir(parents=True, exist_ok=True)
    logs = OUT / "logs"
    logs.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vaecourse-bench-"))
    clone = work / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", str(build.ROOT), str(clone)], check=True
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAECOURSE_", "VIRTUAL_ENV"))
    }
    env |= {
        "VAECOURSE_DATA": str(
            work / "mnist"
        ),  # empty: rebuilt as on a first run
        "VAECOURSE_CHECKPOINTS": str(
            work / "checkpoints"
        ),  # empty: train everything
    }
    report = {
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
    }
    steps = report["steps"] = {}
    print(f"bench: clean clone of {commit} in {clone}", flush=True)

    def step(name, cmd, extra=None):
        print(f"bench: {name}: {' '.join(cmd)} ...", flush=True)
        result = checked(
            run(cmd, clone, env | (extra or {}), logs / f"{name}.log"), name
        )
        print(
            f"bench: {name}: {result['seconds']} s, {result['peak_rss_mb']} MB",
            flush=True,
        )
        steps[name] = result

    step("cold_book", ["make", "book", "EXECUTE=--all"])
    cold = chapter_seconds(clone)
    report["models"] = throughputs(work / "checkpoints")
    step("warm_book", ["make", "book"])
    step("warm_execute_all", ["make", "book", "EXECUTE=--all"])
    report["chapters"] = {"cold": cold, "warm": chapter_seconds(clone)}
    if not args.skip_test:
        step("test", ["make", "test"], {"CI": "true"})
    print("bench: pages and explorers in chromium ...", flush=True)
    report["browser"] = browser_figures(clone / "_build" / "html")
    print("bench: fit against a bare loop ...", flush=True)
    report["loop"] = loop_overhead()
    report["verdicts"] = verdicts(report)
    (OUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / "report.md").write_text(markdown(report))
    print((OUT / "report.md").read_text())
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"bench: the clone is kept in {clone}")
    return 0 if all(v["met"] for v in report["verdicts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
