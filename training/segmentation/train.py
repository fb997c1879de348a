"""Train the lesion segmenter (MONAI FlexibleUNet + EfficientNet-Lite0/Lite2 encoder) on one or both sites.

    python -m training.segmentation.train --sites busi --out runs/seg_lite0           # the BUSI-only recipe
    python -m training.segmentation.train --sites busi,busbra_l5 --scanner-aug 0.3 --negative-crop-prob 0.15 \
        --bf16 --out runs/seg_two_site

Train splits only for fitting; the validation splits of --val-sites for model selection (mean Dice,
empty-vs-empty counted as 1); test splits are never read here. Seeded; CUDA when present.
CPU by design: --bf16 (autocast + channels_last) halves the step time on AVX-512-BF16 CPUs; a checkpoint is
written after every epoch and --resume continues a run cut by --time-limit-min (or a killed session) where it
stopped, with the same schedule; every start and resume is logged in run.log with its time budget.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
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

from BreastCADxLib.analysis.networks import baseline_unet, lesion_unet
from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox, network_input, resize_plane
from BreastCADxLib.analysis.registry import load_card
from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL, LesionSegmenter
from BreastCADxLib.image import Image
from training.augment import ScannerAugment, negative_crop
from training.common import seg_summary, write_finished
from training.data import add_data_args, cases


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
    card = load_card(DEFAULT_MODEL)
    card = replace(card, input={**card.input, "height": size, "width": size})
    seg = LesionSegmenter(card, model, device.type)
    summary = seg_summary([seg.segment(Image(array=img)).mask[0] for img, _ in cases], [m for _, m in cases])
    peaks = np.array([seg.probability(img).max() for img, _ in cases])
    present = np.array([m.any() for _, m in cases])
    # presence AUC of the whole-image peak (what the gate thresholds); ties count half
    pos, neg = peaks[present][:, None], peaks[~present][None, :]
    summary["presence_auc"] = float(((pos > neg) + 0.5 * (pos == neg)).mean()) if neg.size and pos.size else 0.0
    return summary


def aug_states(aug: Compose) -> list:
    """The random states of every augmentation step, as plain Python values (a checkpoint loads weights_only)."""
    out = []
    for t in aug.transforms:
        if isinstance(t, Speckle):
            out.append(t.rng.bit_generator.state)
        else:
            name, keys, pos, has_gauss, cached = t.R.get_state()
            out.append([name, keys.tolist(), pos, has_gauss, cached])
    return out


def set_aug_states(aug: Compose, states: list) -> None:
    for t, st in zip(aug.transforms, states):
        if isinstance(t, Speckle):
            t.rng.bit_generator.state = st
        else:
            t.R.set_state((st[0], np.array(st[1], dtype=np.uint32), *st[2:]))


def main() -> None:
    # the defaults are the shipped three-site recipe (training/pipeline.py); experiments say what they change
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--sites", default="busi,busbra_l5,busuclm", help="training sites (train split of each)")
    ap.add_argument("--val-sites", default="", help="sites whose val split selects the model (default: --sites)")
    ap.add_argument("--out", type=Path, default=Path("runs/seg_ABC"))
    ap.add_argument("--arch", choices=["lite0", "lite2", "unet"], default="lite0")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--roi-prob", type=float, default=0.3, help="share of samples cropped like a ROI prompt")
    ap.add_argument("--time-limit-min", type=float, default=0,
                    help="stop after the epoch that passes this many minutes of this session (0 = none)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--init", type=Path, help="start from these weights (stage-2 fine-tuning)")
    ap.add_argument("--ema", type=float, default=0.0, help="evaluate and save an EMA of the weights (decay/step)")
    ap.add_argument("--presence-weight", type=float, default=0.0,
                    help="weight of an image-level lesion-present loss on the top logits (0 = off)")
    ap.add_argument("--random-crop-prob", type=float, default=0.0,
                    help="share of samples cropped at random (with or without lesion)")
    ap.add_argument("--negative-crop-prob", type=float, default=0.15,
                    help="share of samples replaced by a lesion-free crop of the same image (hard negatives)")
    ap.add_argument("--scanner-aug", type=float, default=0.3, help="probability of each scanner-imitating step")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="bfloat16 autocast + channels_last (CPU)")
    ap.add_argument("--normal-repeat", type=int, default=1, help="show each normal image this many times per epoch")
    ap.add_argument("--keep-epochs", action="store_true", help="also save every epoch's weights (model_eNN.pt)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    ap.add_argument("--select", choices=["raw", "deployed"], default="raw",
                    help="model selection on the raw 0.5 threshold or through the shipped inference path")
    args = ap.parse_args()

    set_determinism(seed=args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sites = args.sites.split(",")
    train = [c.load() for c in cases(args, sites, ("train",))]
    val = [c.load() for c in cases(args, (args.val_sites or args.sites).split(","), ("val",))]
    model = baseline_unet() if args.arch == "unet" else lesion_unet(pretrained=True, arch=args.arch)
    if args.init:
        model.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    model = model.to(device)
    if args.bf16:
        model = model.to(memory_format=torch.channels_last)
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
    scanner = ScannerAugment(args.scanner_aug, seed=args.seed + 1)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path, ckpt_path = args.out / "train_log.csv", args.out / "checkpoint.pt"
    run_args = {k: str(v) for k, v in vars(args).items() if k not in ("resume", "time_limit_min", "threads")}
    best, first_epoch, spent = -1.0, 1, 0.0
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck["args"] != run_args:
            raise SystemExit(f"--resume with other arguments than the run in {args.out}: {ck['args']}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        rng.bit_generator.state, scanner.rng.bit_generator.state = ck["rng"]
        set_aug_states(aug, ck["aug"])
        best, first_epoch, spent = ck["best"], ck["epoch"] + 1, ck["seconds"]
    else:
        with open(log_path, "w") as f:
            f.write("epoch,seconds,train_loss,val_score,val_lesion_dice,val_normal_fp_rate,val_presence_auc,lr\n")
    budget = f"{args.time_limit_min:g} min this session" if args.time_limit_min else "no time limit"
    with open(args.out / "run.log", "a") as f:
        what = f"resume at epoch {first_epoch}" if first_epoch > 1 else "start"
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {what} of {args.epochs}; budget {budget}; "
                f"{spent / 60:.1f} min spent before; device {device}{' bf16+channels_last' if args.bf16 else ''}; "
                f"{len(train)} train / {len(val)} val\n")
    t0 = time.time()
    print(f"{len(train)} train / {len(val)} val on {device}, epochs {first_epoch}..{args.epochs}", flush=True)
    for epoch in range(first_epoch, args.epochs + 1):
        model.train()
        order = rng.permutation(pool)
        losses = []
        for s in range(steps_per_epoch):
            idx = order[s * args.batch : (s + 1) * args.batch]
            batch = []
            for i in idx:
                img, msk = scanner(*train[i])
                neg = None
                if args.negative_crop_prob and rng.random() < args.negative_crop_prob:
                    neg = negative_crop(img, msk, rng)
                batch.append(aug(sample(*(neg or (img, msk)), args.size, rng, args.roi_prob, args.random_crop_prob)))
            x = torch.stack([network_input(b["image"][0].clamp(0, 255)) for b in batch]).to(device)
            y = torch.stack([(b["label"] > 0.5).float() for b in batch]).to(device)
            if args.bf16:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(x)
            logits = logits.float()
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
        elapsed = spent + time.time() - t0
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
            (args.out / "best.json").write_text(json.dumps({"epoch": epoch, **m, "args": run_args}, indent=2))
        torch.save({"args": run_args, "epoch": epoch, "best": best, "seconds": elapsed, "model": model.state_dict(),
                    "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "aug": aug_states(aug),
                    "rng": [rng.bit_generator.state, scanner.rng.bit_generator.state]}, ckpt_path.with_suffix(".tmp"))
        ckpt_path.with_suffix(".tmp").replace(ckpt_path)
        if args.time_limit_min and time.time() - t0 > args.time_limit_min * 60 and epoch < args.epochs:
            print(f"time limit reached after epoch {epoch}; continue with --resume", flush=True)
            with open(args.out / "run.log", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} stopped by the time limit after epoch {epoch}\n")
            break
    else:
        with open(args.out / "run.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} finished; best val score {best:.4f}\n")
        write_finished(args.out, {"epochs": args.epochs, "best_val_score": best})


if __name__ == "__main__":
    main()
