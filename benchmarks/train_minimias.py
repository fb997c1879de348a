"""`breastcadx train --modality MG` on mini-MIAS: the second modality's patient-level cross-validation, the fusion
against default pyradiomics + logistic regression on the same folds, and the set's own segmenter judged as a
finding detector on patient folds (sensitivity at stated false findings per image).

    python -m benchmarks.train_minimias [--data ../data/minimias] [--set-dir runs/minimias_set]
        [--segmenter-epochs N]

Writes benchmarks/results/train_minimias.md/json. The set goes to --set-dir (a rerun after a kill goes on from
its checkpoints) or to a temporary folder: it is a demonstration on 1990s film, not shipped.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.machine import header, machine, write_results
from benchmarks.train_run import network_seconds
from BreastCADxLib.train.pipeline import train

OUT = Path(__file__).resolve().parent / "results"


def detection_by_class(folder: Path, manifest: Path, detection: dict | None) -> list[str]:
    """The segmenter's out-of-fold judgement per kind of finding (mini-MIAS's abnormality classes)."""
    import csv

    if not detection:
        return []
    judged = sorted((folder / ".work").glob("segmenter_fold*/judged.json"))
    rows = [r for f in judged for r in json.loads(f.read_text())]
    kinds: dict[str, set] = {}
    with open(manifest, newline="") as f:
        for r in csv.DictReader(f):
            if (r.get("radius") or "").strip():
                kinds.setdefault(str(manifest.parent / r["image"]), set()).add(r["abnormality"])
    t = detection["chosen"]["threshold"]
    out = ["", "Out of fold, per kind of finding (an image counts under each kind it holds):", "",
           "| kind | images | localised when a finding is expected | found at the set's threshold |",
           "|---|---|---|---|"]
    for kind in sorted({k for v in kinds.values() for k in v}):
        sub = [r for r in rows if kind in kinds.get(r["image"], ())]
        if sub:
            out.append(f"| {kind} | {len(sub)} | {sum(r['hit'] for r in sub)} | "
                       f"{sum(r['hit'] and r['score'] >= t for r in sub)} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../data/minimias"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--set-dir", type=Path, help="where the set is made and kept (default: a temporary folder)")
    ap.add_argument("--segmenter-epochs", type=int, help="train's --segmenter-epochs (default: train's own)")
    args = ap.parse_args()
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "loadavg_1min": os.getloadavg()[0]}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.set_dir or Path(tmp) / "minimias-demo"
        cv = train(args.data / "manifest.csv", "MG", folder, device="cpu", segmenter_epochs=args.segmenter_epochs)
        card = (folder / "card.md").read_text()
        by_class = detection_by_class(folder, args.data / "manifest.csv", cv.get("detection"))
        networks = network_seconds(folder / ".work")
    report.update(seconds=time.perf_counter() - t0, loadavg_1min_end=os.getloadavg()[0],
                  models={k: {kk: v[kk] for kk in ("auc", "ci95", "n", "malignant", "specificity_at_0.96")}
                          for k, v in cv["models"].items()}, oof=cv["oof"], stage_seconds=cv["stage_seconds"],
                  peak_rss_mb=cv["peak_rss_mb"], networks=networks)
    head = header("breastcadx train on mini-MIAS (MG): cross-validation by patient", report,
                  "Made by `python -m benchmarks.train_minimias` (the whole `breastcadx train` command: manifest, "
                  "features, 5-fold CV by patient of the classifier, its image members and the segmenter, the final "
                  "members and segmenter when kept, the "
                  f"set written and reloaded; {report['seconds'] / 60:.0f} min of this run).")
    body = card.split("\n", 2)[2]  # the set's own card, without its title
    timing = ["", "| stage | wall time (s) |", "|---|---|", *(f"| {k} | {v:.1f} |" for k, v in
                                                          report["stage_seconds"].items()),
              f"| (peak resident memory of the process) | {report['peak_rss_mb']:.0f} MB |", ""]
    clocks = []  # every network's own clock, over all its starts
    for kind in ("segmenter", "member_box", "member_whole"):
        if fits := [v for k, v in networks.items() if k.startswith(f"{kind}_")]:
            starts, secs = sum(f["starts"] for f in fits), sum(f["seconds"] for f in fits)
            clocks.append(f"| {kind.replace('_', ' ')} training: {len(fits)} runs, {starts} starts, summed | "
                          f"{secs:.0f} |")
    if clocks:
        timing[-1:-1] = clocks
        timing += ["Stage times are this run's; a network it found finished in --set-dir (trained by an earlier, "
                   "time-boxed start) costs it nothing there: the summed rows are each network's own clock over "
                   "every start.", ""]
    lines = ["", body, *by_class, *timing, "The circles are approximate, generous locations: outlines are not scored "
             "against them (no Dice); a finding counts as found when the outline's centre falls inside its circle."]
    write_results(args.out, "train_minimias", report, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
