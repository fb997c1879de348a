"""The web page as a user meets it: server start, first image, Segment and Classify round trips, memory.

    python -m benchmarks.serve            # about 3 min on 2 cores; writes benchmarks/results/serve.{md,json}

Each repeat starts `breastcadx serve` in a new process (--device cpu) and drives the page from headless Debian
Chromium (selenium + chromium-driver, the browser tests' driver) through the bundled sample: page ready, Sample
clicked until the image is on the page, Segment clicked until the lesion is drawn, Classify clicked until the
probability shows, a paint stroke until the page shows the grown mask. Times are what the page sees (clicks to
visible result). Memory: resident set of the server and its worker processes, sampled while waiting.
Baseline measured in the same run: `breastcadx analyze` of the same case from the shell (one process does what
the page's two background jobs do), with and without the heatmap the page's Classify computes.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import header, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "BreastCADx" / "Testing" / "Python"
OUT = Path(__file__).resolve().parent / "results"


def one_run(data: Path, tmp: Path, k: int) -> dict:
    sys.path.insert(0, str(TESTS))
    from web_driver import Page, browser, lesion_coloured, start_server

    srv = start_server(data, tmp / f"out{k}")
    peak = [srv.rss_mb()]
    row = {"server_start_s": srv.started_s, "server_idle_mb": peak[0]}
    d = browser()
    try:
        t = time.perf_counter()
        page = Page(d, srv.url)
        row["page_ready_s"] = time.perf_counter() - t

        def watch(ok):
            def check() -> bool:
                peak.append(srv.rss_mb())
                return ok()
            return check

        def image_shown() -> bool:
            rgb, r = page.view_rgb()
            view = rgb[int(r["y"]):int(r["y"] + r["height"]), int(r["x"]):int(r["x"] + r["width"])]
            return view.mean() > 30

        t = time.perf_counter()
        page.click("open-sample")
        page.wait(watch(image_shown), 60, "the first image")
        row["first_image_s"] = time.perf_counter() - t
        row["segment_s"] = page.run("segment", watch(lambda: "(auto)" in page.text("lesion")
                                                     and lesion_coloured(page.view_rgb()[0]).sum() > 1000))
        row["classify_s"] = page.run("classify", watch(lambda: page.has("probability")))
        page.click("tool-paint")
        before = page.lesion_pixels()
        r = page.el("view").rect
        x, y = r["x"] + 0.75 * r["width"], r["y"] + 0.5 * r["height"]
        t = time.perf_counter()
        page.stroke([(x - 80, y), (x - 40, y), (x, y)])
        page.wait(watch(lambda: page.lesion_pixels() > before), 30, "the grown mask")
        row["paint_stroke_to_mask_s"] = time.perf_counter() - t
        assert not page.has("error"), page.text("error")
    finally:
        d.quit()
        srv.stop()
    row["peak_mb"] = max(peak)
    return row


def cli(tmp: Path, extra: list[str]) -> float:
    from BreastCADxLib import SAMPLE_IMAGE

    exe = str(Path(sys.executable).with_name("breastcadx"))
    out = tmp / f"cli{time.perf_counter_ns()}"
    t = time.perf_counter()
    subprocess.run([exe, "analyze", str(SAMPLE_IMAGE), "--out", str(out), "--device", "cpu", *extra], check=True,
                   capture_output=True, timeout=600)
    return time.perf_counter() - t


def main() -> None:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    report: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
                    "loadavg_1min": os.getloadavg()[0], "runs": [], "cli": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats):
            report["runs"].append(one_run(ROOT / "BreastCADx" / "Testing" / "Data", Path(tmp), k))
            print(report["runs"][-1], flush=True)
        for name, extra in (("breastcadx analyze sample.dcm", []),
                            ("breastcadx analyze sample.dcm --heatmap", ["--heatmap"])):
            report["cli"][name] = statistics.median(cli(Path(tmp), extra) for _ in range(args.repeats))
    report["loadavg_1min_end"] = os.getloadavg()[0]
    write_results(args.out, "serve", report, markdown(report))


LABELS = {"server_start_s": "server start (process launched -> listening)",
          "page_ready_s": "page ready (address opened -> buttons live)",
          "first_image_s": "first image (Sample clicked -> image on the page)",
          "segment_s": "Segment round trip (click -> lesion drawn)",
          "classify_s": "Classify round trip (click -> probability shown, with heatmap)",
          "paint_stroke_to_mask_s": "paint stroke -> grown mask on the page",
          "server_idle_mb": "server memory after start, MB", "peak_mb": "peak memory, server + workers, MB"}


def markdown(r: dict) -> str:
    runs = r["runs"]
    lines = [*header("The web page (`breastcadx serve`), as the browser sees it", r,
                     "Made by `python -m benchmarks.serve`: headless Debian Chromium driving the real server on "
                     "the bundled sample, `--device cpu`; median and range over the repeats."), "",
             "| step | median | min | max |", "|---|---|---|---|"]
    for key, label in LABELS.items():
        v = [run[key] for run in runs]
        fmt = "{:.0f}" if key.endswith("_mb") else "{:.2f}"
        lines.append(f"| {label} | {fmt.format(statistics.median(v))} | {fmt.format(min(v))} | "
                     f"{fmt.format(max(v))} |")
    page = statistics.median(run["segment_s"] + run["classify_s"] for run in runs)
    lines += ["", "Baseline in the same run, from the shell (one new process: imports, models, the case, its files):",
              "", "| command | seconds | page Segment + Classify / command |", "|---|---|---|"]
    for name, s in r["cli"].items():
        lines.append(f"| `{name}` | {s:.2f} | {page / s:.2f}x |")
    lines += ["", f"The page's Segment + Classify take {page:.1f} s in all: each runs in its own background worker "
              "process (as in Slicer: the viewer stays live and Cancel kills the process), which loads its models "
              "each time; the shell command loads them once.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
