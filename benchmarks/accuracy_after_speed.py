"""Accuracy after the speed work: the leave-site-out benchmark of the same shipped models before and after (ONNX
Runtime engine, flip test-time augmentation off), side by side with their bootstrap CIs.

    python -m benchmarks.leave_site_out --out runs/lso_after_speed   # the same models, the new inference path
    python -m benchmarks.accuracy_after_speed benchmarks/results/leave_site_out.json \
        runs/lso_after_speed/leave_site_out.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "accuracy_after_speed.md"


def cell(x: dict) -> str:
    return f"{x['mean' if 'mean' in x else 'auc']:.3f} [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]"


def inside(a: dict, b: dict) -> str:
    v = b["mean" if "mean" in b else "auc"]
    return "yes" if a["ci95"][0] <= v <= a["ci95"][1] else "**no**"


def main() -> None:
    before, after = (json.loads(Path(p).read_text()) for p in sys.argv[1:3])
    lines = ["# Accuracy before and after the speed work (same models, held-out test splits)", "",
             f"Before: {before['date']} (PyTorch, flip TTA on). After: {after['date']} (ONNX Runtime, flip TTA off, "
             "exact-arithmetic speed-ups). 95 % bootstrap CIs as in `leave_site_out.md`; `within` = the new value "
             "lies inside the old CI.", "", "## Segmentation", "",
             "| model | test site | Dice no prompt: before | after | within | Dice lesion expected: before | after | "
             "within | Dice ROI: before | after | within | missed before / after |", "|---|" * 1 + "---|" * 11]
    for a, b in zip(before["segmentation"], after["segmentation"]):
        lines.append(f"| {a['model']} | {a['site']} | " + " | ".join(
            f"{cell(a[k])} | {cell(b[k])} | {inside(a[k], b[k])}" for k in ("dice_default", "dice_expect", "dice_roi"))
            + f" | {a['missed']} / {b['missed']} |")
    lines += ["", "## Classification (the same classifier; only the automatic / ROI masks and the deep engine differ)",
              "", "| model set | test site | masks | AUC before | after | within |", "|---|---|---|---|---|---|"]
    for a, b in zip(before["classification"], after["classification"]):
        lines.append(f"| {a['model_set']} | {a['site']} | {a['masks']} | {cell(a)} | {cell(b)} | {inside(a, b)} |")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
