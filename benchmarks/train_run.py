"""A finished `breastcadx train --folds site` run at each held-out site, next to the shipped design's own rotations:
reference outlines, the default path's finding of the lesion, the automatic outlines with and without the image
members, every gate's decision, and the time each network took.

    python -m benchmarks.train_run --run runs/three-site-train [--name train_three_sites]

Reads the run's `.work/cv.json` (written when the set is finished), each network's `fit.json` (seconds summed over
every start of a resumed run) and `benchmarks/results/rotation_fusion.json` (the shipped recipe's members and
segmenters, each site scored by models trained on the other two; non-test rows). Writes benchmarks/results/NAME.md
/ .json. Test splits are not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.machine import header, stamp, write_results
from BreastCADxLib.train.journal import read_runs, runs_text

OUT = Path(__file__).resolve().parent / "results"
SHIPPED = "w0.75:ww0.2"  # the shipped fusion's weights (box 0.75, whole image 0.2) in rotation_fusion.json


def cells(r: dict | None) -> str:
    """pipeline.metric_cells of a summary() record ('-' cells when there is none)."""
    from BreastCADxLib.train.pipeline import metric_cells

    return metric_cells(r) if r else "- | - | -"


def shipped_cells(r: dict | None) -> str:
    """A shipped-recipe rotation record (no CI, no band) in the same columns."""
    return f"{r['auc']:.3f} | {r['specificity_at_0.96']:.2f} / {r['specificity_at_0.98']:.2f}" if r else "- | -"


def shipped_rows(path: Path) -> dict:
    """The shipped recipe's held-out rotation per site: {site: {mask: record}} (rotation_fusion.json's keys)."""
    if not path.is_file():
        return {}
    out = {}
    for rot in json.loads(path.read_text())["rotations"]:
        out[rot["held_out"]] = {name: {"auc": rot[key]["auc"], "specificity_at_0.96": rot[key]["spec96"],
                                       "specificity_at_0.98": rot[key]["spec98"]}
                                for name, key in ((m, f"{m}:{SHIPPED}") for m in ("expect", "reference"))
                                if key in rot}
    return out


def network_seconds(work: Path) -> dict:
    """Each trained network's seconds over all starts, and how many starts, from its fit.json."""
    out = {}
    for fit in sorted(work.glob("*/fit.json")):
        rec = json.loads(fit.read_text())
        out[fit.parent.name] = {"seconds": rec.get("seconds"), "starts": rec.get("starts"), "epochs": rec.get("epochs")}
    return out


def gate_line(name: str, kept: bool | None, gate: dict | None) -> str:
    if gate is None:
        return f"- {name}: not judged"
    c, b = gate["candidate"], gate["base"]
    sites = "; ".join(f"{s} {v['base']:.2f} -> {v['candidate']:.2f}" for s, v in gate.get("per_site_band", {}).items())
    return (f"- {name}: {'kept' if kept else 'left out'} (worst site AUC {b['auc']:.3f} -> {c['auc']:.3f}, band "
            f"{b['specificity_0.90_1.00']:.2f} -> {c['specificity_0.90_1.00']:.2f}" + (f"; band per site {sites}"
                                                                                      if sites else "") + ")")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the set folder of a finished `train --folds site` run")
    ap.add_argument("--rotations", type=Path, default=OUT / "rotation_fusion.json")
    ap.add_argument("--name", default="train_three_sites")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    cv_path = args.run / ".work" / "cv.json"
    if not (args.run / "modelset.json").is_file() or not cv_path.is_file():
        raise SystemExit(f"{args.run}: not a finished `breastcadx train` run (no modelset.json or .work/cv.json)")
    cv = json.loads(cv_path.read_text())
    if cv.get("folds") != "site":
        raise SystemExit(f"{args.run}: made with --folds {cv.get('folds')}; this report needs --folds site")
    shipped = shipped_rows(args.rotations)
    auto = cv.get("automatic_outlines") or {}
    det = cv.get("detection") or {}
    report = {**stamp(), "run": str(args.run), "modelset": json.loads((args.run / "modelset.json").read_text()),
              "stage_seconds_last_start": cv.get("stage_seconds"), "peak_rss_mb": cv.get("peak_rss_mb"),
              "networks": network_seconds(args.run / ".work"), "by_site": cv.get("by_site"),
              "member_gate": cv.get("member_gate"), "detection_by_site": det.get("by_site"),
              "automatic_outlines": auto, "shipped_rotations": shipped, "runs": read_runs(args.run / ".work")}
    set_id = report["modelset"].get("id", args.run.name)
    md = header(f"`breastcadx train --folds site` at each held-out site: {args.run.name}", report,
                f"Made by `python -m benchmarks.train_run --run {args.run} --name {args.name}` from the finished "
                f"run's out-of-fold records (each site scored by models trained on the other two; non-test rows). "
                f"Set `{set_id}`. Cells: AUC [95 % CI, patient bootstrap] | specificity at sensitivity 0.96 / "
                "0.98 | mean specificity over sensitivity 0.90-1.00 (band).")
    md += ["", "## Reference outlines (the features' fusion, stage 3)", "",
           "| held out | fusion: AUC | 0.96 / 0.98 | band | pyradiomics + LR: AUC | 0.96 / 0.98 | band | "
           "shipped recipe (rotation_fusion): AUC | 0.96 / 0.98 |", "|---" * 9 + "|"]
    for site, r in (cv.get("by_site") or {}).items():
        s = shipped.get(site, {}).get("reference")
        md.append(f"| {site} | {cells(r.get('fusion'))} | {cells(r.get('pyradiomics_lr'))} | {shipped_cells(s)} |")
    mg = cv.get("member_gate")
    md += ["", gate_line("image members on reference outlines (stage 4)", mg and mg.get("kept"), mg)]
    md += ["", "## Finding the lesion: the default path at each held-out site (segmenter folds, pooled threshold)",
           "", "| held out | lesion images | \"no lesion found\" | outline on the lesion when expected | lesion-free "
           "images | false lesion | presence AUC |", "|---|---|---|---|---|---|---|"]
    for site, r in (det.get("by_site") or {}).items():
        ch = r["chosen"]
        nf = ch.get("normal_images_with_a_finding")
        nf = "-" if nf is None else f"{nf:.1%}"
        pa = "-" if not r.get("presence_auc") else f"{r['presence_auc']['auc']:.3f}"
        md.append(f"| {site} | {r['finding_images']} | {ch['finding_images_said_normal']:.1%} | "
                  f"{r['localised_when_expected']:.1%} | {r['normal_images']} | "
                  f"{nf} | {pa} |")
    if det.get("chosen"):
        md.append(f"\nPooled threshold {det['chosen']['threshold']:.4f} ({det.get('rule', '')}).")
    md += ["", "## Automatic outlines, lesion expected (stage 6)", ""]
    if not auto:
        md.append("None: the run kept no segmenter.")
    md += [
           "| held out | mean Dice | fitted on reference: AUC | 0.96 / 0.98 | band | fitted on both: AUC | 0.96 / "
           "0.98 | band | chosen + members: AUC | 0.96 / 0.98 | band | shipped recipe: AUC | 0.96 / 0.98 |",
           "|---" * 13 + "|"] if auto else []
    for site, r in (auto.get("by_site") or {}).items():
        withm = next((v for k, v in r.items() if k.endswith("_with_members")), None)
        s = shipped.get(site, {}).get("expect")
        md.append(f"| {site} | {r['dice_mean']:.2f} | {cells(r.get('reference_fit'))} | {cells(r.get('both_fit'))} | "
                  f"{cells(withm)} | {shipped_cells(s)} |")
    if auto:
        md += ["", gate_line("bundle fitted on reference and automatic outlines", auto.get("kept"), auto.get("gate")),
               gate_line("image members on automatic outlines", auto.get("members_kept"), auto.get("members_gate"))]
    last = json.dumps(report["stage_seconds_last_start"])
    md += ["", "## Time", "", f"Peak resident memory of the last start: {report['peak_rss_mb']} MB. Wall time per "
           f"stage of the last start (a resumed stage shows only what was left): {last}.",
           "", "| network | epochs | seconds over all starts | starts |", "|---|---|---|---|"]
    for name, r in report["networks"].items():
        md.append(f"| {name} | {r['epochs']} | {r['seconds']:.0f} | {r['starts']} |" if r["seconds"] is not None
                  else f"| {name} | {r['epochs']} | - | {r['starts']} |")
    if report["runs"]:  # none before the journal existed
        md += ["", runs_text(report["runs"])]
    write_results(args.out, args.name, report, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
