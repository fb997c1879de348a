"""The image-members stage of `breastcadx train`: the CNNs fused with the features, as the shipped set has them.

Two views (analysis/box_classifier.py): "box", the finding's box crop with a context margin, and "whole", the
whole image (needs no outline: it still sees a finding the outline missed). Each is an EfficientNet-Lite0
(ImageNet) fine-tuned end to end to P(malignant) (analysis.networks.BoxNet), on the findings' crops made as the
product makes them (analysis.deep_features.roi_crop on the working grid): in training the box's edges move by up
to BOX_JITTER of its side and its margin is drawn from TRAIN_MARGIN (an automatic outline's box errs too); the
whole view is a window of 80-100 % of each side. For ultrasound each image first takes another scanner's look
(train/augment.ScannerAugment, as the shipped members were trained: without it a member trained on BUSI + BUS-UCLM
ranked L5's lesions at AUC 0.837, the shipped one 0.894). Mirror, gamma, gain and noise; AdamW with a cosine schedule,
class-balanced loss, bf16 autocast + channels_last on CPUs that have it, CUDA when present.

Each member is trained on the folds of the classifier's cross-validation (the same patient folds) and scored on
its held-out fold through the product's own scorer (MemberScorer: the card's margins and their mirrors), so the
fusion with the members is judged out of fold on the same rows as the features alone. Their fusion weights
(classifier.fused_logit) are chosen there, per bundle (choose_weights): of the WEIGHT_GRID combinations that pass
the train gate against the features alone (pipeline.no_worse: the high-sensitivity band and the AUC; with --folds
site, the worst held-out site's), the best band (near-ties by the AUC); a view at weight 0 is left out, and a view
that alone does not rank the findings above chance (above_chance) is held at 0. When none passes, the members stay
out (the record quotes the recipe's WEIGHTS). Kept members are then trained on every finding.
Checkpoints every epoch; a fold already scored is not trained again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.cards import ImageCnnCard
from BreastCADxLib.train import checkpoint
from BreastCADxLib.train.augment import ScannerAugment

VIEWS = {"box": "lesion_box_cnn", "whole": "lesion_whole_cnn"}
WEIGHTS = {"box": 0.75, "whole": 0.2}  # the recipe's three-site design's (leave-site-out): quoted when none passes
# the weights each bundle may take (benchmarks/results/train_weights.md: on the three-site run's drawn outlines the
# box member at 0.25 passes the gate where the recipe's 0.75 did not; on its automatic outlines 0.75 / 0.2 holds)
WEIGHT_GRID = {"box": (0.25, 0.5, 0.75), "whole": (0.0, 0.1, 0.2)}
BAND_TIE = 0.01  # worst-site bands this close to the best are ties (out-of-fold noise): the higher AUC decides
MARGINS = {"box": (0.05, 0.1, 0.15), "whole": (0.0,)}  # scored: each margin and its mirror, mean logit
EPOCHS = 14
BATCH = 16
LR = 3e-4  # the trunk's; the head's 3x; x checkpoint.FINE_TUNE_LR from a set's member (--from)
BOX_JITTER = 0.12
TRAIN_MARGIN = (0.10, 0.45)
# train/augment.ScannerAugment's probability per step, by modality: the shipped members' (it imitates another
# ultrasound scanner: resolution, gain, speckle, marks, JPEG, field of view); none for film
SCANNER_AUG = {"US": 0.5, "MG": 0.0}


@dataclass(frozen=True)
class MemberImage:
    """A finding as the members see it: its image's plane on the working grid (as loaded) and its mask there."""

    key: str
    plane: np.ndarray
    mask: np.ndarray
    label: int
    patient: str


def member_images(findings: list) -> list[MemberImage]:
    """Each finding's plane and mask on the product's working grid (large films are analysed reduced)."""
    from BreastCADxLib.train.pipeline import on_grid

    out = []
    for f in findings:
        image, mask = on_grid(f)
        out.append(MemberImage(f.case_id, image.array[0], mask[0].astype(bool), f.label, f.patient))
    return out


def _box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    m[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)] = True
    return m


def train_view(im: MemberImage, view: str, rng: np.random.Generator, scanner=None):
    """One training crop (3, 224, 224), normalised as the product's: the image through `scanner` (a
    train/augment.ScannerAugment: another scanner's look) when given, then the jittered box with a drawn margin,
    or a 80-100 % window of the whole image; mirrored half of the time, gamma, gain and noise on the grey levels."""
    import torch

    from BreastCADxLib.analysis.deep_features import roi_crop
    from BreastCADxLib.analysis.preprocessing import mask_bbox
    from BreastCADxLib.analysis.values import to_uint8_range
    from BreastCADxLib.image import Image

    plane, mask = im.plane, im.mask
    if scanner is not None:
        plane8 = plane if plane.dtype == np.uint8 else np.round(to_uint8_range(plane)).astype(np.uint8)
        plane, mask = scanner(plane8, mask)
    h, w = plane.shape
    if view == "whole":
        fw, fh = rng.uniform(0.8, 1.0, size=2)
        x0, y0 = int(rng.uniform(0, 1 - fw) * w), int(rng.uniform(0, 1 - fh) * h)
        box, margin = (x0, y0, x0 + int(fw * w), y0 + int(fh * h)), 0.0
    else:
        x0, y0, x1, y1 = mask_bbox(mask)
        j = rng.uniform(-BOX_JITTER, BOX_JITTER, size=4) * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
        box = (int(x0 + j[0]), int(y0 + j[1]), int(x1 + j[2]), int(y1 + j[3]))
        if box[2] - box[0] < 4 or box[3] - box[1] < 4:
            box = (x0, y0, x1, y1)
        margin = rng.uniform(*TRAIN_MARGIN)
    t = roi_crop(Image(array=plane[None]), _box_mask((h, w), box)[None], margin=margin, kind="box").tensor
    grey = (t * 128 + 127).clamp(0, 255) / 255  # back to 0..1 for the intensity changes
    grey = grey ** float(rng.uniform(0.7, 1.4)) * float(rng.uniform(0.85, 1.15))
    grey = grey + float(rng.uniform(0, 0.03)) * torch.from_numpy(rng.standard_normal(grey.shape[1:]).astype(np.float32))
    t = (grey.clamp(0, 1) * 255 - 127) / 128
    return t.flip(-1) if rng.random() < 0.5 else t


def site_balanced(sites) -> np.ndarray:
    """Each image's probability of being drawn so that every site weighs the same (its images alike)."""
    _, where, counts = np.unique(np.asarray(sites), return_inverse=True, return_counts=True)
    return 1.0 / (len(counts) * counts[where])


def fit(images: list[MemberImage], folder: Path, view: str, *, epochs: int, device, deadline: float, say,
        label: str, seed: int = 0, init: Path | None = None, scanner_aug: float = 0.0,
        balance: list[str] | None = None) -> Path:
    """Train one member on `images` (from the ImageNet trunk, or from `init`'s weights: --from); folder/model.pt
    when done. A checkpoint after every epoch; a rerun goes on from it; past `deadline` it stops after the epoch.
    balance: each image's site; each epoch then draws as many images as there are, with replacement, every site
    weighing the same (site-balanced sampling)."""
    import torch
    from torch import nn

    from BreastCADxLib.analysis.networks import BoxNet

    folder.mkdir(parents=True, exist_ok=True)
    run = {"images": [im.key for im in images], "view": view, "epochs": epochs, "seed": seed,
           "init": str(init) if init else None, **({"scanner_aug": scanner_aug} if scanner_aug else {}),
           **({"site_balanced": True} if balance is not None else {})}
    if done := checkpoint.finished(folder, run):
        return done
    torch.manual_seed(seed)
    net, bf16 = checkpoint.network(BoxNet("lite0", pretrained=init is None), init, device)
    steps = math.ceil(len(images) / BATCH)
    lr = LR * (checkpoint.FINE_TUNE_LR if init is not None else 1.0)
    opt = torch.optim.AdamW([{"params": net.trunk.parameters(), "lr": lr},
                             {"params": net.score.parameters(), "lr": 3 * lr}], weight_decay=1e-4)
    total = epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    y_all = np.array([im.label for im in images], np.float32)
    pos = float(y_all.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y_all) - pos) / max(pos, 1.0)))
    draw_p = site_balanced(balance) if balance is not None else None
    job = checkpoint.Resumable(folder, run, net, opt, sched, epochs=epochs, bf16=bf16, say=say,
                               label=f"{view} member {label}", stage="image-members", deadline=deadline)
    for epoch in range(job.start, epochs):
        net.train()
        rng = np.random.default_rng([seed, epoch])  # per epoch: a resumed run draws what it would have drawn
        torch.manual_seed(seed * 1000 + epoch)
        scanner = ScannerAugment(scanner_aug, seed=seed * 1000 + epoch) if scanner_aug else None
        order = rng.permutation(len(images)) if draw_p is None else rng.choice(len(images), len(images), p=draw_p)
        losses = [job.step(torch.stack([train_view(images[i], view, rng, scanner) for i in idx]).to(device),
                           torch.from_numpy(y_all[idx]).to(device), loss_fn)
                  for idx in (order[s * BATCH:(s + 1) * BATCH] for s in range(steps))]
        job.end_epoch(epoch, losses)
    return job.finish({"epochs": epochs, "images": len(images), "device": str(device),
                       "init": str(init) if init else None})


def card_for(view: str, weights: Path, model_set: str, training: dict, modality: str) -> ImageCnnCard:
    from BreastCADxLib.analysis.registry import sha256_of

    what = "its box crop with a context margin" if view == "box" else "the whole image (needs no outline)"
    return ImageCnnCard(
        id=VIEWS[view], task=f"P(malignant) of a finding ({modality}) from {what}: an image-level fusion member",
        weights=weights.name, sha256=sha256_of(weights), view=view, crop_margins=list(MARGINS[view]),
        architecture={"arch": "lite0", "net": "analysis/networks.py BoxNet: EfficientNet-Lite0 (ImageNet init) -> "
                                              "dropout 0.3 -> linear, fine-tuned end to end"},
        training=training, intended_use="Research only; not for diagnosis.",
        notes={"model_set": model_set, "input": "grey in all three channels, 224 x 224, (x - 127) / 128; scored as "
                                                "the mean logit of the card's margins and their mirrors",
               "weights_format": "torch state dict, float16 (cast to float32 at load), loaded with weights_only=True"})


def score(view: str, weights: Path, images: list[MemberImage], device) -> np.ndarray:
    """P(malignant) of each image by the product's scorer (MemberScorer) with these weights."""
    from BreastCADxLib.analysis.box_classifier import MemberScorer
    from BreastCADxLib.analysis.inference import TorchEngine
    from BreastCADxLib.analysis.networks import BoxNet
    from BreastCADxLib.image import Image

    net = checkpoint.load_weights(BoxNet("lite0", pretrained=False), weights)
    scorer = MemberScorer(card_for(view, weights, "", {"command": ""}, ""), TorchEngine(net, device), device)
    return np.array([scorer.probability(Image(array=im.plane[None]), im.mask[None]) for im in images])


def train_members(images: list[MemberImage], splits: list, views: tuple[str, ...], work: Path, *, epochs: int,
                  device: str, deadline: float, say, init: dict[str, Path] | None = None, scanner_aug: float = 0.0
                  ) -> dict[str, np.ndarray]:
    """Out-of-fold P(malignant) of each view on the classifier's folds (`splits`: (train, test) index pairs);
    each fold's scores cached in work/member_<view>_fold<k>/scored.json."""
    from BreastCADxLib.analysis.registry import choose_device

    dev = choose_device(device)
    oof = {v: np.zeros(len(images)) for v in views}
    for k, (tr, te) in enumerate(splits):
        for view in views:
            folder = work / f"member_{view}_fold{k + 1}"
            scored = folder / "scored.json"
            held_out = {images[i].key for i in te}
            if not scored.is_file() or set(json.loads(scored.read_text())) != held_out:  # this fold's, or again
                weights = fit([images[i] for i in tr], folder, view, epochs=epochs, device=dev, deadline=deadline,
                              say=say, label=f"fold {k + 1}/{len(splits)}", seed=k + 1,
                              init=(init or {}).get(view), scanner_aug=scanner_aug)
                p = score(view, weights, [images[i] for i in te], dev)
                scored.write_text(json.dumps({images[i].key: float(q) for i, q in zip(te, p)}))
            got = json.loads(scored.read_text())
            oof[view][te] = [got[images[i].key] for i in te]
    return oof


def final_members(images: list[MemberImage], views: tuple[str, ...], work: Path, *, epochs: int, device: str,
                  deadline: float, say, init: dict[str, Path] | None = None, scanner_aug: float = 0.0
                  ) -> dict[str, Path]:
    """Each view trained on every finding: its weights."""
    from BreastCADxLib.analysis.registry import choose_device

    dev = choose_device(device)
    return {view: fit(images, work / f"member_{view}_final", view, epochs=epochs, device=dev, deadline=deadline,
                      say=say, label="all findings", seed=0, init=(init or {}).get(view), scanner_aug=scanner_aug)
            for view in views}


def fuse(p_features, probs: dict, weights: dict | None = None) -> np.ndarray:
    """The features' probability fused with the members' ({view: probability}) as the product fuses them
    (classifier.fused_logit), at `weights` (default WEIGHTS)."""
    from scipy.special import expit, logit

    from BreastCADxLib.analysis.classifier import fused_logit

    kw = {}
    for view, p in probs.items():
        kw[view], kw[f"{view}_weight"] = logit(np.clip(p, 1e-6, 1 - 1e-6)), (weights or WEIGHTS)[view]
    return expit(fused_logit(logit(np.clip(np.asarray(p_features), 1e-6, 1 - 1e-6)), **kw))


def chance_text(views: list | None, where: str = "") -> str:
    """The card's sentence on views held at weight 0 for ranking at chance ('' when none)."""
    if not views:
        return ""
    return (f" Out of fold{where}, {' and '.join(views)} alone ranked the findings no better than chance "
            "(AUC CI reaching 0.5): held at 0.")


def above_chance(y, p, sites=None, groups=None) -> bool:
    """Whether a view ranks its findings above chance out of fold: its AUC's patient-bootstrap 95 % CI wholly
    above 0.5, at every held-out site when `sites` are given (a site with one class cannot say). A member at
    chance adds only noise to the fusion, whatever the gate's noisy band says (mini-MIAS: 119 findings)."""
    from BreastCADxLib.results.evaluation import auc_ci

    y, p = np.asarray(y), np.asarray(p)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    parts = [np.ones(len(y), bool)] if sites is None else [np.asarray(sites) == s for s in dict.fromkeys(sites)]
    return all(auc_ci(y[m], p[m], groups[m])["ci95"][0] > 0.5 for m in parts if len(set(y[m].tolist())) == 2)


def choose_weights(y, base, probs: dict, sites=None, groups=None) -> tuple[bool, dict, dict, np.ndarray]:
    """The members' weights for one bundle, out of fold on its own outlines: every WEIGHT_GRID combination of the
    views in `probs` ({view: out-of-fold probability}; a view at 0 is left out, not all at 0; a view not
    above_chance is held at 0) against the features alone (`base`) by the train gate (pipeline.no_worse;
    `groups`, the patients, for its per-site check); of those kept, the highest worst-site band, bands within
    BAND_TIE of it counting as ties that the higher worst-site AUC decides.
    Returns (kept, {view: weight} of the views fused, the gate's record, the fused out-of-fold probability); when
    none is kept, the recipe's WEIGHTS of the views offered with their gate and fusion (for the record); the gate's
    record names the views held at 0 for ranking at chance (`at_chance`) and the others (`offered`)."""
    from itertools import product

    from BreastCADxLib.train.pipeline import no_worse

    base = np.asarray(base)
    at_chance = [v for v in probs if not above_chance(y, probs[v], sites, groups)]
    grid = {v: (0.0,) if v in at_chance else WEIGHT_GRID[v] for v in probs}
    kept = []
    for combo in product(*grid.values()):
        w = {v: x for v, x in zip(probs, combo) if x > 0}
        if not w:
            continue
        fused = fuse(base, {v: probs[v] for v in w}, w)
        ok, gate = no_worse(y, fused, base, sites, groups)
        if ok:
            kept.append((w, gate, fused))
    offered = [v for v in probs if v not in at_chance]
    if not kept:  # the record: the recipe's weights of the views offered (of all when none was)
        shown = {v: probs[v] for v in (offered or probs)}
        fused = fuse(base, shown, WEIGHTS)
        gate = no_worse(y, fused, base, sites, groups)[1]
        return False, {v: WEIGHTS[v] for v in shown}, {**gate, "at_chance": at_chance, "offered": offered}, fused
    top = max(g["candidate"]["specificity_0.90_1.00"] for _, g, _ in kept)
    w, gate, fused = max((k for k in kept if k[1]["candidate"]["specificity_0.90_1.00"] >= top - BAND_TIE),
                         key=lambda k: (k[1]["candidate"]["auc"], k[1]["candidate"]["specificity_0.90_1.00"]))
    return True, w, {**gate, "at_chance": at_chance, "offered": offered}, fused


def members_stage(findings: list, y: np.ndarray, groups: np.ndarray, cv: dict, views: tuple[str, ...], work: Path,
                  *, folds: int | str, epochs: int, device: str, deadline: float, say, source: dict | None = None,
                  sites=None, modality: str = "US", defer: bool = False) -> dict:
    """The members out of fold on the classifier's folds, the fusion with them judged against the features alone
    on the findings' own outlines (rows added to cv["models"]), and, when they are kept, each trained on every
    finding. With --from (`source` with members): each starts from the source's member of its view, and
    `source_as_is` is the source with its members. defer: no final training here (`breastcadx train` judges the
    members on the automatic outlines too, then calls finish_members). Returns {"weights": {view: path} or None,
    "training": the record for the cards, "oof": the held-out scores per view, and what finish_members needs}."""
    from BreastCADxLib.analysis.registry import choose_device
    from BreastCADxLib.train.pipeline import GATE_RULE, SITE_FOLDS, fold_splits, summary

    images = member_images(findings)
    init = (source or {}).get("members") or None
    aug = SCANNER_AUG[modality]
    oof = train_members(images, fold_splits(y, groups, folds, sites=sites), views, work, epochs=epochs, device=device,
                        deadline=deadline, say=say, init=init, scanner_aug=aug)

    site_gate = sites if folds == SITE_FOLDS else None
    kept, weights, gate, fused = choose_weights(y, cv["oof"]["fusion"], oof, site_gate, groups)
    for view in views:
        cv["models"][f"{view}_cnn"] = summary(y, oof[view], groups)
        cv["oof"][f"{view}_cnn"] = oof[view].tolist()
    cv["models"]["fusion_with_members"] = summary(y, fused, groups)
    cv["oof"]["fusion_with_members"] = fused.tolist()
    if init:  # the source as it is: its features' fusion with its own members, scored here
        dev = choose_device(device)
        own = {v: score(v, path, images, dev) for v, path in init.items()}
        cv["models"]["source_as_is"] = summary(
            y, fuse(np.array(cv["oof"]["source_as_is"]), own, source["member_weights"]), groups)
    cv["member_gate"] = {"kept": kept, "weights": weights, **gate}
    record = {"views": list(views), "weights_reference": weights, "epochs": epochs, "batch": BATCH,
              "learning_rate": LR * (checkpoint.FINE_TUNE_LR if init else 1.0), "box_jitter": BOX_JITTER,
              "train_margin": list(TRAIN_MARGIN), "scanner_aug": aug,
              "from_set": source["id"] if init else None, "kept": kept, "kept_reference": kept,
              "gate_reference": gate,
              "rule": "fused with a bundle against the features alone on that bundle's outlines, out of fold on "
                      "the classifier's folds (the findings' own outlines for the set's fusion, the segmenter's "
                      f"for its bundle for automatic masks): {GATE_RULE}; each bundle's weights chosen so among "
                      f"{WEIGHT_GRID} (the best worst-site band of those kept, bands within {BAND_TIE} of it "
                      "decided by the AUC); a view whose own AUC's patient-bootstrap 95 % CI reaches 0.5 (at any "
                      "held-out site with --folds site) is held at weight 0"}
    f, m = gate["base"], gate["candidate"]
    say(f"image members out of fold: fusion with them AUC {m['auc']:.3f}, specificity over sensitivity 0.90-1.00 "
        f"{m['specificity_0.90_1.00']:.2f} against {f['auc']:.3f}, {f['specificity_0.90_1.00']:.2f} alone: "
        + (("kept for the set's fusion" if kept else "left out of the set's fusion") + " (the findings' own "
           "outlines; a segmenter's outlines judge them again for its masks)" if defer else
           "kept" if kept else "left out of the set (they did not add to the features here)"))
    out = {"weights": None, "training": record, "oof": oof, "views": views,
           "finish": {"epochs": epochs, "init": init, "scanner_aug": aug}}
    return finish_members(out, findings, work, device=device, deadline=deadline, say=say, images=images) \
        if kept and not defer else out


def finish_members(result: dict, findings: list, work: Path, *, device: str, deadline: float, say,
                   images: list[MemberImage] | None = None) -> dict:
    """members_stage's result with each view trained on every finding (its weights)."""
    f = result["finish"]
    weights = final_members(images or member_images(findings), result["views"], work, epochs=f["epochs"],
                            device=device, deadline=deadline, say=say, init=f["init"], scanner_aug=f["scanner_aug"])
    return {**result, "weights": weights}


__all__ = ["VIEWS", "WEIGHTS", "WEIGHT_GRID", "EPOCHS", "fuse", "above_chance", "choose_weights", "member_images",
           "members_stage", "finish_members", "train_members", "final_members", "card_for", "score", "train_view",
           "fit"]
