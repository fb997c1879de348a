"""Train the BUSI lesion segmenter (MONAI FlexibleUNet + EfficientNet-Lite0 encoder).

Reproduces BreastCADx/Resources/Models/lesion_seg_lite0.pt:
    python -m training.segmentation.train --data ../shared/data/busi --out runs/seg_lite0

Train split only for fitting; validation split for model selection (best mean Dice,
empty-vs-empty counted as 1); the test split is never read here. Seeded; CUDA when present.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import set_determinism

from BreastCADxLib.image import Image
from BreastCADxLib.networks import baseline_unet, lesion_unet
from BreastCADxLib.preprocessing import expand_box, mask_bbox, network_input, resize_plane
from BreastCADxLib.segmentation import DEFAULT_MODEL
from training.common import load_case, read_split, seg_summary


class Speckle:
    """Multiplicative speckle-like noise, img * (1 + N(0, s)), s ~ U(0, max_sigma)."""

    def __init__(self, prob: float = 0.4, max_sigma: float = 0.25, seed: int = 0) -> None:
        self.prob, self.max_sigma = prob, max_sigma
        self.rng = np.random.default_rng(seed)

    def __call__(self, d: dict) -> dict:
        if self.rng.random() < self.prob:
            s = self.rng.uniform(0, self.max_sigma)
            noise = torch.from_numpy(self.rng.normal(1.0, s, size=d["image"].shape).astype(np.float32))
            d["image"] = d["image"] * noise
        return d


def augmentations(seed: int) -> Compose:
    tx = Compose(
        [
            RandFlipd(keys=["image", "label"], spatial_axis=1, prob=0.5),  # left-right only: skin stays on top
            RandAffined(
                keys=["image", "label"],
                prob=0.7,
                rotate_range=math.radians(15),
                scale_range=(0.2, 0.2),
                translate_range=(0.08, 0.08),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandAdjustContrastd(keys="image", prob=0.5, gamma=(0.6, 1.6)),
            RandScaleIntensityd(keys="image", prob=0.5, factors=0.25),
            RandShiftIntensityd(keys="image", prob=0.5, offsets=25.0),
            Speckle(prob=0.4, seed=seed),
            RandGaussianSmoothd(keys="image", prob=0.25, sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2)),
            RandGaussianNoised(keys="image", prob=0.3, std=6.0),
        ]
    )
    tx.set_random_state(seed=seed)
    return tx


def sample(img: np.ndarray, msk: np.ndarray, size: int, rng: np.random.Generator, roi_prob: float,
           random_crop_prob: float = 0.0) -> dict:
    """Optional ROI-prompt crop (lesion box + random margin) or a random crop anywhere (the box may hold no
    lesion, so zoomed-in views learn to stay empty), then resize to size x size."""
    box = mask_bbox(msk)
    u = rng.random() if box is not None or random_crop_prob else 1.0  # shipped runs: the same random stream
    if box is not None and u < roi_prob:
        x0, y0, x1, y1 = expand_box(box, rng.uniform(0.05, 0.6), msk.shape)
        img, msk = img[y0:y1, x0:x1], msk[y0:y1, x0:x1]
    elif random_crop_prob and u >= 1.0 - random_crop_prob:
        rows, cols = msk.shape
        h, w = int(rows * rng.uniform(0.15, 0.6)), int(cols * rng.uniform(0.15, 0.6))
        y0, x0 = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
        img, msk = img[y0:y0 + h, x0:x0 + w], msk[y0:y0 + h, x0:x0 + w]
    t_img = resize_plane(torch.from_numpy(img.astype(np.float32)), (size, size))
    t_msk = resize_plane(torch.from_numpy(msk.astype(np.float32)), (size, size), mode="nearest")
    return {"image": t_img[None], "label": t_msk[None]}


@torch.no_grad()
def evaluate(model: torch.nn.Module, cases: list, size: int, device: torch.device) -> dict:
    model.eval()
    preds = []
    for img, msk in cases:
        x = network_input(resize_plane(torch.from_numpy(img.astype(np.float32)), (size, size)))
        logit = model(x[None].to(device))[0, 0].cpu()
        preds.append((resize_plane(torch.sigmoid(logit), msk.shape) > 0.5).numpy())
    return seg_summary(preds, [m for _, m in cases])


def presence_loss(logits: torch.Tensor, y: torch.Tensor, top: float = 0.002) -> torch.Tensor:
    """Image-level BCE on the mean of each image's top logits: lesion present or not. Hard-negative mining for
    the presence gate (a normal image's hottest pixels, not its average, decide whether a lesion is reported)."""
    flat = logits.flatten(1)
    k = max(1, int(top * flat.shape[1]))
    score = flat.topk(k, dim=1).values.mean(dim=1)
    target = (y.flatten(1).amax(dim=1) > 0).float()
    return torch.nn.functional.binary_cross_entropy_with_logits(score, target)


def evaluate_deployed(model: torch.nn.Module, cases: list, size: int, device: torch.device) -> dict:
    """The same score through the shipped inference path: flip TTA, the shipped card's post-processing, cascade."""
    from BreastCADxLib.models import load_card
    from BreastCADxLib.segmentation import LesionSegmenter

    card = load_card(DEFAULT_MODEL)
    card["input"] = {**card["input"], "height": size, "width": size}
    seg = LesionSegmenter(card, model, device.type)
    summary = seg_summary([seg.segment(Image(array=img)).mask[0] for img, _ in cases], [m for _, m in cases])
    peaks = np.array([seg.probability(img).max() for img, _ in cases])
    present = np.array([m.any() for _, m in cases])
    # presence AUC of the whole-image peak (what the gate thresholds); ties count half
    pos, neg = peaks[present][:, None], peaks[~present][None, :]
    summary["presence_auc"] = float(((pos > neg) + 0.5 * (pos == neg)).mean()) if neg.size and pos.size else 0.0
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--split", type=Path, default=Path("training/splits/busi.csv"))
    ap.add_argument("--out", type=Path, default=Path("runs/seg_lite0"))
    ap.add_argument("--arch", choices=["lite0", "unet"], default="lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--roi-prob", type=float, default=0.3, help="share of samples cropped like a ROI prompt")
    ap.add_argument("--time-limit-min", type=float, default=0, help="stop after this many minutes (0 = none)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--init", type=Path, help="start from these weights (stage-2 fine-tuning)")
    ap.add_argument("--ema", type=float, default=0.0, help="evaluate and save an EMA of the weights (decay/step)")
    ap.add_argument("--presence-weight", type=float, default=0.0,
                    help="weight of an image-level lesion-present loss on the top logits (0 = off)")
    ap.add_argument("--random-crop-prob", type=float, default=0.0,
                    help="share of samples cropped at random (with or without lesion)")
    ap.add_argument("--normal-repeat", type=int, default=1, help="show each normal image this many times per epoch")
    ap.add_argument("--keep-epochs", action="store_true", help="also save every epoch's weights (model_eNN.pt)")
    ap.add_argument("--select", choices=["raw", "deployed"], default="raw",
                    help="model selection on the raw 0.5 threshold or through the shipped inference path")
    args = ap.parse_args()

    set_determinism(seed=args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = read_split(args.split)
    train = [load_case(args.data, r) for r in rows if r["split"] == "train"]
    val = [load_case(args.data, r) for r in rows if r["split"] == "val"]
    model = lesion_unet(pretrained=True) if args.arch == "lite0" else baseline_unet()
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    pool = [i for i, (_, m) in enumerate(train) for _ in range(1 if m.any() else args.normal_repeat)]
    steps_per_epoch = math.ceil(len(pool) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.1)
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    ema = None
    if args.ema:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema), use_buffers=True)
    aug = augmentations(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "train_log.csv"
    with open(log_path, "w") as f:
        f.write("epoch,seconds,train_loss,val_score,val_lesion_dice,val_normal_fp_rate,val_presence_auc,lr\n")
    best, t0 = -1.0, time.time()
    print(f"{len(train)} train / {len(val)} val on {device}", flush=True)
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = rng.permutation(pool)
        losses = []
        for s in range(steps_per_epoch):
            idx = order[s * args.batch : (s + 1) * args.batch]
            batch = [aug(sample(*train[i], args.size, rng, args.roi_prob, args.random_crop_prob)) for i in idx]
            x = torch.stack([network_input(b["image"][0].clamp(0, 255)) for b in batch]).to(device)
            y = torch.stack([(b["label"] > 0.5).float() for b in batch]).to(device)
            logits = model(x)
            loss = loss_fn(logits, y)
            if args.presence_weight:
                loss = loss + args.presence_weight * presence_loss(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(loss.item())
        net = ema.module if ema is not None else model
        m = (evaluate_deployed if args.select == "deployed" else evaluate)(net, val, args.size, device)
        elapsed = time.time() - t0
        with open(log_path, "a") as f:
            auc = m.get("presence_auc", float("nan"))
            f.write(f"{epoch},{elapsed:.0f},{np.mean(losses):.4f},{m['score']:.4f},{m['lesion_dice']:.4f},"
                    f"{m['normal_fp_rate']:.4f},{auc:.4f},{sched.get_last_lr()[0]:.2e}\n")
        print(f"epoch {epoch} loss {np.mean(losses):.4f} val {m} {elapsed:.0f}s", flush=True)
        if args.keep_epochs:  # for probes that select on another role than this run's score
            torch.save(net.state_dict(), args.out / f"model_e{epoch:02d}.pt")
        if m["score"] > best:
            best = m["score"]
            torch.save(net.state_dict(), args.out / "model.pt")
            (args.out / "best.json").write_text(json.dumps({"epoch": epoch, **m, "args": {
                k: str(v) for k, v in vars(args).items()}}, indent=2))
        if args.time_limit_min and elapsed > args.time_limit_min * 60:
            print("time limit reached", flush=True)
            break


if __name__ == "__main__":
    main()
