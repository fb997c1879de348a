"""Second-look experiment (not shipped; see EXPERIMENTS.md): checkpoint and threshold chosen on val, then test.

    python -m training.experiments.second_look --run runs/seg_lite0_verify8          # val table
    python -m training.experiments.second_look --run runs/seg_lite0_verify8 --test   # + the chosen one on test

When the shipped segmenter finds nothing, a second model re-segments its own best candidate in a zoomed box; the
candidate is kept when its mean probability reaches t. Every kept checkpoint of the run (model_eNN.pt, train.py
--keep-epochs) and t in --thresholds are scored on the validation split only, by the combined cascade's score
(lesion Dice; a normal image 1 if left empty, else 0). Rule fixed before looking: highest score; ties go to the
higher t (fewer false lesions), then to the later epoch. --test then scores that one choice on the test split.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import torch

from BreastCADxLib.analysis.networks import lesion_unet
from BreastCADxLib.analysis.segmentation import LesionSegmenter
from BreastCADxLib.image import Image
from training.common import load_case, read_split, seg_score


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in run.glob("model_e*.pt") if (m := re.fullmatch(r"model_e(\d+)\.pt", p.name))]
    return sorted(found) or [(0, run / "model.pt")]


def second_model(first: LesionSegmenter, weights: Path) -> LesionSegmenter:
    """The checkpoint behind the shipped card's input spec and post-processing."""
    net = lesion_unet(pretrained=False)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return LesionSegmenter(first.card, net, first.device.type)


def look_again(look: LesionSegmenter, plane: np.ndarray) -> tuple[np.ndarray, float]:
    """The second model's refined best candidate on a plane and its mean probability."""
    prob = look.probability(plane)
    region = look.candidate(plane, prob, in_box=False)
    return region, float(prob[region].mean()) if region.any() else 0.0


def first_pass(first: LesionSegmenter, cases: list) -> tuple[list[float], list[tuple[int, np.ndarray]]]:
    """The first model's score per image, and (index, image) of the images it left empty."""
    plain, missed = [], []
    for i, (img, ref) in enumerate(cases):
        mask = first.segment(Image(array=img[None])).mask[0]  # the shipped default path
        plain.append(seg_score(mask, ref))
        if not mask.any():
            missed.append((i, img))
    return plain, missed


def cascade(plain: list[float], checked: list[tuple[int, float, float]], t: float) -> np.ndarray:
    """Per-image score when a candidate (index, its score, its mean) is kept at mean >= t."""
    s = np.array(plain)
    for i, score, mean in checked:
        if mean >= t:
            s[i] = score
    return s


def check(look: LesionSegmenter, cases: list, missed: list) -> list[tuple[int, float, float]]:
    out = []
    for i, img in missed:
        region, mean = look_again(look, img)
        out.append((i, seg_score(region, cases[i][1]), mean))
    return out


def score_table(first: LesionSegmenter, looks: list[tuple[int, Path]], cases: list,
                thresholds: list[float]) -> list[dict]:
    """One row per (checkpoint, t) on these cases: score, lesion Dice, normal images given a lesion, looks kept."""
    plain, missed = first_pass(first, cases)
    lesion = np.array([ref.any() for _, ref in cases])
    rows = [{"epoch": None, "t": None, **summarise(np.array(plain), lesion)}]
    for epoch, path in looks:
        checked = check(second_model(first, path), cases, missed)
        rows += [{"epoch": epoch, "t": t, "path": path, **summarise(cascade(plain, checked, t), lesion),
                  "used": f"{sum(m >= t for _, _, m in checked)} of {len(missed)}"} for t in thresholds]
        print(f"epoch {epoch}: candidate means on the {len(missed)} images the first model left empty: "
              + ", ".join(f"{'L' if cases[i][1].any() else 'N'}{m:.2f}" for i, _, m in checked), flush=True)
    return rows


def summarise(scores: np.ndarray, lesion: np.ndarray) -> dict:
    return {"score": float(scores.mean()), "lesion_dice": float(scores[lesion].mean()),
            "normal_with_lesion": int((scores[~lesion] == 0).sum()), "normals": int((~lesion).sum())}


def markdown(rows: list[dict]) -> str:
    lines = ["| checkpoint | t | score | lesion Dice | normal images with a lesion | second look kept on |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        name = "first model alone" if r["epoch"] is None else f"epoch {r['epoch']}"
        t = "-" if r["t"] is None else f"{r['t']:.2f}"
        lines.append(f"| {name} | {t} | {r['score']:.3f} | {r['lesion_dice']:.3f} | "
                     f"{r['normal_with_lesion']} of {r['normals']} | {r.get('used', '-')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="training run folder (model_eNN.pt or model.pt)")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--split", type=Path, default=Path("training/splits/busi.csv"))
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.85, 0.9])
    ap.add_argument("--test", action="store_true", help="score the val-chosen checkpoint and t on the test split")
    args = ap.parse_args()
    rows = read_split(args.split)
    first = LesionSegmenter.from_registry()
    val = [load_case(args.data, r) for r in rows if r["split"] == "val"]
    table = score_table(first, checkpoints(args.run), val, args.thresholds)
    print("val split\n" + markdown(table))
    best = max(table[1:], key=lambda r: (round(r["score"], 6), r["t"], r["epoch"]))
    print(f"chosen on val: epoch {best['epoch']}, t {best['t']}: val score {best['score']:.4f}")
    if args.test:
        test = [load_case(args.data, r) for r in rows if r["split"] == "test"]
        print("test split\n" + markdown(score_table(first, [(best["epoch"], best["path"])], test, [best["t"]])))


if __name__ == "__main__":
    main()
