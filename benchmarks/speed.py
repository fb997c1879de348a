"""Where the time of one case goes, on this machine: every stage, both inference engines, the command line.

    python -m benchmarks.speed            # about 5 min on 2 cores; writes benchmarks/results/speed.{md,json}

Cases: the bundled DICOM sample (557x457, with its mask), a BUSI test image from the committed test data
(555x465), and that image upscaled to 2000x2000 (a large ultrasound frame). Each stage is the median of
`--repeats` warm runs in this process; the command-line rows are wall times from the shell (new process, models
loaded from disk); peak memory is the child process's maximum resident set. The PyTorch engine is measured in
the same run as the ONNX Runtime engine (`BREASTCADX_BACKEND=torch`), so their ratio is the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from benchmarks.machine import header, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "BreastCADx"
SAMPLE = MODULE / "Resources" / "SampleData" / "BreastCADx_US_sample.dcm"
BUSI = MODULE / "Testing" / "Data" / "busi" / "malignant_001.png"
OUT = ROOT / "benchmarks" / "results"


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def stages(image, repeats: int) -> dict[str, float]:
    """Median seconds of every stage of `analyze` and of the case writer, in this process (models loaded)."""
    from BreastCADxLib.analysis.deep_features import get_deep_features
    from BreastCADxLib.analysis.guard import check_input
    from BreastCADxLib.analysis.pipeline import analyze, lesion_descriptors
    from BreastCADxLib.analysis.radiomics_features import extract
    from BreastCADxLib.analysis.segmentation import get_segmenter
    from BreastCADxLib.results.case_files import case_overlay, write_case

    seg = get_segmenter()
    plane = image.array[0]
    out: dict[str, float] = {}
    out["input guard"] = median_time(lambda: check_input(image), repeats)
    prob = seg.probability(plane)
    shipped = seg.flip_tta
    seg.flip_tta = False
    out["segmenter pass"] = median_time(lambda: seg.probability(plane), repeats)
    seg.flip_tta = True
    out["segmenter pass with flip TTA (not shipped)"] = median_time(lambda: seg.probability(plane), repeats)
    seg.flip_tta = shipped
    out["refinement pass"] = median_time(lambda: seg.refine(plane, prob), repeats)
    out["post-processing"] = median_time(lambda: seg.mask_from(prob), repeats)
    out["segment (all of the above)"] = median_time(lambda: seg.segment(image), repeats)
    mask = seg.segment(image, expect_lesion=True).mask
    out["radiomics"] = median_time(lambda: extract(image, mask), repeats)
    out["descriptors"] = median_time(lambda: lesion_descriptors(image, mask), repeats)
    deep = get_deep_features("auto", "mask")
    out["deep features"] = median_time(lambda: deep.features(image, mask), repeats)
    from BreastCADxLib.analysis.box_classifier import get_member_scorer
    from BreastCADxLib.analysis.classifier import classifier_for
    from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET

    automatic = classifier_for(DEFAULT_MODEL_SET, "auto")  # the members `analyze` below runs (no mask given)
    for row, member in (("image member (box CNN)", automatic.box_member),
                        ("whole-image member (CNN)", automatic.whole_member)):
        if member is not None:
            scorer = get_member_scorer(member["model"])
            out[row] = median_time(lambda s=scorer: s.probability(image, mask), repeats)
    res = analyze(image, heatmap=True, expect_lesion=True)
    out["Grad-CAM"] = median_time(
        lambda: deep.gradcam(image, mask, *_explain()), repeats)
    out["analyze, no heatmap"] = median_time(lambda: analyze(image, heatmap=False, expect_lesion=True), repeats)
    out["analyze, with heatmap"] = median_time(lambda: analyze(image, heatmap=True, expect_lesion=True), repeats)
    out["overlay render"] = median_time(lambda: case_overlay(res, image), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        out["case files (mask, heatmap, overlay, result.json)"] = median_time(
            lambda: write_case(res, image, Path(tmp) / "case"), repeats)
        if image.source_files:
            out["case files + DICOM SEG/SR/SC"] = median_time(
                lambda: write_case(res, image, Path(tmp) / "case", Path(tmp) / "dicom" / str(time.time_ns())),
                repeats)
    return out


def _explain() -> tuple[np.ndarray, float]:
    from BreastCADxLib.analysis.classifier import get_classifier

    c = get_classifier()
    return c.explain_weight, c.explain_bias


def child(args: list[str], env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds and peak resident MB of a new process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if r.returncode != 0:
        raise RuntimeError(f"{args}: {r.stderr[-500:]}")
    return wall, (peak if peak > before else float("nan")) / 1024, r


PEAK = ("import resource, sys\nfrom BreastCADxLib.cli.main import main\nrc = main(sys.argv[1:])\n"
        "print('PEAK_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\nsys.exit(rc)")


def cli_rows(big: Path, repeats: int) -> dict[str, dict]:
    exe = str(Path(sys.executable).with_name("breastcadx"))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in (("breastcadx --help", [exe, "--help"]), ("breastcadx info sample.dcm", [exe, "info",
                                                                                                   str(SAMPLE)])):
            rows[name] = {"seconds": statistics.median(child(args)[0] for _ in range(repeats))}
        for name, image, extra in (("analyze sample.dcm", SAMPLE, []),
                                   ("analyze sample.dcm --heatmap", SAMPLE, ["--heatmap"]),
                                   ("analyze 2000x2000 PNG", big, []),
                                   ("analyze 2000x2000 PNG --heatmap", big, ["--heatmap"])):
            walls, peaks = [], []
            for k in range(repeats):
                out = Path(tmp) / f"{len(rows)}_{k}"
                wall, _, r = child([sys.executable, "-c", PEAK, "analyze", str(image), "--out", str(out),
                                    "--expect-lesion", *extra])
                walls.append(wall)
                peaks.append(float(r.stdout.split("PEAK_MB")[-1]))
            rows[f"breastcadx {name}"] = {"seconds": statistics.median(walls), "peak_mb": max(peaks)}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--stages-of", help=argparse.SUPPRESS)  # JSON {name: path}: print the stage table (child)
    args = ap.parse_args()
    from BreastCADxLib.io import load_image

    if args.stages_of:
        table = {n: stages(load_image(Path(p)), args.repeats) for n, p in json.loads(args.stages_of).items()}
        print("JSON", json.dumps(table))
        return

    load1 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big_2000.png"
        PILImage.open(BUSI).convert("L").resize((2000, 2000), PILImage.BICUBIC).save(big)
        cases = {"sample DICOM 557x457": SAMPLE, "BUSI 555x465 (PNG)": BUSI, "2000x2000 (PNG)": big}
        report: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "loadavg_1min": load1,
                        "engines": {}, "load_image": {}}
        for name, path in cases.items():
            report["load_image"][name] = median_time(lambda p=path: load_image(p), args.repeats)
        paths = json.dumps({k: str(v) for k, v in cases.items()})
        for engine in ("onnxruntime", "torch"):  # each in its own process: engines are chosen at model load
            env = {"BREASTCADX_BACKEND": "torch" if engine == "torch" else "auto", "PYTHONPATH": str(ROOT)}
            _, _, r = child([sys.executable, "-m", "benchmarks.speed", "--stages-of", paths,
                             "--repeats", str(args.repeats)], env)
            report["engines"][engine] = json.loads(r.stdout.split("JSON", 1)[1])
            print(engine, "done", flush=True)
        report["cli"] = cli_rows(big, max(3, args.repeats // 2))
    report["loadavg_1min_end"] = os.getloadavg()[0]
    write_results(args.out, "speed", report, markdown(report))


def markdown(r: dict) -> str:
    ort, pt = r["engines"]["onnxruntime"], r["engines"]["torch"]
    cases = list(ort)
    lines = [*header("Speed of one case, stage by stage", r, "Made by `python -m benchmarks.speed`. Seconds, median of "
                     "warm runs with the models loaded; onnxruntime is the default CPU engine, torch the baseline "
                     "measured in the same run (`BREASTCADX_BACKEND=torch`)."), "",
             "| stage | " + " | ".join(f"{c}: onnxruntime | torch | speed-up" for c in cases) + " |",
             "|---|" + "---|---|---|" * len(cases)]
    for stage in ort[cases[0]]:
        cells = []
        for c in cases:
            a, b = ort[c].get(stage), pt[c].get(stage)
            cells += ["" if a is None else f"{a:.3f}", "" if b is None else f"{b:.3f}",
                      "" if a is None or b is None else f"{b / a:.1f}x"]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", "| reading the file | " + " | ".join(f"{c}: {s:.3f} s" for c, s in r["load_image"].items()) + " |",
              "", "## From the shell (new process each time: imports, model loading, the case, its files)", "",
              "| command | wall seconds | peak memory MB |", "|---|---|---|"]
    for name, row in r["cli"].items():
        peak = f"{row['peak_mb']:.0f}" if "peak_mb" in row else ""
        lines.append(f"| `{name}` | {row['seconds']:.2f} | {peak} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
