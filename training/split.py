"""Duplicate-aware, label-stratified split of BUSI.

BUSI holds many near-duplicates (the same frame re-saved or re-cropped). Images are
grouped by union-find over three similarity tests, then whole groups are assigned to
test (~20 %) / validation (~10 %) / train, with 5 folds over train+validation.

Near-duplicate tests (thresholds chosen by looking at the pair-score distribution,
see training/splits/README.md):
  * identical grey pixels (manifest sha256);
  * whole-image normalised cross-correlation on 64x64 downscales >= NCC_WHOLE;
  * lesion-patch NCC >= NCC_LESION on the mask bounding box (+25 % context) resized
    to 48x48, with bounding-box sizes within 15 % (catches re-cropped frames, whose
    lesion keeps its pixel size while the field of view changes).

Usage: python training/split.py [--data ../shared/data/busi] [--out training/splits]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

NCC_WHOLE = 0.89
NCC_LESION = 0.86
SIZE_TOL = 0.15
SEED = 20261124


def _norm(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64).ravel()
    a -= a.mean()
    n = np.linalg.norm(a)
    return a / n if n > 0 else a


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize(size, Image.BILINEAR), dtype=np.float64)


def load_descriptors(data: Path, rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    whole, lesion, bbox = [], [], []
    for r in rows:
        img = np.asarray(Image.open(data / r["label"] / f"{r['case']}.png").convert("L"))
        msk = np.asarray(Image.open(data / r["label"] / f"{r['case']}_mask.png").convert("L")) > 127
        whole.append(_norm(_resize(img, (64, 64))))
        ys, xs = np.nonzero(msk)
        if len(ys) == 0:
            lesion.append(np.zeros(48 * 48))
            bbox.append((0.0, 0.0))
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        h, w = y1 - y0, x1 - x0
        my, mx = int(0.25 * h), int(0.25 * w)
        crop = img[max(0, y0 - my) : y1 + my, max(0, x0 - mx) : x1 + mx]
        lesion.append(_norm(_resize(crop, (48, 48))))
        bbox.append((float(h), float(w)))
    return np.array(whole), np.array(lesion), np.array(bbox)


class UnionFind:
    def __init__(self, n: int) -> None:
        self.p = list(range(n))

    def find(self, i: int) -> int:
        while self.p[i] != i:
            self.p[i] = self.p[self.p[i]]
            i = self.p[i]
        return i

    def union(self, a: int, b: int) -> None:
        self.p[self.find(a)] = self.find(b)


def duplicate_pairs(rows, whole, lesion, bbox) -> list[tuple[int, int, str, float]]:
    n = len(rows)
    s_whole = whole @ whole.T
    s_les = lesion @ lesion.T
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            if rows[i]["sha256"] == rows[j]["sha256"]:
                pairs.append((i, j, "identical", 1.0))
            elif s_whole[i, j] >= NCC_WHOLE:
                pairs.append((i, j, "whole", float(s_whole[i, j])))
            elif bbox[i][0] > 0 and bbox[j][0] > 0 and s_les[i, j] >= NCC_LESION:
                hi, wi = bbox[i]
                hj, wj = bbox[j]
                if abs(hi - hj) <= SIZE_TOL * max(hi, hj) and abs(wi - wj) <= SIZE_TOL * max(wi, wj):
                    pairs.append((i, j, "lesion", float(s_les[i, j])))
    return pairs


def assign(rows, groups: list[int], seed: int = SEED) -> list[tuple[str, int]]:
    """Greedy stratified assignment of whole groups: returns (split, fold) per row."""
    rng = np.random.default_rng(seed)
    labels = sorted({r["label"] for r in rows})
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    gids = list(by_group)
    rng.shuffle(gids)
    # largest groups first so the greedy balancing can absorb them
    gids.sort(key=lambda g: -len(by_group[g]))
    total = {lab: sum(r["label"] == lab for r in rows) for lab in labels}
    bins = {"test": 0.2, "val": 0.1, "train": 0.7}
    count = {b: {lab: 0 for lab in labels} for b in bins}
    out: list[tuple[str, int]] = [("", -1)] * len(rows)
    split_of: dict[int, str] = {}
    for g in gids:
        members = by_group[g]
        labs = [rows[i]["label"] for i in members]
        # the bin most short of this group's labels
        b = max(bins, key=lambda b, labs=labs: sum(bins[b] * total[lab] - count[b][lab] for lab in labs))
        split_of[g] = b
        for lab in labs:
            count[b][lab] += 1
    # 5 folds over train+val groups, stratified the same way
    fold_count = [{lab: 0 for lab in labels} for _ in range(5)]
    fold_of: dict[int, int] = {}
    for g in gids:
        if split_of[g] == "test":
            continue
        labs = [rows[i]["label"] for i in by_group[g]]
        f = min(range(5), key=lambda k: sum(fold_count[k][lab] for lab in labs) + 1e-3 * k)
        fold_of[g] = f
        for lab in labs:
            fold_count[f][lab] += 1
    for g, members in by_group.items():
        for i in members:
            out[i] = (split_of[g], fold_of.get(g, -1))
    return out


def save_examples(data: Path, rows, pairs, out: Path, per_kind: int = 4) -> None:
    """Montage of duplicate pairs nearest to each threshold (left | right), for the docs."""
    chosen = []
    for kind in ("whole", "lesion"):
        ranked = sorted((p for p in pairs if p[2] == kind), key=lambda p: p[3])
        chosen += ranked[:per_kind]
    tile = (200, 160)
    canvas = Image.new("L", (2 * tile[0] + 10, len(chosen) * (tile[1] + 6)), 255)
    for k, (i, j, _, _) in enumerate(chosen):
        for c, idx in enumerate((i, j)):
            r = rows[idx]
            im = Image.open(data / r["label"] / f"{r['case']}.png").convert("L").resize(tile)
            canvas.paste(im, (c * (tile[0] + 10), k * (tile[1] + 6)))
    canvas.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--out", type=Path, default=Path("training/splits"))
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.data / "manifest.csv")))
    rows.sort(key=lambda r: r["case"])
    whole, lesion, bbox = load_descriptors(args.data, rows)
    pairs = duplicate_pairs(rows, whole, lesion, bbox)
    uf = UnionFind(len(rows))
    for i, j, _, _ in pairs:
        uf.union(i, j)
    roots = [uf.find(i) for i in range(len(rows))]
    gid = {r: k for k, r in enumerate(sorted(set(roots)))}
    groups = [gid[r] for r in roots]
    assignment = assign(rows, groups)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "busi.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "label", "group", "split", "fold"])
        for r, g, (s, k) in zip(rows, groups, assignment):
            w.writerow([r["case"], r["label"], f"g{g:03d}", s, k])
    with open(args.out / "busi_duplicate_pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_a", "case_b", "test", "score"])
        for i, j, t, s in pairs:
            w.writerow([rows[i]["case"], rows[j]["case"], t, f"{s:.4f}"])
    # summary
    summary: dict = {"images": len(rows), "groups": len(set(groups)), "pairs": len(pairs),
                     "thresholds": {"ncc_whole": NCC_WHOLE, "ncc_lesion": NCC_LESION, "bbox_size_tol": SIZE_TOL},
                     "seed": SEED, "counts": {}}
    for (s, _), r in zip(assignment, rows):
        summary["counts"].setdefault(s, {}).setdefault(r["label"], 0)
        summary["counts"][s][r["label"]] += 1
    mixed = sum(1 for g in set(groups) if len({rows[i]["label"] for i in range(len(rows)) if groups[i] == g}) > 1)
    summary["groups_with_mixed_labels"] = mixed
    save_examples(args.data, rows, pairs, args.out / "busi_duplicate_examples.png")
    (args.out / "busi_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
