"""Train a lesion CNN on mask-aware ROI crops: seed 000's MN hybrid (from scratch) or ImageNet Lite0 (fine-tuned).

    python -m training.classification.cnn --arch lite0 --out runs/cnn_lite0
    python -m training.classification.cnn --arch mnhybrid --out runs/cnn_mnhybrid

Fit on the train split's lesions, select the epoch on val (mean AUC with reference masks and with masks
dilated by 3 px, so the choice does not reward reference-outline cues only); test is never read here.
Augmentation aims at other scanners: gamma/contrast/gain, speckle, blur, flips, rotation, crop scale, and
perturbed masks (erode/dilate, smoothed outlines) so the net does not learn the annotators' outline style.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from monai.transforms import RandAffine
from monai.utils import set_determinism
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from BreastCADxLib.analysis.deep_features import roi_crop
from BreastCADxLib.analysis.networks import LesionCNN
from BreastCADxLib.image import Image
from training.common import load_case, read_split


def perturb_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = rng.random()
    size = math.sqrt(mask.sum())
    if r < 0.35:
        return mask
    if r < 0.7:
        it = int(rng.integers(1, max(2, int(0.08 * size) + 1)))
        out = ndimage.binary_dilation(mask, iterations=it) if rng.random() < 0.5 else \
            ndimage.binary_erosion(mask, iterations=it)
        return out if out.sum() >= 16 else mask
    soft = ndimage.gaussian_filter(mask.astype(np.float32), sigma=max(1.0, 0.06 * size))
    out = soft > rng.uniform(0.3, 0.6)
    return out if out.sum() >= 16 else mask


def perturb_image(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    if rng.random() < 0.6:
        x = x ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.5:
        x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean() + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.4:
        x = x * rng.normal(1.0, rng.uniform(0, 0.25), x.shape)
    if rng.random() < 0.25:
        x = ndimage.gaussian_filter(x, rng.uniform(0.3, 1.2))
    if rng.random() < 0.5:
        x = x[:, ::-1]
    return np.clip(x * 255.0, 0, 255).astype(np.float32)


def crops(cases: list, rng: np.random.Generator | None, affine: RandAffine | None) -> torch.Tensor:
    out = []
    for img, msk in cases:
        if rng is not None:
            flip = rng.random() < 0.5
            img, msk = perturb_image(img, rng), perturb_mask(msk, rng)
            if flip:
                img, msk = img[:, ::-1].copy(), msk[:, ::-1].copy()
            t = roi_crop(Image(array=img[None]), msk[None], margin=rng.uniform(0.1, 0.45)).tensor
            out.append(affine(t) if affine is not None else t)
        else:
            out.append(roi_crop(Image(array=img[None]), msk[None]).tensor)
    return torch.stack([torch.as_tensor(t) for t in out])


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 32) -> np.ndarray:
    model.eval()
    return np.concatenate([torch.sigmoid(model(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


FROZEN_LITE0_BLOCKS = 6  # stem + blocks 0-5 (strides 2-8) keep their ImageNet weights: generic edges/texture


def freeze_early_lite0(model: LesionCNN) -> list[torch.nn.Module]:
    """Freeze the high-resolution ImageNet layers (BN statistics too): cheaper on CPU, less overfitting."""
    parts = [model.trunk.stem, *model.trunk.blocks[:FROZEN_LITE0_BLOCKS]]
    for m in parts:
        m.requires_grad_(False)
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["lite0", "mnhybrid"], required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--split", type=Path, default=Path("training/splits/busi.csv"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None, help="default 3e-4 (lite0, head x10) / 2e-3 (mnhybrid)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--time-limit-min", type=float, default=0, help="stop after the epoch that passes it")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_determinism(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    rows = [r for r in read_split(args.split) if r["label"] != "normal"]
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "val"]
    train_cases = [load_case(args.data, r) for r in train]
    y_train = torch.tensor([float(r["label"] == "malignant") for r in train])
    val_cases = [load_case(args.data, r) for r in val]
    y_val = np.array([int(r["label"] == "malignant") for r in val])
    x_val_ref = crops(val_cases, None, None)
    x_val_dil = crops([(i, ndimage.binary_dilation(m, iterations=3)) for i, m in val_cases], None, None)

    model = LesionCNN(args.arch, pretrained=args.arch == "lite0")
    frozen = freeze_early_lite0(model) if args.arch == "lite0" else []
    lr = args.lr or (3e-4 if args.arch == "lite0" else 2e-3)
    head = list(model.fc.parameters())
    trunk = [p for n, p in model.named_parameters() if not n.startswith("fc.") and p.requires_grad]
    head_lr = lr * 10 if args.arch == "lite0" else lr
    opt = torch.optim.AdamW([{"params": trunk, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(train) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, head_lr], total_steps=steps, pct_start=0.15)
    pos_weight = (y_train == 0).sum() / (y_train == 1).sum()
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    affine = RandAffine(prob=0.5, rotate_range=math.radians(15), scale_range=(0.1, 0.1), padding_mode="zeros")
    affine.set_random_state(seed=args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "train_log.csv", "w", newline="")
    writer = csv.writer(log)
    writer.writerow(["epoch", "seconds", "train_loss", "val_auc_reference", "val_auc_dilated", "val_score", "lr"])
    best, t0 = -1.0, time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        for m in frozen:
            m.eval()
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            if len(idx) < 2:
                continue
            x = crops([train_cases[j] for j in idx], rng, affine)
            loss = loss_fn(model(x), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss))
        auc_ref = roc_auc_score(y_val, predict(model, x_val_ref))
        auc_dil = roc_auc_score(y_val, predict(model, x_val_dil))
        score = 0.5 * (auc_ref + auc_dil)
        elapsed = time.perf_counter() - t0
        writer.writerow([epoch, round(elapsed), f"{np.mean(losses):.4f}", f"{auc_ref:.4f}", f"{auc_dil:.4f}",
                         f"{score:.4f}", f"{sched.get_last_lr()[0]:.2e}"])
        log.flush()
        print(f"epoch {epoch} loss {np.mean(losses):.4f} val AUC ref {auc_ref:.4f} dil {auc_dil:.4f} "
              f"{elapsed:.0f} s", flush=True)
        if score > best:
            best = score
            torch.save(model.state_dict(), args.out / "model.pt")
            (args.out / "best.json").write_text(json.dumps(
                {"epoch": epoch, "val_auc_reference": auc_ref, "val_auc_dilated": auc_dil, "score": score,
                 "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
        if args.time_limit_min and elapsed > 60 * args.time_limit_min:
            print(f"time limit reached after epoch {epoch}", flush=True)
            break


if __name__ == "__main__":
    main()
