"""Site-balanced sampling for the box member (a candidate of the generalisation issue), judged at each held-out site.

    PYTHONPATH=. python -m training.experiments.balanced_members --run runs/w/three-site-train \
        --manifest runs/three_sites.csv [--out runs/balanced_members] [--max-minutes 150]

Each rotation of a finished `breastcadx train --folds site` run (train on two sites, score the third) trains its
box member again on the same findings, as `train`'s members stage does (same epochs, seed, scanner augmentation,
ImageNet start), except that each epoch draws its images with replacement so that both training sites weigh the
same (train/members.fit, balance=; BUS-UCLM has about a third of the others' lesions). It is scored at the
held-out site through the product's scorer on the drawn outlines and on the run's automatic outlines, and fused in
place of the run's box member at the run's own weights. Judged like every candidate (benchmarks/outline_limits:
train's gate, per-site paired patient-bootstrap CI of the band's change). Resumable (checkpoints per epoch in
--out); nothing of the run is changed. Writes benchmarks/results/balanced_members.md / .json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.classifier_candidates import alone_table
from benchmarks.machine import header, stamp, write_results
from benchmarks.outline_limits import candidate_table, judge_candidates
from benchmarks.train_weights import run_rows

OUT = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def balanced_box(r: dict, work: Path, deadline: float) -> tuple[np.ndarray, np.ndarray]:
    """Out of fold, the site-balanced box member's P(malignant) on each finding's drawn outline and on its
    automatic outline (NaN where that outline is empty), every site scored by the fold that held it out."""
    from BreastCADxLib.analysis.registry import choose_device
    from BreastCADxLib.train import members as mem
    from BreastCADxLib.train.outlines import cached_outline, cached_passes, member_scores

    findings, splits, sites = r["findings"], r["splits"], r["sites"]
    dev = choose_device("cpu")
    images = mem.member_images(findings)
    drawn = np.zeros(len(findings))
    for k, (tr, te) in enumerate(splits):
        folder = work / f"member_box_fold{k + 1}"
        scored = folder / "scored.json"
        run = json.loads((r["run"] / ".work" / folder.name / "fit.json").read_text())["run"]  # the run's fold
        if run["images"] != [images[i].key for i in tr] or run["init"] is not None:
            raise SystemExit(f"{folder.name}: the run's fold was trained on other findings (or from a set)")
        if not scored.is_file():
            weights = mem.fit([images[i] for i in tr], folder, "box", epochs=run["epochs"], device=dev,
                              deadline=deadline, say=print, label=f"site-balanced fold {k + 1}/{len(splits)}",
                              seed=run["seed"], scanner_aug=run.get("scanner_aug", 0.0),
                              balance=[sites[i] for i in tr])
            p = mem.score("box", weights, [images[i] for i in te], dev)
            scored.write_text(json.dumps({images[i].key: float(q) for i, q in zip(te, p)}))
        got = json.loads(scored.read_text())
        drawn[te] = [got[images[i].key] for i in te]
    passes = cached_passes(r["run"] / ".work")
    outlines = {str(f.image): cached_outline(passes[str(f.image)], im.plane.shape) for f, im in zip(findings, images)}
    return drawn, member_scores(findings, outlines, splits, work, "cpu")


def main() -> None:
    from BreastCADxLib.train.members import fuse
    from BreastCADxLib.train.pipeline import summary

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `breastcadx train --folds site` folder")
    ap.add_argument("--manifest", type=Path, required=True, help="the manifest it was trained on")
    ap.add_argument("--out", type=Path, default=Path("runs/balanced_members"), help="the new members' folder")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop after the epoch past this (0: no limit)")
    ap.add_argument("--name", default="balanced_members")
    args = ap.parse_args()
    report = stamp()
    r = run_rows(args.run, args.manifest)
    r["run"] = args.run
    y, sites, groups, cv = r["y"], r["sites"], r["groups"], r["cv"]
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else float("inf")
    drawn_box, auto_box = balanced_box(r, args.out, deadline)
    auto_box = np.where(np.isnan(auto_box), 0.5, auto_box)  # an empty outline ranks as train ranks it
    dw, aw = cv["member_gate"]["weights"], cv["automatic_outlines"]["member_weights"]
    features, members = np.asarray(cv["oof"]["fusion"]), {v: np.asarray(cv["oof"][f"{v}_cnn"]) for v in dw}
    if not np.allclose(fuse(features, members, dw), r["drawn"]):
        raise SystemExit("the run's drawn-outline fusion does not recompute from its record")
    drawn = {"shipped": (r["drawn"], "the shipped drawn-outline bundle"),
             "site-balanced box": (fuse(features, {**members, "box": drawn_box}, dw),
                                   f"the box member trained site-balanced, at the run's weights {dw}")}
    auto = {"shipped": (r["automatic"], "the shipped automatic-outline bundle"),
            "site-balanced box": (fuse(r["both"], {"box": auto_box, "whole": r["whole"]}, aw),
                                  f"the box member trained site-balanced, at the run's weights {aw}")}
    each = {s: sites == s for s in sorted(set(sites))}
    alone = {name: {s: summary(y[m], p[m], groups[m]) for s, m in each.items()} for name, p in (
        ("shipped box, drawn outlines", np.asarray(cv["oof"]["box_cnn"])), ("site-balanced box, drawn outlines",
                                                                           drawn_box),
        ("shipped box, automatic outlines", r["box"]), ("site-balanced box, automatic outlines", auto_box))}
    report.update(run=str(args.run), findings=len(y), alone=alone, drawn=judge_candidates(drawn, y, sites, groups),
                  automatic=judge_candidates(auto, y, sites, groups))
    write_results(OUT, args.name, report, markdown(report, args))


def markdown(report: dict, args) -> str:
    lines = header("Site-balanced sampling for the box member, at each held-out site", report,
                   f"Made by `PYTHONPATH=. python -m training.experiments.balanced_members --run {args.run} "
                   f"--manifest {args.manifest}`: {report['findings']} findings of three sites, each site scored by "
                   "models trained on the other two (the run's out-of-fold record, its box member trained again "
                   "site-balanced); test splits unread.")
    lines += ["", __doc__.split("\n\n")[2].replace("\n", " "), "", "## The box member alone", ""]
    lines += alone_table(report["alone"])
    lines += ["", "## Drawn outlines (the set's fusion)", ""] + candidate_table(report["drawn"])
    lines += ["", "## Automatic outlines (the automatic-outline bundle with both members)", ""]
    return "\n".join(lines + candidate_table(report["automatic"])) + "\n"


if __name__ == "__main__":
    main()
