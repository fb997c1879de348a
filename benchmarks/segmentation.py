"""Segmentation benchmark on the held-out test split (never used for training or selection).

    python -m benchmarks.segmentation --data ../shared/data/busi --baseline-run runs/seg_unet

Shipped model (FlexibleUNet + EfficientNet-Lite0) vs a plain MONAI UNet trained with the same recipe,
both through the same inference path, with and without the ROI box prompt (reference box + 10 % margin).
Writes benchmarks/results/segmentation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks.metrics import dice, hd95, iou, summary
from BreastCADxLib.analysis.networks import baseline_unet
from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox
from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL, LesionSegmenter
from BreastCADxLib.image import Image
from training.common import load_case, read_split

RESULTS = Path("benchmarks/results")


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


PROMPTS = ("none", "roi_box", "expect_lesion")


def run_model(seg: LesionSegmenter, cases: list, rows: list, prompt: str) -> dict:
    """prompt: none; roi_box (reference box + 10 %); expect_lesion (the user says there is a lesion: best
    candidate kept when nothing passes presence). The last two need a lesion, so normal images are skipped."""
    per_case, times = [], []
    for (img, ref), row in zip(cases, rows):
        box = mask_bbox(ref)
        if prompt != "none" and box is None:
            continue
        roi = expand_box(box, 0.10, ref.shape) if prompt == "roi_box" else None
        t0 = time.perf_counter()
        result = seg.segment(Image(array=img), roi=roi, expect_lesion=prompt == "expect_lesion")
        times.append(time.perf_counter() - t0)
        pred = result.mask[0]
        per_case.append({"case": row["case"], "label": row["label"], "dice": dice(pred, ref), "iou": iou(pred, ref),
                         "hd95_px": hd95(pred, ref), "empty_pred": bool(not pred.any()),
                         "low_confidence": result.low_confidence})
    out: dict = {"seconds_per_image": summary(times), "cases": per_case}
    for group in ("all_lesions", "benign", "malignant"):
        sel = [c for c in per_case if c["label"] != "normal" and (group == "all_lesions" or c["label"] == group)]
        out[group] = {m: summary([c[m] for c in sel]) for m in ("dice", "iou", "hd95_px")}
    out["lesions_missed"] = sum(c["empty_pred"] for c in per_case if c["label"] != "normal")
    out["low_confidence"] = sum(c["low_confidence"] for c in per_case)
    normals = [c for c in per_case if c["label"] == "normal"]
    if normals:
        out["normal_false_lesion_rate"] = float(np.mean([not c["empty_pred"] for c in normals]))
        out["normal_images"] = len(normals)
    return out


def markdown(res: dict) -> str:
    lines = [f"# Segmentation benchmark\n\nDate: {res['date']}  \nMachine: {res['machine']['cpu']}, "
             f"{res['machine']['cores']} cores, torch {res['machine']['torch']} "
             f"({res['machine']['torch_threads']} threads), CUDA: {res['machine']['cuda']}  \n"
             f"Test split: {res['test_images']} images ({res['test_lesions']} with lesions, "
             f"{res['test_normals']} normal) from `training/splits/busi.csv`, duplicate-grouped, never used in "
             "training or model selection.\n",
             "| model | prompt | Dice mean ± std [95 % CI] | Dice benign | Dice malignant | IoU | HD95 px (median) "
             "| lesions missed | normal images with a false lesion | s / image |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["models"].items():
        for prompt in PROMPTS:
            m = r[prompt]
            d = m["all_lesions"]["dice"]
            fp = f"{m['normal_false_lesion_rate'] * 100:.1f} %" if "normal_false_lesion_rate" in m else "n/a"
            lines.append(
                f"| {name} | {prompt} | {d['mean']:.3f} ± {d['std']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}] | "
                f"{m['benign']['dice']['mean']:.3f} | {m['malignant']['dice']['mean']:.3f} | "
                f"{m['all_lesions']['iou']['mean']:.3f} | {m['all_lesions']['hd95_px']['median']:.1f} | "
                f"{m['lesions_missed']} of {m['all_lesions']['dice']['n']} | {fp} | "
                f"{m['seconds_per_image']['mean']:.3f} |")
    lines.append("")
    for name, r in res["models"].items():
        lines.append(f"- {name}: model load {r['load_seconds']:.2f} s; parameters {r['parameters']:,}")
    ratio = res["models"]["shipped"]["none"]["seconds_per_image"]["mean"] / \
        res["models"]["baseline_unet"]["none"]["seconds_per_image"]["mean"]
    lines.append(f"- speed ratio shipped / baseline (no prompt): {ratio:.2f}x")
    lines.append("\nDice is over lesion images; HD95 in pixels (BUSI has no calibration). ROI box = reference "
                 "bounding box + 10 % margin. expect_lesion = no box, but the user says the image has a lesion "
                 "(`--expect-lesion`; the panel's default): when no region passes the presence threshold the most "
                 "probable region is returned, flagged low-confidence "
                 f"({res['models']['shipped']['expect_lesion']['low_confidence']} test images). Normal images are "
                 "scored only without a prompt. Both models go "
                 "through `LesionSegmenter` with the shipped post-processing and flip test-time augmentation.\n")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--split", type=Path, default=Path("training/splits/busi.csv"))
    ap.add_argument("--baseline-run", type=Path, default=Path("runs/seg_unet"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [r for r in read_split(args.split) if r["split"] == "test"]
    cases = [load_case(args.data, r) for r in rows]

    t0 = time.perf_counter()
    shipped = LesionSegmenter.from_registry(DEFAULT_MODEL, "cpu")
    load_shipped = time.perf_counter() - t0
    t0 = time.perf_counter()
    net = baseline_unet()
    net.load_state_dict(torch.load(args.baseline_run / "model.pt", map_location="cpu", weights_only=True))
    baseline = LesionSegmenter(dict(shipped.card), net, "cpu")
    load_baseline = time.perf_counter() - t0
    shipped.probability(cases[0][0])  # warm-up
    baseline.probability(cases[0][0])

    res: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                 "test_images": len(rows), "test_lesions": sum(r["label"] != "normal" for r in rows),
                 "test_normals": sum(r["label"] == "normal" for r in rows), "models": {}}
    for name, seg, load in (("shipped", shipped, load_shipped), ("baseline_unet", baseline, load_baseline)):
        res["models"][name] = {"load_seconds": load,
                               "parameters": int(sum(p.numel() for p in seg.net.parameters())),
                               **{p: run_model(seg, cases, rows, p) for p in PROMPTS}}
        print(name, {p: round(res["models"][name][p]["all_lesions"]["dice"]["mean"], 4) for p in PROMPTS},
              flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "segmentation.json").write_text(json.dumps(res, indent=1) + "\n")
    (args.out / "segmentation.md").write_text(markdown(res))
    card_path = Path("BreastCADx/Resources/Models") / f"{DEFAULT_MODEL}.json"
    card = json.loads(card_path.read_text())
    sm = res["models"]["shipped"]
    card["metrics"] = {"test_split": f"{res['test_images']} images of training/splits/busi.csv", "date": res["date"],
                       "dice_no_prompt": sm["none"]["all_lesions"]["dice"]["mean"],
                       "dice_roi_prompt": sm["roi_box"]["all_lesions"]["dice"]["mean"],
                       "dice_expect_lesion": sm["expect_lesion"]["all_lesions"]["dice"]["mean"],
                       "lesions_missed_no_prompt": sm["none"]["lesions_missed"],
                       "hd95_px_median_no_prompt": sm["none"]["all_lesions"]["hd95_px"]["median"],
                       "normal_false_lesion_rate": sm["none"].get("normal_false_lesion_rate"),
                       "cpu_seconds_per_image": sm["none"]["seconds_per_image"]["mean"],
                       "details": "benchmarks/results/segmentation.md"}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(markdown(res))


if __name__ == "__main__":
    main()
