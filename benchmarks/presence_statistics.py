"""Finding the lesion at a new hospital: does more than the segmenter's peak tell a lesion image from a normal one?

    python -m benchmarks.presence_statistics --run runs/three-site-train --manifest runs/three_sites.csv

The default path says "no lesion found" when the segmenter's presence score (the peak of its most confident
region large enough to be a lesion) stays below the set's threshold. Each site's images (lesion and lesion-free,
non-test) go through the segmenter fold of a `breastcadx train --folds site` run that never saw the site, and the
candidate region the product returns is described: its probability (peak, mean, 10th percentile, area), the
whole map (mass, pixels above 0.9, regions), and the image under it (echo contrast against a ring around it,
heterogeneity, depth). Each statistic's AUC at the two sites with lesion-free views, then logistic combinations
fitted on the other two sites' rows (every row out of site) and judged at the third at a threshold chosen on
those two (at most 8 % of their normal images shown a lesion, the set's rule). About 5 min on 2 cores
(cached in the run's work folder). Writes benchmarks/results/NAME.md / .json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results

OUT = Path(__file__).resolve().parent / "results"
FALSE_RATE = 0.08
STATS = ("score", "peak_all", "mean_in", "q10_in", "area", "mass", "p90_frac", "n_regions", "contrast",
         "grey_sd_in", "depth")
COMBOS = (("score",), ("score", "contrast"), ("score", "contrast", "p90_frac"),
          ("score", "contrast", "p90_frac", "area", "grey_sd_in"), STATS)


def describe(prob: np.ndarray, mask: np.ndarray, plane: np.ndarray, post: dict, score: float) -> dict:
    from scipy import ndimage

    from BreastCADxLib.analysis.segmentation import islands

    _, areas, _ = islands(prob, post["threshold"])
    g = plane.astype(np.float32)
    row = {"score": score, "peak_all": float(prob.max()), "area": float(mask.mean()), "mass": float(prob.mean()),
           "p90_frac": float((prob >= 0.9).mean()),
           "n_regions": int((areas >= max(16.0, post["min_area_fraction"] * prob.size)).sum()),
           "mean_in": 0.0, "q10_in": 0.0, "contrast": 0.0, "grey_sd_in": 0.0, "depth": 0.0}
    if mask.any():
        ring = ndimage.binary_dilation(mask, iterations=max(3, int(np.sqrt(mask.sum()) * 0.2))) & ~mask
        around = g[ring].mean() if ring.any() else g.mean()
        row.update(mean_in=float(prob[mask].mean()), q10_in=float(np.quantile(prob[mask], 0.1)),
                   contrast=float((around - g[mask].mean()) / (g.std() + 1.0)),
                   grey_sd_in=float(g[mask].std() / (g.std() + 1.0)),
                   depth=float(ndimage.center_of_mass(mask)[0] / mask.shape[0]))
    return row


def passes(run: Path, manifest: Path) -> list[dict]:
    """Every image of the run's segmenter folds, through the fold that never saw it (cached)."""
    from BreastCADxLib.image import Image
    from BreastCADxLib.train import segmenter as seg
    from BreastCADxLib.train.pipeline import read_manifest

    work = run / ".work"
    post = json.loads((run / "lesion_seg_lite0.json").read_text())["postprocessing"]
    folds = sorted(work.glob("segmenter_fold*"))
    digest = hashlib.sha256(json.dumps([post, *(hashlib.sha256((f / "model.pt").read_bytes()).hexdigest()
                                                for f in folds)]).encode()).hexdigest()
    cache = work / "presence_statistics.json"
    if cache.is_file() and json.loads(cache.read_text())["digest"] == digest:
        return json.loads(cache.read_text())["rows"]
    findings, _, normals = read_manifest(manifest)
    images = {im.key: im for im in seg.seg_images(findings, normals)}
    rows = []
    for k, (net, judged) in enumerate(seg.fold_segmenters(run), 1):
        for i, j in enumerate(judged):
            im = images[j["image"]]
            res = net.segment(Image(array=im.plane[None]), expect_lesion=True, presence=2.0)
            rows.append({"image": j["image"], "site": j["site"], "patient": j["patient"], "finding": j["finding"],
                         **describe(res.probability[0], res.mask[0], im.plane, post, float(res.presence_score or 0))})
            if (i + 1) % 200 == 0:
                print(f"segmenter fold {k}: {i + 1}/{len(judged)}", flush=True)
    cache.write_text(json.dumps({"digest": digest, "rows": rows}))
    return rows


def held_out(rows: list[dict], keys: tuple[str, ...]) -> dict:
    """Fitted on two sites' rows, judged at the third: AUC (where it has normals), lesions missed, normals shown a
    lesion, at the threshold that shows a lesion on at most FALSE_RATE of the training sites' normals."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    site = np.array([r["site"] for r in rows])
    finding = np.array([r["finding"] for r in rows])
    x = np.array([[r[k] for k in keys] for r in rows], float)
    if "score" in keys:  # the peak saturates near 1: its logit spreads it
        j = keys.index("score")
        x[:, j] = np.log(np.clip(x[:, j], 1e-6, 1 - 1e-7) / (1 - np.clip(x[:, j], 1e-6, 1 - 1e-7)))
    out = {}
    for s in sorted(set(site)):
        tr, te = site != s, site == s
        model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
        score = model.fit(x[tr], finding[tr]).decision_function(x)
        t = np.quantile(score[tr & ~finding], 1 - FALSE_RATE)
        normals = te & ~finding
        out[s] = {"auc": float(roc_auc_score(finding[te], score[te])) if normals.any() else None,
                  "missed": float(np.mean(score[te & finding] < t)),
                  "false": float(np.mean(score[normals] >= t)) if normals.any() else None}
    return out


def main() -> None:
    from sklearn.metrics import roc_auc_score

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `breastcadx train --folds site` folder")
    ap.add_argument("--manifest", type=Path, required=True, help="the manifest it was trained on")
    ap.add_argument("--name", default="presence_statistics")
    args = ap.parse_args()
    report = stamp()
    rows = passes(args.run, args.manifest)
    site = np.array([r["site"] for r in rows])
    finding = np.array([r["finding"] for r in rows])
    single = {}
    for s in sorted(set(site[~finding])):
        m = site == s
        single[s] = {k: float(roc_auc_score(finding[m], [r[k] for r, keep in zip(rows, m) if keep])) for k in STATS}
    report.update(run=str(args.run), images={s: {"lesion": int((finding & (site == s)).sum()),
                                                 "lesion_free": int((~finding & (site == s)).sum())}
                                             for s in sorted(set(site))},
                  single_auc=single, combinations=[{"keys": list(k), "sites": held_out(rows, k)} for k in COMBOS])
    write_results(OUT, args.name, report, markdown(report, args))


def markdown(report: dict, args) -> str:
    lines = header("Presence at a held-out site: the segmenter's peak and what else its outline says", report,
                   f"Made by `python -m benchmarks.presence_statistics --run {args.run} --manifest {args.manifest}`.")
    about = __doc__.split("\n\n")[2].split(" About 5 min")[0].replace("\n", " ")
    counts = "; ".join(f"{s} {v['lesion']} lesion, {v['lesion_free']} lesion-free" for s, v in report["images"].items())
    lines += ["", about, "", f"Images (non-test): {counts}", "",
              "## Each statistic alone (AUC, lesion image against lesion-free, at the site held out)", "",
              "| statistic | " + " | ".join(report["single_auc"]) + " |", "|---|" + "---|" * len(report["single_auc"])]
    for k in STATS:
        lines.append(f"| {k} | " + " | ".join(f"{v[k]:.3f}" for v in report["single_auc"].values()) + " |")
    sites = sorted(report["combinations"][0]["sites"])
    lines += ["", "## Combined (logistic, fitted on the other two sites; threshold: at most 8 % of their normals)", "",
              "Cells: AUC | lesions said \"no lesion found\" | lesion-free images shown a lesion.", "",
              "| statistics | " + " | ".join(sites) + " |", "|---|" + "---|" * len(sites)]
    for c in report["combinations"]:
        cells = []
        for s in sites:
            v = c["sites"][s]
            cells.append(f"{v['auc']:.3f} / {v['missed']:.1%} / {v['false']:.1%}" if v["auc"] is not None
                         else f"- / {v['missed']:.1%} / -")
        lines.append(f"| {' + '.join(c['keys'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
