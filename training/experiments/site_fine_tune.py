"""Does fine-tuning the image-level member on a new hospital's labelled cases help there? (the `adapt --fine-tune`
question of the site-adaptation issue, measured before building it)

    python -m training.experiments.site_fine_tune --site busuclm --model-set two-site --n 100 --draws 3

The shipped set's box-crop CNN (never trained on the site) is fine-tuned on n lesions drawn by patient from the
site's train+val rows (reference boxes, the member's own training crops and augmentation), then both it and the
untouched member score the rest of the site's lesions with the product's views (reference outlines): AUC before
and after on the same rows. Writes benchmarks/results/site_fine_tune.md/json.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from benchmarks.machine import header, machine, write_results
from BreastCADxLib.analysis.networks import BoxNet
from BreastCADxLib.analysis.registry import load_card, load_state_dict, model_set_dir
from training.augment import ScannerAugment
from training.classification.box_cnn import eval_crop, predict, train_crop
from training.data import add_data_args, cases, draw_patients

OUT = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def shipped_member(model_set: str) -> tuple[nn.Module, tuple[float, ...]]:
    card = load_card("lesion_box_cnn", model_set_dir(model_set))
    net = BoxNet(card.arch, pretrained=False)
    net.load_state_dict({k: v.float() for k, v in load_state_dict(card).items()})
    return net, tuple(card.crop_margins)


def fine_tune(net: nn.Module, data: list, epochs: int, lr: float, seed: int) -> nn.Module:
    rng = np.random.default_rng(seed)
    aug = ScannerAugment(0.5, seed=seed)
    opt = torch.optim.AdamW([{"params": net.trunk.parameters(), "lr": lr},
                             {"params": net.score.parameters(), "lr": 3 * lr}], weight_decay=1e-4)
    pos = sum(y for _, y in data)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(data) - pos) / max(pos, 1)))
    net = net.to(memory_format=torch.channels_last)
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(data))
        for i in range(0, len(order), 16):
            idx = order[i:i + 16]
            x = torch.stack([train_crop(*data[j][0], aug, rng, 0.12, (0.10, 0.45), "box") for j in idx])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logit = net(x.contiguous(memory_format=torch.channels_last)).float()
            loss = loss_fn(logit, torch.tensor([data[j][1] for j in idx], dtype=torch.float32))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--site", default="busuclm")
    ap.add_argument("--model-set", default="two-site")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(2)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "loadavg_1min": os.getloadavg()[0], "site": args.site, "model_set": args.model_set, "n": args.n,
              "epochs": args.epochs, "lr": args.lr, "draws": []}
    t0 = time.perf_counter()
    lesions = cases(args, [args.site], ("train", "val"), lesions_only=True)
    loaded = {c.case: c.load() for c in lesions}
    _, margins = shipped_member(args.model_set)
    views = {c.case: eval_crop(*loaded[c.case], margins) for c in lesions}
    for seed in range(args.draws):
        fit, rest = draw_patients(lesions, args.n, np.random.default_rng(seed))
        drawn = {c.group for c in fit}
        y = np.array([int(c.malignant) for c in rest])
        net, _ = shipped_member(args.model_set)
        before = predict(net, [views[c.case] for c in rest], True)
        net = fine_tune(net, [(loaded[c.case], float(c.malignant)) for c in fit], args.epochs, args.lr, seed)
        after = predict(net, [views[c.case] for c in rest], True)
        row = {"seed": seed, "n_fit": len(fit), "malignant_fit": sum(c.malignant for c in fit),
               "patients_fit": len(drawn), "n_scored": len(rest), "malignant_scored": int(y.sum()),
               "auc_before": float(roc_auc_score(y, before)), "auc_after": float(roc_auc_score(y, after))}
        report["draws"].append(row)
        print(row, flush=True)
    report["seconds"] = time.perf_counter() - t0
    report["loadavg_1min_end"] = os.getloadavg()[0]
    d = report["draws"]
    gain = [r["auc_after"] - r["auc_before"] for r in d]
    head = header(f"Fine-tuning the box-crop member at a new hospital ({args.site}, {args.model_set} set)", report,
                  "Made by `python -m training.experiments.site_fine_tune`; reference outlines, the member alone.")
    lines = ["", "| draw | fitted lesions (malignant, patients) | scored lesions (malignant) | AUC before | "
             "AUC after |", "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['n_fit']} ({r['malignant_fit']}, {r['patients_fit']}) | {r['n_scored']} "
              f"({r['malignant_scored']}) | {r['auc_before']:.3f} | {r['auc_after']:.3f} |" for r in d]
    lines += ["", f"Median AUC change {np.median(gain):+.3f} (min {min(gain):+.3f}, max {max(gain):+.3f}) over "
              f"{len(d)} draws; {args.epochs} epochs at lr {args.lr:g}, {report['seconds'] / 60:.0f} min in all."]
    write_results(args.out, "site_fine_tune", report, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
