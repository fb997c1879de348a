"""Told a lesion is there, can the automatic path pick a better region than the most probable one? Each finding
image of a finished `breastcadx train --folds site` run through its segmenter fold that never saw its site: up to
four candidate regions (the product's candidate rule, each next peak after the earlier regions are taken out, each
refined and grown in its own box as the product does) with a few descriptors each; then, per held-out site, a
logistic ranker fitted on the other two sites' candidates (target: Dice >= 0.5 with the reference) picks one.
Judged against the product's own automatic outline (the run's cached pass) and the best of the four (a ceiling).

    python -m training.experiments.candidate_rank --run runs/three-site-train --manifest runs/three_sites.csv

About 20 min on 2 cores (the candidates are cached in --cache; a rerun only ranks). Non-test rows only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

K = 4
NAMES = ("peak", "refined_mean", "log_area", "row", "col_off", "echo", "texture", "rank", "peak_share", "fill",
         "aspect", "border")


def describe(plane: np.ndarray, first: np.ndarray, prob: np.ndarray, region: np.ndarray, rank: int,
             top: float) -> list[float]:
    """Descriptors of one candidate: first-pass peak, refined mean probability, size, place, echo against a ring
    around it, inner texture, rank and peak against the image's best, box fill and aspect, touching the edge."""
    from scipy import ndimage

    rows, cols = np.nonzero(region)
    ring = ndimage.binary_dilation(region, iterations=max(3, int(0.02 * max(plane.shape)))) & ~region
    sd = float(plane.std()) or 1.0
    inner = plane[region].astype(float)
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    peak = float(first[region].max())
    return [peak, float(prob[region].mean()), float(np.log(region.mean())), float(rows.mean() / plane.shape[0]),
            float(abs(cols.mean() / plane.shape[1] - 0.5)),
            float((inner.mean() - plane[ring].mean()) / sd) if ring.any() else 0.0, float(inner.std() / sd),
            float(rank), peak / top if top > 0 else 0.0, float(region.sum() / (h * w)), float(np.log(w / h)),
            float(rows.min() == 0 or cols.min() == 0 or rows.max() == plane.shape[0] - 1
                  or cols.max() == plane.shape[1] - 1)]


def candidates(net, plane: np.ndarray) -> list[tuple[np.ndarray, list[float]]]:
    """Up to K candidates of one plane, most probable first: (region, descriptors)."""
    from scipy import ndimage

    from BreastCADxLib.analysis.segmentation import MIN_LESION_PIXELS, best_candidate

    first = net.whole_probability(plane)
    min_area = max(MIN_LESION_PIXELS, net.min_area_fraction * first.size)
    work, out, top = first.copy(), [], float(first.max())
    for rank in range(K):
        region = best_candidate(work, net.candidate_relative, min_area)
        if not region.any():
            break
        prob = first.copy()
        grown = net.grown(plane, prob, region) if net.refine_margin is not None else region
        out.append((grown, describe(plane, first, prob, grown, rank, top)))
        work = np.where(ndimage.binary_dilation(region | grown, iterations=3), 0.0, work)
    return out


def collect(run: Path, manifest: Path, cache: Path) -> dict:
    from BreastCADxLib.results.evaluation import dice
    from BreastCADxLib.train import segmenter as seg
    from BreastCADxLib.train.members import member_images
    from BreastCADxLib.train.outlines import cached_outline, cached_passes
    from BreastCADxLib.train.pipeline import read_manifest

    findings = read_manifest(manifest)[0]
    images = {str(f.image): (f, im) for f, im in zip(findings, member_images(findings))}
    product = cached_passes(run / ".work")
    rows, cand = [], []
    for net, judged in seg.fold_segmenters(run):
        for key in (r["image"] for r in judged if r["finding"]):
            f, im = images[key]
            i = len(rows)
            rows.append((f.site, f.patient, dice(cached_outline(product[key], im.plane.shape), im.mask)))
            cand += [(i, *d, dice(region, im.mask)) for region, d in candidates(net, im.plane)]
            if len(rows) % 100 == 0:
                print(f"{len(rows)} images", flush=True)
    site, patient, product_dice = map(np.array, zip(*rows))
    table = np.array(cand, float)
    np.savez_compressed(cache, site=site.astype(str), patient=patient.astype(str), product=product_dice,
                        table=table)
    return dict(np.load(cache, allow_pickle=False))


def pick(table: np.ndarray, fit_rows: np.ndarray, score_rows: np.ndarray) -> np.ndarray:
    """Per image in score_rows, the Dice of the candidate a ranker fitted on fit_rows' candidates prefers."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    img, x, d = table[:, 0].astype(int), table[:, 1:-1], table[:, -1]
    train = np.isin(img, fit_rows)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(x[train], d[train] >= 0.5)
    p = model.predict_proba(x)[:, 1]
    out = np.zeros(len(score_rows))
    for j, i in enumerate(score_rows):
        m = np.flatnonzero(img == i)
        out[j] = d[m[np.argmax(p[m])]] if len(m) else 0.0
    return out


def report(z: dict) -> list[str]:
    from BreastCADxLib.results.evaluation import group_bootstrap

    site, patient, table, product = z["site"], z["patient"], z["table"], z["product"]
    img, d = table[:, 0].astype(int), table[:, -1]
    first = np.zeros(len(site))
    ceiling = np.zeros(len(site))
    for i in range(len(site)):
        m = img == i
        if m.any():
            first[i] = d[m & (table[:, 1 + NAMES.index("rank")] == 0)].max(initial=0.0)
            ceiling[i] = d[m].max()
    lines = ["| held-out site | images | product: mean Dice (share < 0.1) | first candidate | ranker (fitted on the "
             "other two) | ranker - product [95 % CI] | best of 4 (ceiling) |", "|---|---|---|---|---|---|---|"]
    for s in sorted(set(site)):
        rows = np.flatnonzero(site == s)
        ranked = pick(table, np.flatnonzero(site != s), rows)
        diff = ranked - product[rows]
        lo, hi = group_bootstrap(patient[rows], lambda i, d=diff: float(d[i].mean()))
        cell = [f"{v.mean():.3f} ({(v < 0.1).mean():.1%})" for v in (product[rows], first[rows], ranked,
                                                                        ceiling[rows])]
        lines.append(f"| {s} | {len(rows)} | {cell[0]} | {cell[1]} | {cell[2]} | {diff.mean():+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] | {cell[3]} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path("runs/candidate_rank.npz"))
    args = ap.parse_args()
    z = dict(np.load(args.cache, allow_pickle=False)) if args.cache.is_file() else \
        collect(args.run, args.manifest, args.cache)
    print("\n".join(report(z)))


if __name__ == "__main__":
    main()
