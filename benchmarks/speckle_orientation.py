"""The speckle check of the input guard (analysis/orientation.py) on every image of the three sites, upright and
as near misses (turned by 90 / 270 degrees, upside down, inverted): genuine images refused per split, near misses
refused per site. Refusal here is the speckle rule alone (the image-level guard adds its own).

    python -m benchmarks.speckle_orientation [--busuclm ../data/busuclm]

Writes benchmarks/results/speckle_orientation.md/json.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from benchmarks.machine import header, machine, write_results
from BreastCADxLib.analysis.orientation import ANISOTROPY_CUT, POLARITY_CUT, speckle_check
from training.data import SITES, add_data_args, data_dir, site_cases

OUT = Path(__file__).resolve().parent / "results"
VARIANTS = {"upright": lambda g: g, "turned 90": np.rot90, "turned 270": lambda g: np.rot90(g, 3),
            "upside down": lambda g: g[::-1], "inverted": lambda g: 255 - g}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "loadavg_1min": os.getloadavg()[0], "cuts": {"anisotropy": ANISOTROPY_CUT, "polarity": POLARITY_CUT},
              "sites": {}}
    lines = ["| site | images (test split) | genuine refused, every split | genuine refused, test split | "
             "lowest anisotropy / polarity | turned 90 | turned 270 | upside down | inverted |",
             "|---|---|---|---|---|---|---|---|---|"]
    for site in SITES:
        rows = []
        for c in site_cases(site, data_dir(args, site)):
            grey = c.load()[0]
            checks = {name: speckle_check(f(grey)) for name, f in VARIANTS.items()}
            rows.append({"case": c.case, "split": c.split,
                         **{n: None if k is None else [k.anisotropy, k.polarity] for n, k in checks.items()},
                         **{f"{n} refused": bool(k is not None and k.reasons()) for n, k in checks.items()}})
        up = np.array([r["upright"] for r in rows if r["upright"] is not None])
        test = [r for r in rows if r["split"] == "test"]
        refused = {n: float(np.mean([r[f"{n} refused"] for r in rows])) for n in VARIANTS}
        report["sites"][site] = {"images": len(rows), "refused_share": refused,
                                 "genuine_refused": [r["case"] for r in rows if r["upright refused"]],
                                 "genuine_refused_test": sum(r["upright refused"] for r in test), "rows": rows}
        lines.append(f"| {site} | {len(rows)} ({len(test)}) | {sum(r['upright refused'] for r in rows)} | "
                     f"{report['sites'][site]['genuine_refused_test']} | {up[:, 0].min():.3f} / {up[:, 1].min():.3f}"
                     " | " + " | ".join(f"{100 * refused[n]:.1f} %" for n in list(VARIANTS)[1:]) + " |")
    report["seconds"] = time.perf_counter() - t0
    report["loadavg_1min_end"] = os.getloadavg()[0]
    head = header("Speckle orientation and polarity check (input guard rule)", report,
                  f"Made by `python -m benchmarks.speckle_orientation`; cuts anisotropy < {ANISOTROPY_CUT}, polarity "
                  f"< {POLARITY_CUT} (set below the lowest genuine value of the three sites with a margin: at 0 the "
                  "rule refused 12 genuine BUS-BRA L5 images).")
    write_results(args.out, "speckle_orientation", report, "\n".join(head + [""] + lines) + "\n")


if __name__ == "__main__":
    main()
