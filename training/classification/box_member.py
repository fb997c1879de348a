"""Ship the image-level member (a box_cnn run) beside the classifier: fp16 weights + card, and the Platt
calibration of the fused score.

Calibration rows, never test rows:
- two sites: the leave-site-out rows of `training.classification.box_fusion` (each site scored by the feature model
  and the box CNN trained on the other site; automatic, ROI-box and reference masks), pooled;
- one site: its val lesions scored by the feature model fitted on its train rows and the box CNN trained on its
  train rows (`box_cnn --train-roles train --score <site> --score-roles val`), reference and automatic masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from BreastCADxLib.analysis.box_classifier import BOX_MODEL, WHOLE_MODEL
from BreastCADxLib.analysis.calibration import fit_platt, logit
from BreastCADxLib.analysis.cards import ImageCnnCard
from BreastCADxLib.analysis.classifier import fused_logit
from BreastCADxLib.analysis.deep_features import CONTEXT_MARGIN
from BreastCADxLib.analysis.registry import save_card, sha256_of
from training.classification.designs import BlockModel, fit_rows, load
from training.data import SITE_NAMES, citations


def export_box_model(run: Path, folder: Path, sites: list[str], cross_site: dict | None,
                     margins: tuple[float, ...] = (CONTEXT_MARGIN,), view: str = "box") -> dict:
    """runs/<box run>/model.pt -> folder/lesion_box_cnn.pt (float16, weights_only) + its card; `margins`: the
    context margins of the views it is scored on (chosen leave-site-out). View "whole": the whole-image member,
    folder/lesion_whole_cnn.*."""
    model_id = WHOLE_MODEL if view == "whole" else BOX_MODEL
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    weights = folder / f"{model_id}.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, weights)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    args = next(line for line in (run / "run.log").read_text().splitlines() if "args {" in line)
    whole = view == "whole"
    card = {"id": model_id, "weights": weights.name, "sha256": sha256_of(weights),
            "weights_format": "torch state dict, float16 (cast to float32 at load), loaded with weights_only=True",
            "task": "P(malignant) of a breast ultrasound lesion from " + ("the whole image (whole-image fusion "
                    "member: needs no outline)" if whole else "its box crop (image-level fusion member)"),
            "view": view,
            "architecture": {"arch": "lite0", "net": "analysis/networks.py BoxNet: EfficientNet-Lite0 (ImageNet "
                             "init) -> dropout 0.3 -> linear, fine-tuned end to end"},
            "input": ("the whole image of the lesion's frame, letterboxed to a square" if whole else
                      "the lesion's bounding box + a context margin each side (" +
                      ", ".join(f"{m:.0%}" for m in margins) + " of the box side), square") +
                     ", grey in all three channels, 224 x 224, (x - 127) / 128; scored as the mean logit of " +
                     ("it and its mirror" if whole else "these views and their mirrors"),
            "crop_margins": [0.0] if whole else list(margins),
            "training": {"sites": [SITE_NAMES[s] for s in sites], "data_citations": citations(sites),
                         "rows": "benign and malignant images of the "
                         "train+val splits (" + ("a window of 80-100 % of each side" if whole else
                                                 "reference box with jittered edges and margin") +
                         ", scanner-imitating augmentation p 0.5, mirror)",
                         "schedule": "fixed before any scoring: AdamW lr 3e-4 "
                         "(head 9e-4), cosine, 14 epochs, batch 16, bf16 autocast + channels_last on 2 CPU cores",
                         "epochs": len(log), "minutes": round(sum(r["minutes"] for r in log), 1),
                         "final_loss": log[-1]["loss"], "run": args.split(" args ", 1)[-1],
                         "command": f"python -m training.classification.box_cnn --train {','.join(sites)} --score "
                                    f"none --bf16 --epochs 14 {'--view whole ' if whole else ''}--out {run}"},
            "cross_site": cross_site,
            "intended_use": "Research only; not for diagnosis."}
    save_card(folder, ImageCnnCard.from_json(card))
    return card


def lso_calibration(rows: Path, weight: float, whole_weight: float = 0.0) -> tuple[dict, str, np.ndarray, np.ndarray]:
    z = np.load(rows, allow_pickle=False)
    keys = sorted({k.rsplit(":", 1)[0] for k in z.files})
    if whole_weight and not all(f"{k}:whole" in z.files for k in keys):
        raise SystemExit(f"{rows} has no whole-image member scores (box_fusion --whole-a/--whole-b)")
    fused = np.concatenate([fused_logit(z[f"{k}:design"], z[f"{k}:box"], weight,
                                        z[f"{k}:whole"] if whole_weight else None, whole_weight) for k in keys])
    y = np.concatenate([z[f"{k}:label"] for k in keys])
    p = 1 / (1 + np.exp(-fused))
    return fit_platt(p, y), f"leave-site-out rows of {rows} ({', '.join(keys)}), pooled", p, y


def val_calibration(site: str, blocks: tuple[str, ...], c: float, box_run: Path, seg_pass: str, weight: float,
                    kinds: tuple[str, ...] = ("reference", "perturbed"), own: dict[str, str] | None = None,
                    whole_run: Path | None = None, whole_weight: float = 0.0
                    ) -> tuple[dict, str, np.ndarray, np.ndarray]:
    fit = fit_rows([site], kinds, own)
    keep = fit["split"] == "train"
    model = BlockModel(blocks, c).fit({k: (v[keep] if isinstance(v, np.ndarray) and len(v) == len(keep) else v)
                                       for k, v in fit.items()})
    scores = np.load(box_run / "scores.npz", allow_pickle=False)
    whole: dict | None = None
    if whole_weight:
        if whole_run is None:
            raise SystemExit("a whole-image member needs its run trained on the train rows (--whole-val-run)")
        w = np.load(whole_run / "scores.npz", allow_pickle=False)
        whole = dict(zip(w["whole_case"].tolist(), w["whole_prob"].tolist()))
    p_all, y_all = [], []
    for kind in ("reference", "expect"):
        d = load(site, kind, seg_pass if kind == "expect" else None)
        box = dict(zip(scores[f"{kind}_case"].tolist(), scores[f"{kind}_prob"].tolist()))
        rows = np.array([c in box and (whole is None or c in whole) and s == "val"
                         for c, s in zip(d["case"].tolist(), d["split"].tolist())])
        ids = d["case"][rows].tolist()
        z = fused_logit(logit(model.proba(d)[rows]), logit([box[c] for c in ids]), weight,
                        logit([whole[c] for c in ids]) if whole is not None else None, whole_weight)
        p_all.append(1 / (1 + np.exp(-z)))
        y_all.append(d["label"][rows])
    p, y = np.concatenate(p_all), np.concatenate(y_all)
    return fit_platt(p, y), (f"{site} val lesions (reference and automatic masks) scored by members fitted on its "
                             "train rows"), p, y
