"""The shipped input guard, whole (modality and size rules, the image-level model, the speckle and depth rules), on
the three sites' test-split images: how many genuine images it refuses (the target: none) and how many it flags
(orientation_uncertain). Test splits are read here for this final check only.

    python -m benchmarks.input_guard_test [--busuclm ../data/busuclm]

Writes benchmarks/results/input_guard_test.md/json.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.machine import header, site_args, stamp, write_results
from BreastCADxLib.analysis.guard import InputRefused, check_input
from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET, model_set_info
from BreastCADxLib.io import load_image
from training.data import SITES, data_dir, site_cases

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    args = site_args(__doc__, OUT)
    t0 = time.perf_counter()
    report = {**stamp(), "model_set": model_set_info(DEFAULT_MODEL_SET)["id"], "sites": {}}
    lines = ["| site | test images | refused | flagged orientation_uncertain | lowest US score (threshold) |",
             "|---|---|---|---|---|"]
    for site in SITES:
        refused, flagged, scores = [], [], []
        test = site_cases(site, data_dir(args, site), roles=("test",))
        for c in test:
            image = load_image(c.image)
            try:
                check = check_input(image, device="cpu")
            except InputRefused as e:
                refused.append({"case": c.case, "why": str(e)})
                continue
            scores.append(check.ultrasound_score)
            if check.cautions:
                flagged.append(c.case)
        threshold = check.threshold if scores else None
        report["sites"][site] = {"images": len(test), "refused": refused, "flagged": flagged,
                                 "lowest_score": min(scores) if scores else None}
        lines.append(f"| {site} | {len(test)} | {len(refused)} | {len(flagged)} ({100 * len(flagged) / len(test):.1f} "
                     f"%) | {min(scores):.3f} ({threshold:.4f}) |")
    report["seconds"] = time.perf_counter() - t0
    report["loadavg_1min_end"] = os.getloadavg()[0]
    head = header("The shipped input guard on the three sites' test splits", report,
                  f"Made by `python -m benchmarks.input_guard_test`; model set {report['model_set']}; every rule of "
                  f"`analysis.guard.check_input` ({report['seconds']:.0f} s).")
    write_results(args.out, "input_guard_test", report, "\n".join(head + [""] + lines) + "\n")


if __name__ == "__main__":
    main()
