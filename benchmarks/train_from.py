"""`breastcadx train --from`: a hospital adjusts the shipped ultrasound set with about 100 of its own cases. Does it
beat the set as it is, and a set trained on those cases alone, on that hospital's other patients?

    python -m benchmarks.train_from [--busuclm ../data/busuclm] [--local 100] [--source runs/two-site]

The source is the shipped two-site set (BUSI + BUS-BRA L5: the full product design, its fusion with the box and
whole-image members; restored by training.restore_set when missing); the hospital is BUS-UCLM, which it never saw:
its non-test lesions split by patient into about --local cases and the rest (judged). `--from` adjusts the
source's fusion and fine-tunes its members with the local cases (its segmenter kept); "local only" trains the same
design from ImageNet on them. Every set is judged through the product's scoring (features + image members) with the
reference outline, and, for the sets with a segmenter, on the default path too: the source's segmenter outlines
each judged lesion (lesion expected) and the set classifies that outline with its bundle for automatic masks. Wall
time per stage and peak memory for both runs. Test splits are not read. Writes benchmarks/results/train_from.md/json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from BreastCADxLib.results.evaluation import auc_ci, specificity_at
from BreastCADxLib.train.pipeline import DESIGN, Finding, features, train
from training.data import add_data_args, cases, draw_patients
from training.restore_set import TWO_SITE, TWO_SITE_COMMIT

OUT = Path(__file__).resolve().parent / "results"
HOSPITAL = "busuclm"
NAMES = {"source": "the shipped two-site set as it is", "from_source": "`--from` it with the local cases",
         "local_only": "the local cases alone (same design, from ImageNet)",
         "source_automatic": "the shipped two-site set as it is, automatic outline",
         "from_source_automatic": "`--from` it, automatic outline (its bundle for automatic masks)"}
STAGES = ("manifest", "features", "cross-validation", "image members", "segmenter", "automatic outlines", "model set")


def write_manifest(path: Path, rows: list) -> Path:
    lines = ["case_id,image,label,patient,mask"]
    lines += [f"{c.site}_{c.case},{c.image.resolve()},{c.label},{c.site}_{c.group},{c.mask.resolve()}" for c in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def product_scores(folder: Path, findings: list[Finding], rad, deep, outlines: dict | None = None) -> np.ndarray:
    """P(malignant) as `analyze` gives it: the set's fusion with its image members, on the reference outline, or
    (outlines: image -> automatic outline) on the segmenter's with the set's bundle for automatic masks."""
    from BreastCADxLib.analysis.box_classifier import MemberScorer
    from BreastCADxLib.analysis.classifier import bundle_for, load_classifier
    from BreastCADxLib.image import Image
    from BreastCADxLib.train.members import member_images

    clf = load_classifier("lesion_cls_fusion", folder)
    if outlines is not None:
        clf = load_classifier(bundle_for(clf.card, "auto"), folder)
    members = {k: MemberScorer.from_registry(ref["model"], "cpu", folder)
               for k, ref in (("box", clf.box_member), ("whole", clf.whole_member)) if ref}
    probs = {k: [] for k in members}
    for f, im in zip(findings, member_images(findings)):  # on the working grid, as `analyze` scores them
        mask = im.mask if outlines is None else outlines[str(f.image)]
        for k, scorer in members.items():
            probs[k].append(scorer.probability(Image(array=im.plane[None]), mask[None]) if mask.any() else 0.5)
    return clf.fused(rad, deep, np.array(probs["box"]) if "box" in probs else None,
                     np.array(probs["whole"]) if "whole" in probs else None)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--local", type=int, default=100, help="the hospital's cases the set is adjusted with")
    ap.add_argument("--source", type=Path, default=TWO_SITE, help="the shipped two-site set (restored if missing)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, help="keep the sets and feature caches here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not (args.source / "modelset.json").is_file():
        subprocess.run([sys.executable, "-m", "training.restore_set", "--commit", TWO_SITE_COMMIT, "--out",
                        str(args.source)], check=True)
    report = {**stamp(), "seed": args.seed, "source": str(args.source)}
    local, judged = draw_patients(cases(args, [HOSPITAL], ("train", "val"), lesions_only=True), args.local,
                                  np.random.default_rng(args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        t = args.work or Path(tmp)
        t.mkdir(parents=True, exist_ok=True)
        manifest = write_manifest(t / "local.csv", local)
        runs = {}
        for name, start in (("from_source", str(args.source)), ("local_only", None)):
            t0 = time.perf_counter()
            cv = train(manifest, "US", t / name, device="cpu", start_from=start, segmenter_epochs=0)
            runs[name] = {"seconds": round(time.perf_counter() - t0, 1), "stage_seconds": cv["stage_seconds"],
                          "peak_rss_mb": cv["peak_rss_mb"], "cv": {k: {kk: v[kk] for kk in ("auc", "ci95")}
                                                                   for k, v in cv["models"].items()}}
        findings = [Finding(f"{c.site}_{c.case}", c.image, int(c.malignant), f"{c.site}_{c.group}", c.mask)
                    for c in judged]
        rows = features(findings, t / "judged", "cpu", float("inf"), lambda m: None, DESIGN["US"]["descriptors"])
        names = rows[findings[0].case_id]["names"]
        rad = {n: np.array([rows[f.case_id]["rad"][names.index(n)] for f in findings]) for n in names}
        deep = np.array([rows[f.case_id]["deep"] for f in findings], float)
        y = np.array([f.label for f in findings])
        groups = np.array([f.patient for f in findings])
        judged_scores = {}
        from BreastCADxLib.analysis.classifier import load_classifier

        for name, folder in (("source", args.source), ("from_source", t / "from_source"),
                             ("local_only", t / "local_only")):
            order = load_classifier("lesion_cls_fusion", folder).radiomics_names  # each set's own order
            p = product_scores(folder, findings, np.column_stack([rad[n] for n in order]), deep)
            judged_scores[name] = {**auc_ci(y, p, groups), "specificity_at_0.96": specificity_at(y, p, 0.96)}
        # the default path: the source's segmenter (kept by --from) outlines each judged lesion, lesion expected
        from BreastCADxLib.analysis.registry import load_card
        from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL
        from BreastCADxLib.train.outlines import outline_features, outline_passes

        say = lambda m: None  # noqa: E731
        outlines = outline_passes(findings, {"carried": load_card(DEFAULT_MODEL, args.source)}, None, t / "judged",
                                  "cpu", float("inf"), say)
        auto = outline_features(findings, outlines, t / "judged", "cpu", DESIGN["US"]["descriptors"], float("inf"),
                                say)
        ok = np.array([auto[f.case_id] is not None for f in findings])
        dice = np.array([auto[f.case_id]["dice"] if auto[f.case_id] else 0.0 for f in findings])
        report["automatic_outlines"] = {"dice_mean": float(dice.mean()), "unclassifiable": int((~ok).sum())}
        anames = auto[findings[int(np.argmax(ok))].case_id]["names"]
        arad = {n: np.array([auto[f.case_id]["rad"][anames.index(n)] if auto[f.case_id] else 0.0
                             for f in findings]) for n in anames}
        adeep = np.array([auto[f.case_id]["deep"] if auto[f.case_id] else np.zeros(deep.shape[1])
                          for f in findings], float)
        for name, folder in (("source", args.source), ("from_source", t / "from_source")):
            order = load_classifier("lesion_cls_fusion", folder).radiomics_names
            p = np.where(ok, product_scores(folder, findings, np.column_stack([arad[n] for n in order]), adeep,
                                            outlines), 0.5)  # an outline that cannot be classified: undecided
            judged_scores[f"{name}_automatic"] = {**auc_ci(y, p, groups),
                                                  "specificity_at_0.96": specificity_at(y, p, 0.96)}
    report.update(runs=runs, judged=judged_scores, local={"findings": len(local),
                                                          "patients": len({c.group for c in local}),
                                                          "malignant": sum(c.malignant for c in local)},
                  judged_set={"findings": len(judged), "patients": len({c.group for c in judged}),
                              "malignant": int(sum(c.malignant for c in judged))},
                  loadavg_1min_end=os.getloadavg()[0])
    head = header("breastcadx train --from: a new hospital adjusts the shipped set with its own cases", report,
                  f"Made by `python -m benchmarks.train_from --local {args.local}`; source: the shipped two-site set "
                  f"(BUSI + BUS-BRA L5, commit {TWO_SITE_COMMIT}: fusion of pyradiomics + lexicon descriptors + deep "
                  f"features with box and whole-image CNN members); hospital {HOSPITAL}, never seen by it: "
                  f"{report['local']['findings']} lesions of {report['local']['patients']} patients "
                  f"({report['local']['malignant']} malignant) adjust it, {report['judged_set']['findings']} lesions "
                  f"of {report['judged_set']['patients']} other patients ({report['judged_set']['malignant']} "
                  "malignant) judge it, scored as `analyze` scores them with the reference outline (fusion + "
                  "members). 95 % CIs by patient bootstrap.")
    a = report["automatic_outlines"]
    lines = ["", "On the hospital's other patients (reference outline unless said; automatic outlines by the source's "
             f"segmenter, lesion expected: mean Dice {a['dice_mean']:.2f}, {a['unclassifiable']} unclassifiable, "
             "ranked 0.5):", "", "| set | AUC [95 % CI] | specificity at sensitivity 0.96 |", "|---|---|---|"]
    for k, r in judged_scores.items():
        lines.append(f"| {NAMES[k]} | {r['auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                     f"{r['specificity_at_0.96']:.2f} |")
    lines += ["", "Cross-validated on the local cases (5 folds by patient, `breastcadx train`'s own report):", "",
              "| run | " + " | ".join(runs["from_source"]["cv"]) + " |", "|---" * (1 + len(runs["from_source"]["cv"]))
              + "|"]
    for k, r in runs.items():
        lines.append(f"| {NAMES[k]} | " + " | ".join(f"{r['cv'][m]['auc']:.3f}" if m in r["cv"] else "" for m in
                                                     runs["from_source"]["cv"]) + " |")
    lines += ["", "Wall time per stage on this machine (s) and peak resident memory:", "",
              "| run | " + " | ".join(STAGES) + " | total | peak memory |", "|---" * (len(STAGES) + 3) + "|"]
    for k, r in runs.items():
        s = r["stage_seconds"]
        lines.append(f"| {NAMES[k]} | " + " | ".join(f"{s.get(st, 0):.1f}" for st in STAGES)
                     + f" | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} MB |")
    write_results(args.out, "train_from", report, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
