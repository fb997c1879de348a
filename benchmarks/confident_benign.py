"""The cancers a set scores below 5 % at a site it never saw: what they look like and what each member says.

    python -m benchmarks.confident_benign --rows benchmarks/results/held_out_site__two-site__busuclm__train+val.json

For every malignant case of a held_out_site run whose lesion-expected probability was below 5 %: the automatic
outline's Dice, the fused probability and each member's own with the automatic outline, with the reference outline
and inside the reference box, the lexicon categories with the reference outline, and what the site's manifest says
of the image (caliper marks, colour Doppler, two panes) where it says it. Non-test rows only (as the run's).
Writes benchmarks/results/confident_benign__SET__SITE.md/json.

    python -m benchmarks.confident_benign --run runs/three-site-train --manifest runs/three_sites.csv

does it for the shipped design from a finished `breastcadx train --folds site` run's out-of-fold record (every
site scored by the models trained on the other two; nothing is run again): the cancers below 5 % on the automatic
outline (lesion expected) or on the drawn one, what each member said on both, the lexicon categories of the drawn
outline (from the run's cached descriptors) and whether the product flags the low score (suspicious_sign_low_score),
and a contact sheet of their crops (green: drawn outline, red: automatic). Writes confident_benign__RUN.md/json/png.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.machine import header, machine, set_folder, set_id, write_results
from BreastCADxLib.analysis.pipeline import analyze
from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox
from BreastCADxLib.io import load_image, load_mask
from training.data import add_data_args, cases, data_dir

OUT = Path(__file__).resolve().parent / "results"
MEMBERS = ("fusion", "box_cnn", "whole_image_cnn")


def members(result) -> dict:
    p = result.prediction
    return {"p": p.probability, **{k: p.member_probabilities.get(k) for k in MEMBERS},
            "flags": [f.code for f in p.flags]}


def run_record(args) -> None:
    """The cancers below `--below` in a `--folds site` run's out-of-fold record (see the module docstring)."""
    from benchmarks.train_weights import run_rows
    from BreastCADxLib.analysis.classifier import DISSENT, dissenting_members
    from BreastCADxLib.analysis.lexicon import categories, suspicious_signs
    from BreastCADxLib.analysis.values import LOW_SCORE

    r = run_rows(args.run, args.manifest)
    cv, y, sites = r["cv"], r["y"], r["sites"]
    work = args.run / ".work"
    dice = r["dice"]
    auto = {"p": r["automatic"], "features": r["both"], "box": r["box"], "whole": r["whole"]}
    drawn = {"p": r["drawn"], "features": np.asarray(cv["oof"]["fusion"]),
             "box": np.asarray(cv["oof"]["box_cnn"]), "whole": r["whole"]}
    names = json.loads((args.run / "lesion_cls_fusion.json").read_text())["radiomics_names"]
    desc = [i for i, n in enumerate(names) if n.startswith("descriptor_")]
    fused = {"auto": [k for k, w in cv["automatic_outlines"]["member_weights"].items() if w > 0],
             "drawn": [k for k, w in cv["member_gate"]["weights"].items() if w > 0]}

    def lexicon_of(rad):
        return [categories({names[j].removeprefix("descriptor_"): float(rad[i, j]) for j in desc})
                for i in range(len(y))]

    lexicon = lexicon_of(r["rad"])
    sus = {"drawn": np.array([bool(suspicious_signs(lex)) for lex in lexicon]),
           "auto": np.array([ok and bool(suspicious_signs(lex)) for ok, lex in zip(r["ok"], lexicon_of(r["arad"]))])}
    paths = {"auto": auto, "drawn": drawn}

    def flags_of(path: str, i: int) -> list[str]:  # the product's two low-score flags on this outline
        d = paths[path]
        members = {k: d[k][i] for k in ("features", *fused[path])}
        return ["lexicon"] * bool(d["p"][i] < LOW_SCORE and sus[path][i]) + \
            ["member"] * bool(dissenting_members(members, d["p"][i]))

    picked = np.flatnonzero((y == 1) & ((auto["p"] < args.below) | (drawn["p"] < args.below)))
    rows = []
    for i in picked:
        lex = lexicon[i]
        rows.append({"case": r["findings"][i].case_id, "site": str(sites[i]), "patient": str(r["groups"][i]),
                     "auto_dice": float(dice[i]), "auto": {k: float(v[i]) for k, v in auto.items()},
                     "drawn": {k: float(v[i]) for k, v in drawn.items()},
                     "lexicon": {x.feature: x.category for x in lex if x.feature not in ("depth", "size")},
                     "flags": {path: flags_of(path, i) for path in paths}})
    name = f"confident_benign__{args.run.name}"
    sheet = args.out / f"{name}.png"
    contact_sheet([r["findings"][i] for i in picked], rows, work, sheet)
    cancers = {s: int(((sites == s) & (y == 1)).sum()) for s in sorted(set(sites))}
    lines = header(f"Cancers below {args.below:.0%} at each held-out site, {args.run.name} (out of fold)",
                   {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine()},
                   f"Made by `python -m benchmarks.confident_benign --run {args.run} --manifest {args.manifest}`: "
                   "every site scored by the models trained on the other two (non-test rows); cancers per site "
                   + ", ".join(f"{s} {n}" for s, n in cancers.items()) + f". Crops: `{sheet.name}`, from "
                   + "; ".join(json.loads((args.run / "lesion_cls_fusion.json").read_text())["training"]
                               ["data_citations"]))
    lines += ["", "Probabilities in %: fused (features / box member / whole image).", "",
              "| site | case | auto Dice | automatic outline | drawn outline | lexicon (drawn outline) | flags "
              "(automatic; drawn) |",
              "|---|---|---|---|---|---|---|"]

    def cell(d):
        return f"{100 * d['p']:.1f} ({100 * d['features']:.0f} / {100 * d['box']:.0f} / {100 * d['whole']:.0f})"

    for o in rows:
        lex = ", ".join(f"{k} {v}" for k, v in o["lexicon"].items())
        lines.append(f"| {o['site']} | {o['case']} | {o['auto_dice']:.2f} | {cell(o['auto'])} | {cell(o['drawn'])} | "
                     f"{lex} | {', '.join(o['flags']['auto']) or '-'}; {', '.join(o['flags']['drawn']) or '-'} |")
    for path in ("auto", "drawn"):
        low = [o for o in rows if o[path]["p"] < args.below]
        by = ", ".join(f"{s} {sum(o['site'] == s for o in low)}" for s in cancers)
        lines += ["", f"- {path} outline: {len(low)} below {args.below:.0%} ({by}); median member probabilities "
                  + ", ".join(f"{k} {100 * float(np.median([o[path][k] for o in low])):.1f} %"
                              for k in ("features", "box", "whole")) if low else f"- {path} outline: none"]
    flags = flag_rates(y, sites, paths, sus, fused)
    lines += ["", "## What flags a score below 5 % as no confident benign call (every lesion, each site held out)", "",
              "The lexicon's suspicious signs of the outline scored (suspicious_sign_low_score), and a member at or "
              f"above a level (member_dissent_low_score; the product's level is {DISSENT:.0%}). Cells: cancers "
              "below 5 % flagged / all of them; benign lesions below 5 % flagged (share).", "",
              "| outline | rule | " + " | ".join(cancers) + " |", "|---|---|" + "---|" * len(cancers)]
    for (path, rule), by_site in flags.items():
        lines.append(f"| {path} | {rule} | " + " | ".join(
            f"{v['cancers_flagged']} / {v['cancers']}; {v['benign_flagged']} of {v['benign']} "
            f"({v['benign_flagged'] / max(1, v['benign']):.0%})" for v in by_site.values()) + " |")
    auto_low = [o for o in rows if o["auto"]["p"] < args.below]
    if auto_low:
        lines.append(f"\n- of the automatic-outline ones, {sum(o['auto_dice'] < 0.1 for o in auto_low)} outlined "
                     f"elsewhere (Dice < 0.1), {sum(o['drawn']['p'] >= args.below for o in auto_low)} at or above "
                     f"{args.below:.0%} on the drawn outline")
    write_results(args.out, name, {"run": str(args.run), "cancers": cancers, "rows": rows,
                                   "flags": [{"outline": k[0], "rule": k[1], "sites": v} for k, v in flags.items()]},
                  "\n".join(lines) + "\n")


def flag_rates(y, sites, paths: dict, suspicious: dict, fused: dict) -> dict:
    """Per outline and rule, per site: the cancers and benign lesions below LOW_SCORE and how many the rule flags
    (fused: {outline: the image members its bundle fuses, as the product sees them})."""
    from BreastCADxLib.analysis.classifier import DISSENT
    from BreastCADxLib.analysis.values import LOW_SCORE

    out = {}
    for path, d in paths.items():
        low = d["p"] < LOW_SCORE
        top = np.maximum.reduce([d["features"], *(d[k] for k in fused[path])])  # the members the bundle fuses
        rules = {"lexicon signs": suspicious[path]}
        rules.update({f"a member >= {t:.0%}": top >= t for t in sorted({0.3, DISSENT})})
        rules[f"either (lexicon, member >= {DISSENT:.0%})"] = suspicious[path] | (top >= DISSENT)
        for rule, hit in rules.items():
            out[(path, rule)] = {s: {"cancers": int((m := (sites == s) & low & (y == 1)).sum()),
                                     "cancers_flagged": int((m & hit).sum()),
                                     "benign": int((b := (sites == s) & low & (y == 0)).sum()),
                                     "benign_flagged": int((b & hit).sum())} for s in sorted(set(sites))}
    return out


def contact_sheet(findings: list, rows: list[dict], work: Path, path: Path, side: int = 160) -> None:
    """One tile per finding: its drawn-outline box with a margin, drawn outline green, automatic red."""
    from PIL import Image as PILImage
    from PIL import ImageDraw
    from scipy import ndimage

    from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox, to_uint8_range
    from BreastCADxLib.train.outlines import cached_outline, cached_passes
    from BreastCADxLib.train.pipeline import on_grid

    passes = cached_passes(work)
    cols = 6
    sheet = PILImage.new("RGB", (cols * side, max(1, -(-len(findings) // cols)) * (side + 14)), "black")
    for k, (f, row) in enumerate(zip(findings, rows)):
        image, ref = on_grid(f)
        plane, ref = to_uint8_range(image.array[0]).astype(np.uint8), ref[0]
        auto = cached_outline(passes[str(f.image)], ref.shape)
        rgb = np.stack([plane] * 3, -1)
        for m, colour in ((ref, (0, 255, 0)), (auto, (255, 0, 0))):
            rgb[m & ~ndimage.binary_erosion(m, iterations=2)] = colour
        x0, y0, x1, y1 = expand_box(mask_bbox(ref | auto), 0.3, ref.shape)  # both outlines in view
        tile = PILImage.fromarray(rgb[y0:y1, x0:x1])
        tile.thumbnail((side, side))
        x, y = (k % cols) * side, (k // cols) * (side + 14)
        sheet.paste(tile, (x + (side - tile.width) // 2, y + 14 + (side - tile.height) // 2))
        ImageDraw.Draw(sheet).text((x + 2, y + 1), f"{row['case'][-14:]} {100 * row['auto']['p']:.0f}/"
                                   f"{100 * row['drawn']['p']:.0f}%", fill="white")
    sheet.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--rows", type=Path, help="a benchmarks.held_out_site result (.json)")
    ap.add_argument("--run", type=Path, help="or a finished `breastcadx train --folds site` folder")
    ap.add_argument("--manifest", type=Path, help="the manifest that run was trained on (with --run)")
    ap.add_argument("--below", type=float, default=0.05)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if bool(args.run) != bool(args.manifest) or bool(args.run) == bool(args.rows):
        ap.error("give --rows, or --run with --manifest")
    if args.run:
        return run_record(args)
    run = json.loads(args.rows.read_text())
    site, model_set = run["site"], run["model_set"]
    folder = set_folder(model_set)  # a held-out set is a training output, used by folder
    model_set = set_id(folder)  # the set's own id (a folder given as the set names it in the file)
    manifest = {}
    if (data_dir(args, site) / "manifest.csv").is_file():
        with open(data_dir(args, site) / "manifest.csv", newline="") as f:
            manifest = {r.get("case_id", r.get("case")): r for r in csv.DictReader(f)}
    by_case = {c.case: c for c in cases(args, [site], tuple(run["roles"].split(",")))}
    picked = [r for r in run["rows"] if r["label"] == "malignant" and r.get("expect_p") is not None
              and r["expect_p"] < args.below]
    out = []
    for r in picked:
        c = by_case[r["case"]]
        img = load_image(c.image)
        ref = load_mask(c.mask, img)
        kw = {"heatmap": False, "device": "cpu", "model_set": folder, "allow_unvalidated": True}  # studied
        auto = analyze(img, expect_lesion=True, **kw)
        drawn = analyze(img, mask=ref, **kw)
        box = analyze(img, roi=expand_box(mask_bbox(ref[0]), 0.1, ref[0].shape), **kw)
        m = manifest.get(c.case, {})
        out.append({"case": c.case, "patient": c.group, "auto_dice": r["expect_dice"], "auto": members(auto),
                    "reference": members(drawn), "box": members(box),
                    "lexicon": {i.feature: i.category for i in drawn.lexicon},
                    "image": {k: m[k] for k in ("calipers", "doppler", "combined", "lesions") if k in m}})
    lines = header(f"Cancers below {args.below:.0%} at {site}, {model_set} set (never trained there)",
                   {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine()},
                   f"Made by `python -m benchmarks.confident_benign --rows {args.rows}`; {len(out)} of "
                   f"{sum(r['label'] == 'malignant' for r in run['rows'])} cancers ({run['roles']}).")
    lines += ["", "| case | auto Dice | auto: p (features / box CNN / whole CNN) | reference outline: p (same) | "
                  "box: p | lexicon (reference outline) | image |", "|---|---|---|---|---|---|---|"]

    def cell(d):
        parts = " / ".join("-" if d[k] is None else f"{100 * d[k]:.0f}" for k in MEMBERS)
        return f"{100 * d['p']:.1f} % ({parts})"

    for o in out:
        lex = ", ".join(f"{k} {v}" for k, v in o["lexicon"].items() if k not in ("size", "depth"))
        img = ", ".join(k for k, v in o["image"].items() if v in ("True", "true")) or "-"
        lines.append(f"| {o['case']} | {o['auto_dice']:.2f} | {cell(o['auto'])} | {cell(o['reference'])} | "
                     f"{100 * o['box']['p']:.1f} % | {lex} | {img} |")
    if out:
        ref_low = sum(o["reference"]["p"] < args.below for o in out)
        good = sum(o["auto_dice"] >= 0.8 for o in out)
        whole_hi = sum((o["auto"]["whole_image_cnn"] or 0) >= 0.5 for o in out)
        lines += ["", f"- {ref_low} of {len(out)} stay below {args.below:.0%} with the reference outline; "
                      f"{good} were outlined well (Dice >= 0.8) automatically.",
                  f"- The whole-image CNN alone says >= 50 % for {whole_hi} of them; median member probabilities "
                  "with the automatic outline: " + ", ".join(
                      f"{k} {100 * float(np.median([o['auto'][k] for o in out if o['auto'][k] is not None])):.1f} %"
                      for k in MEMBERS if any(o["auto"][k] is not None for o in out)) + "."]
    write_results(args.out, f"confident_benign__{model_set}__{site}", {"site": site, "model_set": model_set,
                                                                       "rows": out}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
