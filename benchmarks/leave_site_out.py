"""Final report: the shipped set and a set that never saw the site, on the held-out test patients of the three
sites, and the reader comparison on BUS-BRA L5.

    python -m benchmarks.leave_site_out

Reads (made beforehand, see README "Models and how they were made"; runs/bg_final_report.sh does all of it):
- runs/site_pass/<set id>__<site>__test.npz: segmenter passes of each set over each site's test split;
- runs/site_features/<site>__<kind>[__<set id>]__test.npz: features of the test lesions under each mask kind, with
  the image members' columns (training.classification.box_probs).
Sets: the shipped three-site set; the busi-only set (Testing/Data/model_sets: it never saw BUS-BRA or BUS-UCLM,
so at those sites its rows are cross-site); the two-site set (restored by training.restore_set: it never saw
BUS-UCLM, scored there only). Every row: AUC with a 95 % CI, specificity at sensitivity 0.96 and
0.98 (the biopsy operating point), cancers given < 5 %. Reader: the ultrasonographer's BI-RADS on the same L5 test
images; each set's specificity at the reader's own sensitivity (BI-RADS >= 4), with its CI.
CIs: 95 % percentile bootstrap over patients (BUS-BRA, BUS-UCLM) or duplicate groups (BUSI), 2000 resamples.
Writes benchmarks/results/leave_site_out.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.machine import machine, set_folder
from BreastCADxLib.analysis.calibration import expected_calibration_error
from BreastCADxLib.analysis.classifier import classifier_for
from BreastCADxLib.analysis.registry import model_set_dir
from BreastCADxLib.results.evaluation import auc_ci, specificity_at
from BreastCADxLib.results.evaluation import dice as mask_dice
from BreastCADxLib.results.evaluation import group_bootstrap as group_boot
from training.classification.designs import load, named_matrix
from training.data import DEFAULT_DATA, site_cases
from training.segmentation.site_pass import load_pass, rethreshold
from training.segmentation.tune_presence import load_cases, score

RESULTS = Path("benchmarks/results")
PASSES = Path("runs/site_pass")
SITES = {"busi": "BUSI test (Cairo)", "busbra_l5": "BUS-BRA L5 test (Rio)",
         "busuclm": "BUS-UCLM test (Ciudad Real)"}
SCORED_AT = {  # set id (benchmarks.machine.set_folder: where it is) -> the test sites it is scored at
    "three-site": ("busi", "busbra_l5", "busuclm"), "busi-only": ("busi", "busbra_l5", "busuclm"),
    "two-site": ("busuclm",)}
CROSS = {("busi-only", "busbra_l5"), ("busi-only", "busuclm"), ("two-site", "busuclm")}  # never saw that hospital
KINDS = {"expect": "automatic", "roi": "ROI box", "perturbed": "corrected (perturbed)", "reference": "reference"}


def mean_ci(v: np.ndarray, groups: np.ndarray) -> dict:
    return {"mean": float(np.mean(v)), "ci95": group_boot(groups, lambda i: float(np.mean(v[i]))), "n": int(len(v))}


def seg_rows(site: str, name: str, path: Path, presence: float | None = None) -> dict:
    refs = {c.case: c for c in site_cases(site, DEFAULT_DATA[site])}
    dice: dict[str, list] = {"default": [], "expect": [], "roi": []}
    groups, missed, false, box_empty = [], [], [], []
    for case, r in load_pass(path).items():
        ref = refs[case].load()[1]
        default = r["default"] if presence is None else rethreshold(r["prob"], presence)
        if not ref.any():
            false.append(bool(default.any()))
            continue
        groups.append(refs[case].group)
        missed.append(not default.any())
        box_empty.append(not r["roi"].any())
        for k, m in (("default", default), ("expect", r["expect"]), ("roi", r["roi"])):
            dice[k].append(mask_dice(m, ref))
    g = np.array(groups)
    out = {"model": name, "site": site, "lesions": len(groups), "missed": int(sum(missed)),
           "missed_rate": float(np.mean(missed)), "no_outline_in_box": int(sum(box_empty))}
    out.update({f"dice_{k}": mean_ci(np.array(v), g) for k, v in dice.items()})
    if false:
        out["false_lesion_rate"] = float(np.mean(false))
        out["lesion_free_images"] = len(false)
    return out


def with_unclassified(lesions: list, d: dict, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Every test lesion of the site (`lesions`): those the product could not classify (an automatic mask too
    small for radiomics: it reports an error and asks for a box) count as an uninformative 0.5, not as absent."""
    done = set(d["case"].tolist())
    rest = [c for c in lesions if c.case not in done]
    return (np.concatenate([p, np.full(len(rest), 0.5)]),
            np.concatenate([d["label"], np.array([int(c.malignant) for c in rest], dtype=d["label"].dtype)]),
            np.concatenate([d["group"].astype(str), np.array([c.group for c in rest], dtype=str)]), len(rest))


def classify(model_set: str, d: dict, kind: str = "reference") -> np.ndarray:
    """The set's classifier (by id) on feature rows of one mask kind: automatic and ROI-box masks (the segmenter's
    own) go to the bundle the card names for them, if any (as the pipeline does)."""
    clf = classifier_for(set_folder(model_set), "auto" if kind in ("expect", "roi") else "user")
    deep = d["deep_box" if clf.card.deep_crop == "box" else "deep_mask"]
    box = d[f"box_{model_set}"] if clf.box_member is not None else None  # training.classification.box_probs
    whole = d.get(f"whole_{model_set}") if clf.whole_member is not None else None
    return clf.fused(named_matrix(d, clf.radiomics_names), deep.astype(float), box, whole)[0]


def carry(path: Path, sets: list[str], retire: dict[str, str]) -> dict:
    """The rows of the sets not scored now, from the earlier report (each keeps the date it was measured); a set
    in `retire` (old name -> new name: a shipped set replaced) keeps its rows under its new name."""
    out: dict = {"segmentation": [], "classification": [], "reader": [], "from": {}, "oof": None}
    if not path.is_file():
        return out
    old = json.loads(path.read_text())
    out["oof"] = old.get("oof_normal_false_lesion")
    reader = (old.get("reader") or {}).get("sets_at_reader_sensitivity", [])
    for kind, rows in (("segmentation", old["segmentation"]), ("classification", old["classification"]),
                       ("reader", reader)):
        for r in rows:
            key = "model" if "model" in r else "model_set"
            r[key] = retire.get(r[key], r[key])
            if r[key] not in sets:
                if kind != "reader":
                    r.setdefault("measured", old.get("carried", {}).get(r[key], old["date"]))
                    out["from"][r[key]] = r["measured"]
                out[kind].append(r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--sets", default=",".join(SCORED_AT),
                    help="sets scored now; the others' rows are carried from the earlier report in --out (their test "
                         "splits are not read again)")
    ap.add_argument("--retire", default="", help="OLD=NEW: carry a replaced set's rows under a new name")
    args = ap.parse_args()
    sets = args.sets.split(",")
    retire = dict(x.split("=", 1) for x in args.retire.split(",") if x)
    res: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                 "segmentation": [], "classification": [], "reader": None}
    carried = carry(args.out / "leave_site_out.json", sets, retire)
    presence = json.loads((model_set_dir() / "lesion_seg_lite0.json").read_text())["postprocessing"]["presence"]
    for site in SITES:
        for s in [s for s in sets if site in SCORED_AT[s]]:
            path = PASSES / f"{s}__{site}__test.npz"
            if path.exists():
                res["segmentation"].append(seg_rows(site, s, path))
        path = PASSES / f"seg_B__{site}__test.npz"
        if path.exists():
            res["segmentation"].append(seg_rows(site, "busbra-only run (seg_B)", path, presence))
    oof = [PASSES / f"seg_B__busi__{r}.npz" for r in ("train+val", "test")]
    if all(p.exists() for p in oof):
        o = score(load_cases(oof), presence)
        res["oof_normal_false_lesion"] = {"images": o["lesion_free_images"], "rate": o["false_lesion_rate"],
                                          "model": "BUS-BRA-only run (never saw BUSI) at the shipped presence"}
    scores: dict = {}
    for site in SITES:
        lesions = site_cases(site, DEFAULT_DATA[site], ("test",), lesions_only=True)
        for s in [s for s in sets if site in SCORED_AT[s]]:
            for kind in KINDS:
                try:
                    d = load(site, kind, s, test=True)
                except FileNotFoundError:
                    continue
                p, y, g, unclassified = with_unclassified(lesions, d, classify(s, d, kind))
                row = {"model_set": s, "site": site, "masks": kind, **auc_ci(y, p, g), "unclassified": unclassified,
                       "ece": expected_calibration_error(p[:len(d["label"])], d["label"]),  # classified
                       "sensitivity_at_0.5": float((p[y == 1] >= 0.5).mean()),
                       "specificity_at_0.5": float((p[y == 0] < 0.5).mean()),
                       "specificity_at_0.96": specificity_at(y, p, 0.96),
                       "specificity_at_0.98": specificity_at(y, p, 0.98),
                       "cancers_below_5pct": int(((p < 0.05) & (y == 1)).sum())}
                scores[s, site, kind] = (y, p, g)
                if kind in ("expect", "roi"):
                    row["mask_dice_to_reference"] = float(np.mean(d["dice"]))
                res["classification"].append(row)
    try:
        d = load("busbra_l5", "reference", None, test=True)
        y, b = d["label"], d["birads"].astype(float)
        sens = float((b[y == 1] >= 4).mean())
        res["reader"] = {**auc_ci(y, b, d["group"]), "sensitivity_at_4": sens,
                         "specificity_at_4": float((b[y == 0] < 4).mean()),
                         "specificity_at_4_ci95": group_boot(d["group"], lambda i: float((b[i][y[i] == 0] < 4).mean())),
                         "sets_at_reader_sensitivity": []}
        for (s, site, kind), (ys, ps, gs) in scores.items():
            if site == "busbra_l5":
                res["reader"]["sets_at_reader_sensitivity"].append({
                    "model_set": s, "masks": kind, "specificity": specificity_at(ys, ps, sens),
                    "ci95": group_boot(gs, lambda i, ys=ys, ps=ps: specificity_at(ys[i], ps[i], sens)
                                       if len(set(ys[i].tolist())) == 2 else np.nan)})
    except FileNotFoundError:
        pass
    res["segmentation"] += carried["segmentation"]
    res["classification"] += carried["classification"]
    if res["reader"]:
        res["reader"]["sets_at_reader_sensitivity"] += carried["reader"]
    order = {**{s: i for i, s in enumerate(SCORED_AT)}, **{new: 0.5 for new in retire.values()}}
    for key, name in (("segmentation", "model"), ("classification", "model_set")):
        res[key].sort(key=lambda r, name=name: (list(SITES).index(r["site"]), order.get(r[name], 9)))
    res["carried"] = carried["from"]
    if "oof_normal_false_lesion" not in res and carried["oof"]:
        res["oof_normal_false_lesion"] = carried["oof"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "leave_site_out.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "leave_site_out.md").write_text(markdown(res))
    print(markdown(res))


def _ci(x: dict, key: str = "mean") -> str:
    return f"{x[key]:.3f} [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]"


def markdown(res: dict) -> str:
    m = res["machine"]
    out = [f"# Final report: held-out test patients of three sites, and the reader\n\nDate: {res['date']}  \n"
           f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} (CPU)\n",
           "Test splits only (BUSI: duplicate-grouped; BUS-BRA L5 and BUS-UCLM: patient-grouped), read once for this "
           "report (per set). Sets: **three-site** (shipped; made by one `breastcadx train --folds site` run on the "
           "three sites' train+val patients), **three-site-recipe** (the README recipe's three-site set, shipped "
           "before it, same patients), **busi-only** "
           "(never saw BUS-BRA or BUS-UCLM: its rows there are **cross-site**) and **two-site** (BUSI + L5, shipped "
           "until 2026-12-05: never saw BUS-UCLM, scored there only). 95 % CIs bootstrap whole patients or "
           "duplicate groups. Classification rows count every test lesion: one the product could not classify (an "
           "automatic mask too small for radiomics; the product says so and asks for a box) is scored 0.5; ECE is "
           "over the lesions given a probability.\n",
           *(["Rows carried from earlier reports (not read again): "
              + ", ".join(f"{k} ({v[:10]})" for k, v in sorted(res["carried"].items())) + ".\n"]
             if res.get("carried") else []),
           "## Segmentation\n",
           "| model | test site | cross-site | lesions | Dice, no prompt (miss = 0) | missed | Dice, lesion expected "
           "| Dice, ROI box | no outline in the box | lesion-free images given a lesion |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["segmentation"]:
        cross = (r["model"], r["site"]) in CROSS or (r["model"].startswith("busbra") and r["site"] == "busi")
        fl = f"{r['false_lesion_rate']:.1%} of {r['lesion_free_images']}" if "false_lesion_rate" in r else "n/a"
        out.append(f"| {r['model']} | {SITES[r['site']]} | {'**yes**' if cross else 'no'} | {r['lesions']} | "
                   f"{_ci(r['dice_default'])} | {r['missed']} ({r['missed_rate']:.1%}) | {_ci(r['dice_expect'])} | "
                   f"{_ci(r['dice_roi'])} | {r.get('no_outline_in_box', '')} | {fl} |")
    if "oof_normal_false_lesion" in res:
        o = res["oof_normal_false_lesion"]
        out.append(f"\nNormal images given a false lesion over out-of-fold predictions of all {o['images']} BUSI "
                   f"normal images ({o['model']}): **{o['rate']:.1%}**.\n")
    out += ["\n## Classification\n", "| model set | test site | cross-site | masks | AUC [95 % CI] | spec at sens "
            "0.96 / 0.98 | cancers < 5 % | ECE | mask Dice to reference | not classified (scored 0.5) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["classification"]:
        cross = (r["model_set"], r["site"]) in CROSS
        dc = f"{r['mask_dice_to_reference']:.3f}" if "mask_dice_to_reference" in r else ""
        out.append(f"| {r['model_set']} | {SITES[r['site']]} | {'**yes**' if cross else 'no'} | {KINDS[r['masks']]} "
                   f"| {_ci(r, 'auc')} | {r['specificity_at_0.96']:.2f} / {r['specificity_at_0.98']:.2f} | "
                   f"{r['cancers_below_5pct']} of {r['malignant']} | {r['ece']:.3f} | {dc} | "
                   f"{r.get('unclassified', 0)} |")
    if res["reader"]:
        rd = res["reader"]
        at = {(r["model_set"], r["masks"]): r for r in rd["sets_at_reader_sensitivity"]}
        out += ["\n## Against the reader (BUS-BRA L5 test patients, the same images)\n",
                f"The ultrasonographer's BI-RADS (2-5 as the score): AUC {_ci(rd, 'auc')}; at BI-RADS >= 4 "
                f"sensitivity {rd['sensitivity_at_4']:.2f}, specificity {rd['specificity_at_4']:.2f} "
                f"[{rd['specificity_at_4_ci95'][0]:.2f}, {rd['specificity_at_4_ci95'][1]:.2f}]. Each set's "
                "specificity is taken at the reader's own sensitivity.\n",
                "| | automatic masks: AUC / spec | ROI-box masks: AUC / spec | reference masks: AUC / spec |",
                "|---|---|---|---|"]
        for s in dict.fromkeys(r["model_set"] for r in rd["sets_at_reader_sensitivity"]):
            cells = []
            for kind in ("expect", "roi", "reference"):
                r = next((r for r in res["classification"] if r["model_set"] == s and r["site"] == "busbra_l5"
                          and r["masks"] == kind), None)
                a = at.get((s, kind))
                cells.append(f"{_ci(r, 'auc')} / {a['specificity']:.2f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]"
                             if r and a else "")
            label = {"busi-only": "BreastCADx busi-only (never saw L5: **cross-site**)",
                     "three-site": "BreastCADx three-site (shipped; L5's own held-out patients)"}.get(
                s, f"BreastCADx {s} (L5's own held-out patients)")
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
