"""Small helpers shared by the training and benchmark scripts."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image


def read_split(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def load_case(data: Path, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """BUSI image (uint8 grey) and reference mask (bool) for one split row."""
    img = np.asarray(Image.open(data / row["label"] / f"{row['case']}.png").convert("L"))
    msk = np.asarray(Image.open(data / row["label"] / f"{row['case']}_mask.png").convert("L")) > 127
    return img, msk


def seg_score(mask: np.ndarray, ref: np.ndarray) -> float:
    """Segmentation model-selection score of one image: lesion Dice; normal image: 1 if empty, else 0."""
    if not ref.any():
        return float(not mask.any())
    return float(2 * np.logical_and(mask, ref).sum() / (mask.sum() + ref.sum()))


def seg_summary(preds: list[np.ndarray], refs: list[np.ndarray]) -> dict:
    """Mean score, mean lesion Dice and the share of normal images given a lesion."""
    scores = [seg_score(p, r) for p, r in zip(preds, refs)]
    lesion = [s for s, r in zip(scores, refs) if r.any()]
    normal = [s for s, r in zip(scores, refs) if not r.any()]
    return {"score": float(np.mean(scores)), "lesion_dice": float(np.mean(lesion)),
            "normal_fp_rate": float(1 - np.mean(normal)) if normal else 0.0}


FINISHED = "finished.json"  # a training run's marker: written once, when its last epoch is done


def write_finished(run: Path, summary: dict) -> None:
    """Mark a resumable run as complete (training.pipeline reads this file, not the log's text)."""
    (run / FINISHED).write_text(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **summary},
                                           indent=1) + "\n")


def export_fp16(run: Path, weights: Path) -> tuple[dict, dict, dict]:
    """runs/X/model.pt -> fp16 state dict at `weights`; returns (fp32 state, best.json, card header)."""
    import json

    import torch

    from BreastCADxLib.analysis.registry import sha256_of

    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, weights)
    best = json.loads((run / "best.json").read_text())
    header = {"weights": weights.name, "sha256": sha256_of(weights),
              "weights_format": "torch state dict, float16 (cast to float32 at load), loaded with weights_only=True"}
    return state, best, header
