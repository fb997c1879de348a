"""An image-level malignancy classifier on the lesion's box crop (no mask channel), fine-tuned end to end, scored
on the other site: does a network that looks at the pixels around the lesion transfer better than features of
an outline?

    python -m training.classification.box_cnn --train busi --score busbra_l5 \
        --pass runs/site_pass/seg_A__busbra_l5__train+val.npz --bf16 --out runs/box_A --resume

Training rows: every benign/malignant image of the train sites' train+val splits; the crop is the lesion's
reference box with jittered edges (+-12 % of the side) and margin (0.10-0.45), on an image first passed through
the scanner-imitating augmentation (training/augment.py), flipped left-right at random. The schedule is fixed
before any scoring (no epoch is chosen on the scored site): AdamW, cosine learning rate, `--epochs`.
Scored each `--score-every` epochs and at the end on the other site's train+val lesions with boxes from the
reference outline, from the segmenter pass's automatic mask (`expect`) and its ROI-box mask (`roi`); the
per-case probabilities go to OUT/scores.npz for the fusion check (training.classification.leave_site_out).
CPU by design: --bf16 autocast + channels_last; a checkpoint after every epoch, --resume continues it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from BreastCADxLib.analysis.box_classifier import box_views
from BreastCADxLib.analysis.deep_features import CONTEXT_MARGIN, roi_crop
from BreastCADxLib.analysis.networks import ARCHS, BoxNet
from BreastCADxLib.analysis.preprocessing import mask_bbox
from BreastCADxLib.image import Image
from training.augment import ScannerAugment
from training.common import write_finished
from training.data import Case, add_data_args, cases
from training.segmentation.site_pass import load_pass

# options added after the first runs: at these values a run's arguments read as before (resume, cards)
LATER_OPTIONS = {"seed": 0, "box_jitter": 0.12, "train_margin": "0.10,0.45",
                 "eval_margins": str(CONTEXT_MARGIN), "view": "box", "target": "malignancy", "fold": -1}


def target_of(c: Case, target: str) -> int:
    """malignancy: malignant (1) vs benign; presence: a lesion (1) vs a normal image."""
    return int(c.malignant) if target == "malignancy" else int(c.label != "normal")


def margins_of(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    m[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)] = True
    return m


def whole_box(shape: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """View "whole" in training: a window of 80-100 % of each side (field-of-view changes); scored on the whole
    image (analysis.box_classifier.box_views)."""
    h, w = shape
    fw, fh = rng.uniform(0.8, 1.0, size=2)
    x0, y0 = int(rng.uniform(0, 1 - fw) * w), int(rng.uniform(0, 1 - fh) * h)
    return x0, y0, x0 + int(fw * w), y0 + int(fh * h)


def train_crop(img: np.ndarray, ref: np.ndarray, aug: ScannerAugment, rng: np.random.Generator,
               jitter: float = 0.12, margin: tuple[float, float] = (0.10, 0.45), view: str = "box") -> torch.Tensor:
    """Reference box, each edge moved by up to `jitter` of the side (an automatic outline's box errs too); view
    "whole": the whole image, no lesion box at all."""
    img, ref = aug(img, ref)
    if view == "whole":
        t = roi_crop(Image(array=img[None]), box_mask(img.shape, whole_box(img.shape, rng))[None], margin=0.0,
                     kind="box").tensor
        return t.flip(-1) if rng.random() < 0.5 else t
    x0, y0, x1, y1 = mask_bbox(ref)
    w, h = x1 - x0, y1 - y0
    j = rng.uniform(-jitter, jitter, size=4) * np.array([w, h, w, h])
    box = (int(x0 + j[0]), int(y0 + j[1]), int(x1 + j[2]), int(y1 + j[3]))
    if box[2] - box[0] < 4 or box[3] - box[1] < 4:
        box = (x0, y0, x1, y1)
    t = roi_crop(Image(array=img[None]), box_mask(img.shape, box)[None], margin=rng.uniform(*margin),
                 kind="box").tensor
    return t.flip(-1) if rng.random() < 0.5 else t


def eval_crop(img: np.ndarray, mask: np.ndarray, margins: tuple[float, ...] = (CONTEXT_MARGIN,)) -> torch.Tensor:
    """The product's views of a lesion (analysis.box_classifier.box_views): margins x mirror."""
    return box_views(Image(array=img[None]), mask[None], margins)


@torch.inference_mode()
def predict(model: nn.Module, crops: list[torch.Tensor], bf16: bool) -> np.ndarray:
    """P(malignant) per case: the mean logit over each case's views."""
    model.eval()
    out = []
    per = max(1, 32 // len(crops[0])) if crops else 1
    for i in range(0, len(crops), per):
        views = crops[i:i + per]
        x = torch.cat(views)
        if bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logit = model(x).float()
        out.append(torch.sigmoid(logit.view(len(views), -1).mean(1)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def score_sets(todo: list[Case], passed: dict, margins: tuple[float, ...] = (CONTEXT_MARGIN,), view: str = "box",
               target: str = "malignancy") -> dict[str, tuple[list[str], np.ndarray, list[torch.Tensor]]]:
    """kind -> (cases, labels, crops) for the scored site; automatic kinds skip cases with an empty mask; view
    "whole": one kind, `whole` (the whole image)."""
    sets: dict[str, tuple[list[str], list[int], list[torch.Tensor]]] = {}
    for c in todo:
        img, ref = c.load()
        if view == "whole":
            ids, labels, crops = sets.setdefault("whole", ([], [], []))
            ids.append(c.case)
            labels.append(target_of(c, target))
            crops.append(box_views(Image(array=img[None]), ref[None], view="whole"))  # the product's view
            continue
        masks = {"reference": ref}
        if c.case in passed:
            masks |= {k: passed[c.case][k].astype(bool) for k in ("expect", "roi")}
        for kind, m in masks.items():
            if m.any():
                ids, labels, crops = sets.setdefault(kind, ([], [], []))
                ids.append(c.case)
                labels.append(int(c.malignant))
                crops.append(eval_crop(img, m, margins))
    return {k: (ids, np.array(lab), crops) for k, (ids, lab, crops) in sets.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--train", default="busi,busbra_l5,busuclm", help="comma-separated train sites")
    ap.add_argument("--train-roles", default="train,val", help="split roles of the train sites used for training")
    ap.add_argument("--score", default="none", help="the site scored ('none': no scoring; never test rows)")
    ap.add_argument("--score-roles", default="train,val")
    ap.add_argument("--pass", dest="pass_file", type=Path, help="segmenter pass NPZ of the scored site")
    ap.add_argument("--arch", default="lite0", choices=sorted(ARCHS))
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--scanner-aug", type=float, default=0.5)
    ap.add_argument("--score-every", type=int, default=2)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time-limit-min", type=float, default=0)
    ap.add_argument("--seed", type=int, default=0, help="another seed: another member of an ensemble")
    ap.add_argument("--box-jitter", type=float, default=0.12, help="edge jitter of the training box (x side)")
    ap.add_argument("--train-margin", default="0.10,0.45", help="context margin range of the training crops")
    ap.add_argument("--eval-margins", default=str(CONTEXT_MARGIN), help="context margins of the scored views")
    ap.add_argument("--target", choices=["malignancy", "presence"], default="malignancy",
                    help="presence: lesion vs normal image, normal images included (with --view whole)")
    ap.add_argument("--fold", type=int, default=-1,
                    help="out-of-fold: train on the train sites' other folds, score this fold (its normals too)")
    ap.add_argument("--view", choices=["box", "whole"], default="box",
                    help="what the network sees: the lesion's box crop, or the whole image (an image-level member)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "run.log"

    def say(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}"
        print(line, flush=True)
        with open(log, "a") as f:
            f.write(line + "\n")

    presence = args.target == "presence"
    if presence and args.view != "whole":
        raise SystemExit("--target presence needs --view whole (a normal image has no lesion box)")
    train = cases(args, args.train.split(","), tuple(args.train_roles.split(",")), lesions_only=not presence)
    if "test" in args.train_roles or "test" in args.score_roles:
        raise SystemExit("test rows are for the final report only")
    held_out: list[Case] = []
    if args.fold >= 0:  # out-of-fold: train on the other folds of the train sites, score this one
        held_out = [c for c in train if c.fold == args.fold]
        train = [c for c in train if c.fold != args.fold]
    data = [(c.load(), float(target_of(c, args.target))) for c in train]
    model = BoxNet(args.arch)
    if args.bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([{"params": model.trunk.parameters(), "lr": args.lr},
                             {"params": model.score.parameters(), "lr": args.lr * 3}], weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(data) / args.batch)
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    pos = sum(y for _, y in data)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(data) - pos) / max(pos, 1)))
    run_args = {k: str(v) for k, v in vars(args).items() if k not in ("resume", "time_limit_min", "threads")
                and LATER_OPTIONS.get(k, object()) != v}
    train_margin = margins_of(args.train_margin)
    ckpt_path, first, spent = args.out / "checkpoint.pt", 1, 0.0
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if json.loads(ck["args"]) != run_args:
            raise SystemExit(f"--resume with other arguments than the run in {args.out}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        first, spent = int(ck["epoch"]) + 1, float(ck["spent"])
    budget = f"{args.time_limit_min:g} min this session" if args.time_limit_min else "no time limit"
    say(f"{'resume at epoch ' + str(first) if first > 1 else 'start'}: {len(data)} training images "
        f"({int(pos)} {'with a lesion' if presence else 'malignant'}) from {args.train}; {args.epochs} epochs; "
        f"budget {budget}; {spent / 60:.1f} min "
        f"spent before; bf16 {args.bf16}; args {run_args}")
    passed = load_pass(args.pass_file) if args.pass_file else {}
    to_score = held_out if args.fold >= 0 else [] if args.score == "none" else \
        cases(args, [args.score], tuple(args.score_roles.split(",")), lesions_only=not presence)
    scored = score_sets(to_score, passed, margins_of(args.eval_margins), args.view, args.target) if to_score else {}
    rng = np.random.default_rng(first + 1000 * args.seed)
    aug = ScannerAugment(args.scanner_aug, seed=first + 1000 * args.seed)
    t0 = time.time()
    for epoch in range(first, args.epochs + 1):
        model.train()
        te, losses = time.time(), []
        order = rng.permutation(len(data))
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            x = torch.stack([train_crop(*data[j][0], aug, rng, args.box_jitter, train_margin, args.view)
                             for j in idx])
            y = torch.tensor([data[j][1] for j in idx])
            if args.bf16:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logit = model(x).float()
            loss = loss_fn(logit, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        spent += time.time() - te
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "minutes": round((time.time() - te) / 60, 2)}
        if scored and (epoch % args.score_every == 0 or epoch == args.epochs):
            probs = {}
            for kind, (ids, labels, crops) in scored.items():
                probs[kind] = predict(model, crops, args.bf16)
                row[f"auc_{kind}"] = round(float(roc_auc_score(labels, probs[kind])), 4)
                row[f"n_{kind}"] = len(ids)
            if epoch == args.epochs:
                np.savez_compressed(args.out / "scores.npz", **{f"{k}_case": np.array(scored[k][0]) for k in probs},
                                    **{f"{k}_prob": v for k, v in probs.items()},
                                    **{f"{k}_label": scored[k][1] for k in probs})
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch, "spent": spent, "args": json.dumps(run_args)}, ckpt_path)
        with open(args.out / "train_log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        say(f"epoch {epoch}: {row}")
        if epoch == args.epochs:
            torch.save(model.state_dict(), args.out / "model.pt")
            say(f"done: {spent / 60:.1f} min of training in all")
            write_finished(args.out, {"epochs": args.epochs, "minutes": round(spent / 60, 1)})
        elif args.time_limit_min and time.time() - t0 > args.time_limit_min * 60:
            say(f"time limit reached after epoch {epoch}; continue with --resume")
            break


if __name__ == "__main__":
    main()
