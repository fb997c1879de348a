"""Finding the lesion at a hospital the segmenter never saw: leave-one-site-out passes over a presence grid.

    python -m benchmarks.presence_held_out runs/site_pass/two-site__busuclm__train+val.npz \
        runs/site_pass/seg_BC__busi__train+val.npz runs/site_pass/seg_AC__busbra_l5__train+val.npz

Each pass (training.segmentation.site_pass) is a segmenter run over a site it was not trained on, non-test roles.
For each presence threshold of the default path: mean lesion Dice (a miss counts 0), lesions given "no lesion
found", lesion-free images given a lesion (where the site has them). Targets: <= 5 % missed and <= 8 % false
lesions at every held-out site. Writes benchmarks/results/presence_held_out.md/json.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.machine import header, machine, write_results
from training.segmentation.tune_presence import load_cases, score

OUT = Path(__file__).resolve().parent / "results"
GRID = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97)
TRAINED_ON = {"two-site": "BUSI + BUS-BRA L5 (the shipped segmenter)", "seg_BC": "BUS-BRA L5 + BUS-UCLM",
              "seg_AC": "BUSI + BUS-UCLM", "seg_B": "BUS-BRA L5", "busi-only": "BUSI"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("passes", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "loadavg_1min": os.getloadavg()[0], "passes": {}}
    lines = []
    for path in args.passes:
        run, site = path.name.split("__")[:2]
        loaded = load_cases([path])  # once per pass, scored at every threshold
        rows = [score(loaded, p) for p in GRID]
        report["passes"][path.name] = rows
        lines += ["", f"## {site}, held out: segmenter `{run}` trained on {TRAINED_ON.get(run, run)}", "",
                  f"{rows[0]['lesions']} lesion images, {rows[0]['lesion_free_images']} lesion-free images "
                  f"(non-test roles).", "",
                  "| presence | lesion Dice (miss = 0) | \"no lesion found\" on lesions "
                  "| false lesion on lesion-free |",
                  "|---|---|---|---|"]
        lines += [f"| {r['presence']:.2f} | {r['lesion_dice']:.3f} | {100 * r['missed_rate']:.1f} % | "
                  + ("-" if r["lesion_free_images"] == 0 else f"{100 * r['false_lesion_rate']:.1f} %") + " |"
                  for r in rows]
    head = header("Finding the lesion at a hospital the segmenter never saw (default path, presence grid)",
                  {**report, "loadavg_1min_end": os.getloadavg()[0]},
                  "Made by `python -m benchmarks.presence_held_out " + " ".join(str(p) for p in args.passes) + "`.")
    write_results(args.out, "presence_held_out", report, "\n".join(head + lines) + "\n")


if __name__ == "__main__":
    main()
