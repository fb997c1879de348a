"""The generalisation issue's multitask candidate, judged at each held-out site: one encoder with the segmenter's
outline head and a normal / benign / malignant image head, trained jointly.

    python -m training.experiments.multitask --run runs/three-site-train --manifest runs/three_sites.csv

For each site of a finished `breastcadx train --folds site` run, the segmenter fold that never saw it is the
starting point (its encoder and outline head, trained for outlines on the other two sites); an image head is added
on the encoder's last two feature maps, pooled over the whole map and weighted by the outline head's probability,
and the network is trained on the same two sites' images (lesion and lesion-free, the segmenter's own samples and
augmentation) for EPOCHS epochs with the outline loss plus the class loss. A warm start, not a network trained
jointly from ImageNet: that costs the segmenter's 12 epochs again per rotation (about 35 min on 2 cores each).
Resumable (a checkpoint per epoch in RUN/.work/multitask_SITE); `--max-minutes` time-boxes the training.

At the held-out site (non-test rows; nothing fitted there) the image head scores every image whole (presence: 1 -
p(normal); malignancy: p(malignant) / (p(benign) + p(malignant))) and every finding's automatic outline's box +
20 % (malignancy), and the joint outline head goes through the product's path (`segmenter.judge`). Judged:
- malignancy, alone and fused with the shipped automatic-outline bundle (as a third member at 0.1 / 0.2 / 0.3, and
  in place of the whole-image member), with train's gate (`outline_limits.judge_candidates`);
- presence (the two sites with lesion-free views) against the segmenter fold's presence score: AUC, lesions said
  "no lesion found" and lesion-free images shown a lesion at fixed thresholds, and the fewest missed at <= 8 %
  false chosen on the site itself (a ceiling).
Writes benchmarks/results/multitask_candidate.md / .json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from benchmarks.classifier_candidates import alone_table, box_view, finding_planes, third_member
from benchmarks.machine import header, stamp, write_results
from benchmarks.outline_limits import candidate_table, judge_candidates
from benchmarks.presence_cnn_held_out import missed_at_false
from benchmarks.train_weights import run_rows

OUT = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
EPOCHS = 4
BODY_LR = 1e-4  # the trained encoder and outline head: a tenth of the segmenter's rate (checkpoint.FINE_TUNE_LR)
HEAD_LR = 1e-3  # the new image head
DROPOUT = 0.3
MEMBER_WEIGHTS = (0.1, 0.2, 0.3)
CLASSES = ("normal", "benign", "malignant")
TRUNK_WIDTH = 112 + 320  # EfficientNet-Lite0's last two feature maps (networks._ENCODERS)


def multitask_net(unet):
    """The segmenter's FlexibleUNet with an image head: returns (outline logits, class logits)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class MultiTask(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet
            self.head = nn.Sequential(nn.Dropout(DROPOUT), nn.Linear(2 * TRUNK_WIDTH, len(CLASSES)))

        def forward(self, x):
            maps = self.unet.encoder(x)
            seg = self.unet.segmentation_head(self.unet.decoder(maps, self.unet.skip_connect))
            p = torch.sigmoid(seg.detach().float())
            pooled = []
            for f in maps[-2:]:
                f = f.float()
                w = F.adaptive_avg_pool2d(p, f.shape[-2:])
                pooled += [f.mean((2, 3)), (f * w).sum((2, 3)) / (w.sum((2, 3)) + 1e-3)]
            return seg, self.head(torch.cat(pooled, 1))

    return MultiTask()


class JointLoss:
    """The segmenter's DiceCE on the outline plus the (class-weighted) cross-entropy of the image head."""

    def __init__(self, class_weight) -> None:
        import torch
        from monai.losses import DiceCELoss

        self.seg = DiceCELoss(sigmoid=True, batch=True)
        self.ce = torch.nn.CrossEntropyLoss(weight=class_weight)

    def __call__(self, out, target):
        (seg, logits), (mask, cls) = out, target
        return self.seg(seg, mask) + self.ce(logits, cls)


def fold_folders(work: Path) -> dict[str, Path]:
    """{held-out site: its segmenter fold's folder} of a --folds site run."""
    from BreastCADxLib.train.segmenter import _fold_folders

    out = {}
    for folder in _fold_folders(work):
        (site,) = {r["site"] for r in json.loads((folder / "judged.json").read_text())}
        out[site] = folder
    return out


def train_rotation(images: list, classes: dict, init: Path, folder: Path, *, size: int, epochs: int, deadline: float,
                   seed: int):
    """The multitask network on `images` (SegImage) from the fold segmenter's weights; folder/model.pt."""
    import torch

    from BreastCADxLib.analysis.networks import lesion_unet
    from BreastCADxLib.analysis.preprocessing import network_input
    from BreastCADxLib.train import checkpoint
    from BreastCADxLib.train.augment import ScannerAugment
    from BreastCADxLib.train.segmenter import BATCH, SCANNER_AUG, _augment, _sample, epoch_pool

    folder.mkdir(parents=True, exist_ok=True)
    run = {"images": [im.key for im in images], "init": str(init), "epochs": epochs, "size": size, "seed": seed,
           "body_lr": BODY_LR, "head_lr": HEAD_LR}
    if done := checkpoint.finished(folder, run):
        return done
    torch.manual_seed(seed)
    unet = checkpoint.network(lesion_unet(pretrained=False), init, torch.device("cpu"))[0]
    net, bf16 = checkpoint.network(multitask_net(unet), None, torch.device("cpu"))
    pool = epoch_pool(images)
    steps = math.ceil(len(pool) / BATCH)
    counts = np.bincount([classes.get(images[i].key, 0) for i in pool], minlength=len(CLASSES))
    weight = torch.tensor(len(pool) / (len(CLASSES) * np.maximum(counts, 1)), dtype=torch.float32)
    opt = torch.optim.AdamW([{"params": net.unet.parameters(), "lr": BODY_LR},
                             {"params": net.head.parameters(), "lr": HEAD_LR}], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[BODY_LR, HEAD_LR], total_steps=epochs * steps,
                                                pct_start=0.1)
    loss_fn = JointLoss(weight)
    job = checkpoint.Resumable(folder, run, net, opt, sched, epochs=epochs, bf16=bf16,
                               say=lambda m: print(m, flush=True), label=f"multitask {folder.name}",
                               stage="multitask", deadline=deadline)
    for epoch in range(job.start, epochs):
        net.train()
        rng = np.random.default_rng([seed, epoch])
        torch.manual_seed(seed * 1000 + epoch)
        aug = _augment(seed * 1000 + epoch)
        scanner = ScannerAugment(SCANNER_AUG["US"], seed=seed * 1000 + epoch)
        order, losses = rng.permutation(pool), []
        for s in range(steps):
            idx = order[s * BATCH:(s + 1) * BATCH]
            batch = [aug(_sample(images[i], size, rng, False, scanner)) for i in idx]
            x = torch.stack([network_input(b["image"][0].clamp(0, 255)) for b in batch])
            mask = torch.stack([(b["label"] > 0.5).float() for b in batch])
            cls = torch.tensor([classes.get(images[i].key, 0) for i in idx])
            losses.append(job.step(x, (mask, cls), loss_fn))
        job.end_epoch(epoch, losses)
    return job.finish({"epochs": epochs, "samples_per_epoch": int(pool.size), "class_counts": counts.tolist()})


def load_net(weights: Path):
    from BreastCADxLib.analysis.networks import lesion_unet
    from BreastCADxLib.train.checkpoint import load_weights

    return load_weights(multitask_net(lesion_unet(pretrained=False)), weights).eval()


def head_probs(net, views: list) -> np.ndarray:
    """The image head's class probabilities per view (size x size tensors, 0..255); NaN rows for None."""
    import torch

    from BreastCADxLib.analysis.preprocessing import network_input

    out = np.full((len(views), len(CLASSES)), np.nan)
    with torch.no_grad():
        for i, t in enumerate(views):
            if t is not None:
                out[i] = torch.softmax(net(network_input(t.clamp(0, 255))[None])[1], 1)[0].numpy()
    return out


def malignancy(p: np.ndarray) -> np.ndarray:
    return p[:, 2] / np.maximum(p[:, 1] + p[:, 2], 1e-9)


def outline_rows(net, folder: Path, card, images: list) -> list[dict]:
    """The joint outline head through the product's path (segmenter.judge), with the run's card."""
    from dataclasses import replace

    import torch

    from BreastCADxLib.analysis.registry import sha256_of
    from BreastCADxLib.train.segmenter import judge, segmenter

    weights = folder / "outline_head.pt"
    torch.save({k: v.half() for k, v in net.unet.state_dict().items()}, weights)
    card = replace(card, weights=weights.name, sha256=sha256_of(weights), folder=folder)
    return judge(segmenter(card, weights, "cpu"), images)


def presence_cells(finding: np.ndarray, score: np.ndarray, thresholds: tuple) -> dict:
    from sklearn.metrics import roc_auc_score

    return {"auc": float(roc_auc_score(finding, score)),
            "at": {f"{t:.4g}": {"missed": float(np.mean(score[finding] < t)),
                                "false": float(np.mean(score[~finding] >= t))} for t in thresholds},
            "missed_at_8pct_false_site_chosen": missed_at_false(finding, score)}


def main() -> None:
    from BreastCADxLib.analysis.values import to_uint8_range
    from BreastCADxLib.train.members import fuse
    from BreastCADxLib.train.pipeline import read_manifest, summary
    from BreastCADxLib.train.segmenter import seg_images

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `breastcadx train --folds site` folder")
    ap.add_argument("--manifest", type=Path, required=True, help="the manifest it was trained on")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="time box of the training (0: none)")
    ap.add_argument("--name", default="multitask_candidate")
    args = ap.parse_args()
    report = stamp()
    t0 = time.time()
    deadline = t0 + args.max_minutes * 60 if args.max_minutes else float("inf")
    work = args.run / ".work"
    findings, _, normals = read_manifest(args.manifest)
    images = seg_images(findings, normals)
    classes: dict[str, int] = {}
    for f in findings:  # an image's class: its most serious finding's
        classes[str(f.image)] = max(classes.get(str(f.image), 0), f.label + 1)
    card = _card(args.run)
    size, presence = card.input["height"], float(card.postprocessing["presence"])  # the run's own
    folds = fold_folders(work)
    nets = {}
    for k, (site, fold) in enumerate(sorted(folds.items())):
        train = [im for im in images if im.site != site]
        weights = train_rotation(train, classes, fold / "model.pt", work / f"multitask_{site}", size=size,
                                 epochs=args.epochs, deadline=deadline, seed=k + 1)
        nets[site] = (load_net(weights), fold)
    report["training_minutes"] = round((time.time() - t0) / 60, 1)

    r = run_rows(args.run, args.manifest)
    y, sites, groups = r["y"], r["sites"], r["groups"]
    planes = finding_planes(work, r["findings"])
    whole, box = np.full(len(y), 0.5), np.full(len(y), 0.5)
    report["presence"], report["outline_head"] = {}, {}
    for site, (net, fold) in nets.items():
        m = np.flatnonzero(sites == site)
        w = head_probs(net, [box_view(planes[i][0], None, size) for i in m])
        b = head_probs(net, [box_view(planes[i][0], planes[i][2], size) for i in m])
        whole[m] = malignancy(w)
        box[m] = np.where(np.isnan(b[:, 0]), 0.5, malignancy(np.nan_to_num(b)))
        held = [im for im in images if im.site == site]
        judged = {j["image"]: j for j in json.loads((fold / "judged.json").read_text())}
        joint = outline_rows(net, work / f"multitask_{site}", card, held)
        report["outline_head"][site] = {
            "localised_fold": float(np.mean([judged[im.key]["hit"] for im in held if im.has_finding])),
            "localised_joint": float(np.mean([j["hit"] for j in joint if j["finding"]]))}
        finding = np.array([im.has_finding for im in held])
        if finding.all():
            continue
        head = 1 - head_probs(net, [box_view(to_uint8_range(im.plane).astype(np.float32), None, size)
                                    for im in held])[:, 0]
        seg_score = np.array([judged[im.key]["score"] for im in held])
        joint_score = np.array([j["score"] for j in joint])
        report["presence"][site] = {
            "images": int(len(held)), "lesion_images": int(finding.sum()),
            "segmenter fold (the product's presence score)": presence_cells(finding, seg_score, (presence, 0.5)),
            "joint outline head's presence score": presence_cells(finding, joint_score, (presence, 0.5)),
            "image head, 1 - p(normal)": presence_cells(finding, head, (0.5,)),
            "mean of segmenter fold and image head": presence_cells(finding, (seg_score + head) / 2, (0.5,))}
        print(f"multitask: {site} scored", flush=True)
    report["alone"] = {name: {s: summary(y[sites == s], p[sites == s], groups[sites == s]) for s in sorted(set(sites))}
                       for name, p in (("whole", whole), ("box", box), ("mean", (whole + box) / 2))}
    cv = r["cv"]
    auto = {"shipped": (r["automatic"], "the shipped automatic-outline bundle")}
    for name, q in (("whole", whole), ("box", box)):
        for wt in MEMBER_WEIGHTS:
            auto[f"multitask {name} at {wt}"] = (third_member(r["automatic"], q, wt),
                                                 f"the multitask image head's {name} view as a third member")
    auto["multitask whole for the whole member"] = (
        fuse(r["both"], {"box": r["box"], "whole": whole}, cv["automatic_outlines"]["member_weights"]),
        "the multitask whole view in place of the whole-image member, the set's weights")
    report.update(run=str(args.run), epochs=args.epochs, findings=len(y),
                  automatic=judge_candidates(auto, y, sites, groups))
    write_results(OUT, args.name, report, markdown(report, args))


def _card(run: Path):
    """The run's segmenter card (verified): its input size and presence threshold (chosen out of fold)."""
    from BreastCADxLib.analysis.registry import load_card
    from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL

    return load_card(DEFAULT_MODEL, run)


def markdown(report: dict, args) -> str:
    lines = header("A multitask network (outline head + normal / benign / malignant image head) at each held-out site",
                   report, f"Made by `python -m training.experiments.multitask --run {args.run} --manifest "
                   f"{args.manifest} --epochs {report['epochs']}`: each site scored by the network warm-started from "
                   f"the segmenter fold that never saw it and trained jointly on the other two sites "
                   f"({report['training_minutes']} min of training in this call); non-test rows, test splits unread.")
    lines += ["", "## Malignancy: the image head alone (automatic outlines' boxes; whole image)", ""]
    lines += alone_table(report["alone"])
    lines += ["", "## Malignancy fused with the shipped automatic-outline bundle", ""]
    lines += candidate_table(report["automatic"])
    lines += ["", "## Presence at the sites with lesion-free views", "",
              "Cells: AUC; lesions said \"no lesion found\" / lesion-free images shown a lesion at each threshold; the "
              "fewest lesions missed at <= 8 % false chosen on the site itself (a ceiling).", "",
              "| site | signal | AUC | at thresholds | missed at 8 % false (ceiling) |", "|---|---|---|---|---|"]
    for site, d in report["presence"].items():
        for name, c in d.items():
            if not isinstance(c, dict):
                continue
            at = "; ".join(f"{t}: {v['missed']:.1%} / {v['false']:.1%}" for t, v in c["at"].items())
            lines.append(f"| {site} ({d['lesion_images']} lesion, {d['images'] - d['lesion_images']} lesion-free) | "
                         f"{name} | {c['auc']:.3f} | {at} | {c['missed_at_8pct_false_site_chosen']:.1%} |")
    lines += ["", "## The joint outline head (lesion images localised: the returned outline's centre in the lesion)",
              "",
              "| site | segmenter fold | multitask outline head |", "|---|---|---|"]
    lines += [f"| {s} | {v['localised_fold']:.3f} | {v['localised_joint']:.3f} |" for s, v in
              report["outline_head"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
