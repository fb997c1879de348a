"""Experiment: is there a lesion in this image, and where, read from LiteMedSAM's frozen encoder (pretrained on
medical images), judged at a hospital the reading was not fitted on.

A head (linear, or `--head mlp`: one hidden layer) on the encoder's 64 x 64 embedding (one 256-value vector per
4 x 4 input pixels; embeddings cached by medsam_member, one pass per image) is fitted per held-out site on the
other two sites' images: cells inside a reference outline (>= half covered) against cells outside every outline
and the lesion-free views' cells (up to 64 of each per image). At the held-out site each image's map gives a
presence score (its highest cell, after a 3 x 3 mean) and a location (that cell). The threshold is chosen on the
fitting sites alone: the lowest with at most 8 % of their lesion-free views shown a lesion, out of fold (five
patient folds inside the fitting sites). Reported per held-out site: presence AUC (lesion images against
lesion-free views), "no lesion found" on lesion images and false lesions on lesion-free views at that threshold,
and how often the map's peak falls in the lesion; next to the shipped design's `--folds site` record (its segmenter
folds, `training/sets/three-site-train.cv.json`).

    PYTHONPATH=. python -m training.experiments.medsam_presence --manifest runs/three_sites.csv \
        --cache runs/medsam_member [--head mlp] [--out benchmarks/results]

Each image's held-out score is kept in CACHE/presence_scores.npz (image path, site, lesion, score), to combine
with other presence signals of the same images. Non-test rows only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.experiments.medsam_member import (
    CV_RECORD,
    C,
    embed_all,
    emit,
    grid_shape,
    outline_cover,
    read_embedding,
    reference_masks,
)

PER_IMAGE = 64  # cells of each kind drawn per image for the fit
FALSE_MAX = 0.08  # the false-lesion limit


def load(cache: Path, item) -> tuple[np.ndarray, tuple[int, int]]:
    """The valid part of an image's embedding as (cells, 256) float32, and its (rows, cols) on the grid."""
    emb, scale, shape = read_embedding(cache, item)
    r, c = grid_shape(shape, scale)
    return emb[:, :r, :c].reshape(emb.shape[0], -1).T.astype(np.float32), (r, c)


def cover(item, grid: tuple[int, int]) -> np.ndarray:
    """The share of each grid cell inside the reference outline (zeros for a lesion-free view)."""
    if not hasattr(item, "case_id"):
        return np.zeros(grid, np.float32)
    return outline_cover(reference_masks([item])[0], grid)


def prepare(items: list, cache: Path, rng: np.random.Generator) -> list[dict]:
    """Per image: its fitting sample (cells and labels), its cover and grid."""
    out = []
    for i, it in enumerate(items):
        x, grid = load(cache, it)
        cov = cover(it, grid).ravel()
        pos, neg = np.flatnonzero(cov >= 0.5), np.flatnonzero(cov == 0)
        pos = rng.choice(pos, min(PER_IMAGE, len(pos)), replace=False) if len(pos) else pos
        neg = rng.choice(neg, min(PER_IMAGE, len(neg)), replace=False)
        out.append({"x": np.vstack([x[pos], x[neg]]), "t": np.r_[np.ones(len(pos)), np.zeros(len(neg))],
                    "cover": cov, "grid": grid})
        if (i + 1) % 300 == 0:
            print(f"cells: {i + 1}/{len(items)}", flush=True)
    return out


def fit(rows: list[dict], head: str = "linear"):
    """The cell head: a logistic regression, or ("mlp") one hidden layer of 64 units."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, t = np.vstack([r["x"] for r in rows]), np.concatenate([r["t"] for r in rows])
    model = (MLPClassifier((64,), alpha=1e-3, early_stopping=True, max_iter=50, random_state=0) if head == "mlp"
             else LogisticRegression(C=C, max_iter=3000))
    return make_pipeline(StandardScaler(), model).fit(x, t)


def read_map(model, cache: Path, item, grid) -> tuple[float, int]:
    """The image's presence score (highest 3 x 3-mean cell probability) and that cell's index."""
    from scipy import ndimage

    x, _ = load(cache, item)
    p = model.predict_proba(x)[:, 1].reshape(grid)
    p = ndimage.uniform_filter(p, 3, mode="nearest")
    k = int(np.argmax(p))
    return float(p.flat[k]), k


def threshold(scores: np.ndarray) -> float:
    """The lowest threshold with at most FALSE_MAX of these lesion-free scores at or above it."""
    s = np.sort(scores)[::-1]
    allowed = int(np.floor(FALSE_MAX * len(s)))
    return float(np.nextafter(s[allowed], np.inf)) if allowed < len(s) else float(s[-1])


def main() -> None:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    from benchmarks.machine import header, stamp
    from BreastCADxLib.train.pipeline import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("--head", choices=["linear", "mlp"], default="linear", help="the cell head (mlp: 64 hidden units)")
    ap.add_argument("--out", type=Path, help="a results folder (benchmarks/results): NAME.md and .json there")
    args = ap.parse_args()
    findings, _, normals = read_manifest(args.manifest)
    items = findings + normals
    if not embed_all(items, args.cache, args.max_minutes):
        raise SystemExit(3)
    rows = prepare(items, args.cache, np.random.default_rng(0))
    sites = np.array([it.site for it in items])
    lesion = np.array([hasattr(it, "case_id") for it in items])
    patients = np.array([it.patient for it in items])
    record = json.loads(CV_RECORD.read_text())["detection"]["by_site"]
    report = stamp()
    report["sites"] = {}
    scores = np.full(len(items), np.nan)  # each image's held-out presence score, kept for combining with others
    for s in sorted(set(sites)):
        fit_idx = np.flatnonzero(sites != s)
        model = fit([rows[i] for i in fit_idx], args.head)
        # the threshold from the fitting sites' lesion-free views, each scored by a head fitted without its patient
        normal_scores = []
        for tr, te in GroupKFold(5).split(fit_idx, groups=patients[fit_idx]):
            inner = fit([rows[fit_idx[i]] for i in tr], args.head)
            normal_scores += [read_map(inner, args.cache, items[fit_idx[i]], rows[fit_idx[i]]["grid"])[0]
                              for i in te if not lesion[fit_idx[i]]]
        thr = threshold(np.array(normal_scores))
        here = np.flatnonzero(sites == s)
        read = [read_map(model, args.cache, items[i], rows[i]["grid"]) for i in here]
        score = np.array([r[0] for r in read])
        scores[here] = score
        is_lesion = lesion[here]
        in_lesion = np.array([rows[i]["cover"][k] > 0 for i, (_, k) in zip(here, read, strict=True)])
        shipped = record.get(s, {})
        cell = {"lesion_images": int(is_lesion.sum()), "lesion_free": int((~is_lesion).sum()),
                "threshold": thr, "fit_lesion_free": len(normal_scores),
                "said_no_lesion": float((score[is_lesion] < thr).mean()),
                "peak_in_lesion": float(in_lesion[is_lesion].mean()),
                "false_lesion": float((score[~is_lesion] >= thr).mean()) if (~is_lesion).any() else None,
                "presence_auc": float(roc_auc_score(is_lesion, score)) if (~is_lesion).any() else None,
                "shipped": {"said_no_lesion": shipped.get("chosen", {}).get("finding_images_said_normal"),
                            "false_lesion": shipped.get("chosen", {}).get("normal_images_with_a_finding"),
                            "presence_auc": (shipped.get("presence_auc") or {}).get("auc"),
                            "peak_in_lesion": shipped.get("peak_in_finding")}}
        report["sites"][s] = cell
        print(s, json.dumps(cell), flush=True)

    suffix = "" if args.head == "linear" else f"_{args.head}"
    np.savez(args.cache / f"presence_scores{suffix}.npz", image=np.array([str(it.image) for it in items]), site=sites,
             lesion=lesion, score=scores)

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"

    def num(v):
        return "-" if v is None else f"{v:.3f}"

    made = (f"`python -m training.experiments.medsam_presence --manifest {args.manifest} --cache {args.cache} "
            f"--head {args.head}`: "
            "each site read by a head fitted on the other two; non-test rows, test splits unread. Shipped: the "
            "shipped design's `--folds site` record (segmenter folds, its pooled threshold).")
    lines = header(f"Finding the lesion with LiteMedSAM's frozen encoder ({args.head} head), at each held-out site",
                   report, made) + [
        "", "| held-out site | lesion images | lesion-free views | presence AUC: head / shipped | \"no lesion found\": "
        "head / shipped | false lesions: head / shipped | peak in the lesion: head / shipped |",
        "|---|---|---|---|---|---|---|"]
    for s, c in report["sites"].items():
        sh = c["shipped"]
        lines.append(f"| {s} | {c['lesion_images']} | {c['lesion_free']} | {num(c['presence_auc'])} / "
                     f"{num(sh['presence_auc'])} | {pct(c['said_no_lesion'])} / {pct(sh['said_no_lesion'])} | "
                     f"{pct(c['false_lesion'])} / {pct(sh['false_lesion'])} | {pct(c['peak_in_lesion'])} / "
                     f"{pct(sh['peak_in_lesion'])} |")
    text = "\n".join(lines) + "\n"
    emit(args.out, f"medsam_presence{suffix}", report, text)


if __name__ == "__main__":
    main()
