"""Soak: a 10,000-case batch on Dask, killed with SIGKILL midway and resumed, checked row by row.

    python -m benchmarks.soak --busi ../shared/data/busi --cases 10000 --workers 2

The BUSI test images (156) under new case ids (automatic segmentation, no heatmaps) make the manifest. The batch
runs as `breastcadx batch --workers N` in its own session; when about half the rows are written the whole
session (client and workers) is killed with SIGKILL, then the same command resumes it. The reference is one
uninterrupted run over the 156 distinct images with the same workers: every soak row must equal the row of its image
(all columns but case_id, seconds and the case-id prefix of the paths). Reports lost, duplicated and differing
rows and the wall times; writes benchmarks/results/soak.{md,json}. Not a unit test (about an hour on 2 cores);
`test_batch_dask.py` runs the same check on 30 cases.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.machine import machine
from training.data import site_cases

OUT = Path(__file__).resolve().parent / "results"
COMPARED = ("status", "error", "lesion_found", "malignancy_probability", "predicted_label", "birads_suggestion",
            "mask_path", "heatmap_path", "flags")


def rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def batch(manifest: Path, out: Path, workers: int) -> list[str]:
    cmd = [sys.executable, "-m", "BreastCADxLib.cli.main", "batch", str(manifest), "--out", str(out)]
    return cmd + (["--workers", str(workers)] if workers else [])


def comparable(row: dict) -> dict:
    prefix = row["case_id"] + "/"
    return {k: row[k].removeprefix(prefix) for k in COMPARED}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busi", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kill-at", type=float, default=0.5, help="fraction of rows written before the SIGKILL")
    ap.add_argument("--work", type=Path, default=Path("runs/soak"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    images = [c.image.resolve() for c in site_cases("busi", args.busi, ("test",))]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "distinct.csv").write_text("case_id,image\n" + "".join(f"img{i:03d},{p}\n" for i, p in enumerate(images)))
    source = {f"soak{i:05d}": i % len(images) for i in range(args.cases)}
    (work / "soak.csv").write_text("case_id,image\n" + "".join(f"{c},{images[i]}\n" for c, i in source.items()))
    report: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), "cases": args.cases,
                    "distinct_images": len(images), "workers": args.workers}

    t = time.perf_counter()
    # the same configuration (worker count = threads per process: the last digit of a probability may depend on it)
    r = subprocess.run(batch(work / "distinct.csv", work / "reference", args.workers), capture_output=True, text=True)
    report["reference_seconds"] = time.perf_counter() - t
    if r.returncode not in (0, 1):
        raise SystemExit(r.stderr[-800:])
    ref = {int(x["case_id"][3:]): comparable(x) for x in rows(work / "reference" / "results.csv")}

    out = work / "out"
    t = time.perf_counter()
    proc = subprocess.Popen(batch(work / "soak.csv", out, args.workers), stdout=subprocess.DEVNULL,
                            stderr=open(work / "first.log", "w"), start_new_session=True)
    target = int(args.cases * args.kill_at)
    while proc.poll() is None and len(rows(out / "results.csv")) < target:
        time.sleep(5)
    killed_after = time.perf_counter() - t
    rows_at_kill = len(rows(out / "results.csv"))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_folders = sum(1 for c in source if (out / c / "result.json").exists())
    t2 = time.perf_counter()
    r = subprocess.run(batch(work / "soak.csv", out, args.workers), capture_output=True, text=True)
    resumed = time.perf_counter() - t2
    if r.returncode not in (0, 1):
        raise SystemExit(r.stderr[-800:])
    final = rows(out / "results.csv")
    ids = [x["case_id"] for x in final]
    lost = sorted(set(source) - set(ids))
    duplicated = len(ids) - len(set(ids))
    differing = [x["case_id"] for x in final if x["case_id"] in source and comparable(x) != ref[source[x["case_id"]]]]
    attempts = []
    for c in source:
        try:
            attempts.append(json.loads((out / c / "result.json").read_text()).get("batch", {}).get("attempts", 1))
        except (OSError, ValueError):
            pass
    report.update({
        "killed_after_seconds": killed_after, "rows_in_results_csv_at_kill": rows_at_kill,
        "case_folders_finished_at_kill": finished_folders, "resume_seconds": resumed,
        "total_seconds": killed_after + resumed, "rows": len(final), "lost": len(lost), "duplicated": duplicated,
        "differing": len(differing), "examples": {"lost": lost[:5], "differing": differing[:5]},
        "errors": sum(x["status"] == "error" for x in final), "cases_retried": sum(a > 1 for a in attempts),
        "cases_per_s": args.cases / (killed_after + resumed)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=1) + "\n")
    m = report["machine"]
    md = [f"# Soak: {args.cases:,} cases on Dask ({args.workers} workers), SIGKILL midway, resumed", "",
          f"Date: {report['date']}  ", f"Machine: {m['cpu']}, {m['cores']} cores, no GPU  ",
          f"Made by `python -m benchmarks.soak --cases {args.cases} --workers {args.workers}`: the {len(images)} "
          "BUSI test images under new case ids, automatic segmentation, no heatmaps. Reference: one uninterrupted "
          "run over the distinct images with the same workers; every row is compared with its image's reference "
          "row.", "",
          "| | |", "|---|---|",
          f"| first run, killed (SIGKILL to client and workers) after | {killed_after / 60:.1f} min, "
          f"{rows_at_kill:,} rows in results.csv, {finished_folders:,} case folders finished |",
          f"| resume to the end | {resumed / 60:.1f} min |",
          f"| wall time in all | {(killed_after + resumed) / 60:.1f} min ({report['cases_per_s']:.2f} cases/s) |",
          f"| rows | {len(final):,} |", f"| **lost** | **{len(lost)}** |", f"| **duplicated** | **{duplicated}** |",
          f"| **differing from the reference** | **{len(differing)}** |",
          f"| error rows | {report['errors']} |", f"| cases retried after a lost worker | {report['cases_retried']} |"]
    (args.out / "soak.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
