"""The physical orientation checks of the input guard (analysis/orientation.py) on every image of the three sites,
upright and as near misses (turned by 90 / 270 degrees, upside down, inverted): genuine images refused (and
flagged) per split, near misses refused (and flagged) per site. Refusal here is these rules alone (the image-level
guard adds its own).

The depth score's weights and cuts are fitted here, on the non-test images: a logistic regression without
intercept, upright against upside-down, on the three depth measures (each changes sign with the image);
refusal below 1.25 x the lowest genuine score, a flag below the genuine 1st percentile. Leave-site-out rows fit
them without a site and judge that site's non-test images. Test splits are only counted (genuine refused).

    python -m benchmarks.speckle_orientation [--busuclm ../data/busuclm]

Writes benchmarks/results/speckle_orientation.md/json.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from benchmarks.machine import header, site_args, stamp, write_results
from BreastCADxLib.analysis import orientation
from BreastCADxLib.analysis.orientation import ANISOTROPY_CUT, POLARITY_CUT, speckle_check
from training.data import SITES, data_dir, site_cases

OUT = Path(__file__).resolve().parent / "results"
VARIANTS = {"upright": lambda g: g, "turned 90": np.rot90, "turned 270": lambda g: np.rot90(g, 3),
            "upside down": lambda g: g[::-1], "inverted": lambda g: 255 - g}
REFUSE_MARGIN = 1.25  # refusal cut: this times the lowest genuine depth score
FLAG_QUANTILE = 0.01


def fit_depth(up: np.ndarray, down: np.ndarray) -> dict:
    """Weights of the depth measures (upright > 0) and the cuts, from genuine (up) and upside-down rows."""
    x = np.vstack([up, down])
    sd = x.std(0)
    lr = LogisticRegression(fit_intercept=False).fit(x / sd, np.r_[np.ones(len(up)), np.zeros(len(down))])
    w = lr.coef_[0] / sd
    w = w / np.std(up @ w)  # the score in units of the genuine images' spread
    s = up @ w
    return {"weights": [round(float(v), 3) for v in w], "refuse": round(float(REFUSE_MARGIN * min(s.min(), 0)), 2),
            "flag": round(float(np.quantile(s, FLAG_QUANTILE)), 2)}


def rates(rule: dict, measures: np.ndarray) -> tuple[float, float]:
    s = measures @ np.array(rule["weights"])
    return float(np.mean(s < rule["refuse"])), float(np.mean((s >= rule["refuse"]) & (s < rule["flag"])))


def main() -> None:
    args = site_args(__doc__, OUT)
    t0 = time.perf_counter()
    code_rule = {"weights": list(orientation.DEPTH_WEIGHTS), "refuse": orientation.DEPTH_REFUSE_CUT,
                 "flag": orientation.DEPTH_FLAG_CUT}
    report = {**stamp(), "cuts": {"anisotropy": ANISOTROPY_CUT, "polarity": POLARITY_CUT, "depth": code_rule},
              "sites": {}}
    rows: dict[str, list[dict]] = {}
    for site in SITES:
        rows[site] = []
        for c in site_cases(site, data_dir(args, site)):
            grey = c.load()[0]
            checks = {name: speckle_check(f(grey)) for name, f in VARIANTS.items()}
            rows[site].append({"case": c.case, "split": c.split, **{
                n: None if k is None else [k.anisotropy, k.polarity, k.measures] for n, k in checks.items()},
                **{f"{n} refused": bool(k is not None and k.reasons()) for n, k in checks.items()},
                **{f"{n} flagged": bool(k is not None and k.cautions()) for n, k in checks.items()}})

    def depth_rows(site: str, split: str = "non-test") -> tuple[np.ndarray, np.ndarray]:
        keep = [r for r in rows[site] if (r["split"] == "test") == (split == "test") and r["upright"]
                and r["upright"][2] and r["upside down"] and r["upside down"][2]]
        return np.array([r["upright"][2] for r in keep]), np.array([r["upside down"][2] for r in keep])

    fitted = fit_depth(*(np.vstack(z) for z in zip(*(depth_rows(s) for s in SITES))))
    report["depth_fit"] = fitted
    report["depth_fit_matches_code"] = fitted == code_rule
    lso = ["| held out | weights (fit without it) | refuse / flag cut | upside-down AUC | genuine refused | "
           "genuine flagged | upside down refused | upside down flagged |", "|---|---|---|---|---|---|---|---|"]
    report["leave_site_out"] = {}
    for site in SITES:
        fit = fit_depth(*(np.vstack(z) for z in zip(*(depth_rows(s) for s in SITES if s != site))))
        up, down = depth_rows(site)
        w = np.array(fit["weights"])
        auc = roc_auc_score(np.r_[np.ones(len(up)), np.zeros(len(down))], np.r_[up @ w, down @ w])
        (gr, gf), (dr, df) = rates(fit, up), rates(fit, down)
        report["leave_site_out"][site] = {**fit, "auc": auc, "genuine": [gr, gf], "upside_down": [dr, df]}
        lso.append(f"| {site} | {fit['weights']} | {fit['refuse']} / {fit['flag']} | {auc:.3f} | "
                   f"{100 * gr:.1f} % | {100 * gf:.1f} % | {100 * dr:.1f} % | {100 * df:.1f} % |")
    lines = ["| site | images (test split) | genuine refused, every split | genuine refused, test split | "
             "genuine flagged (depth), every split | lowest anisotropy / polarity / depth | turned 90 | turned 270 | "
             "upside down: refused / flagged | inverted |", "|---|---|---|---|---|---|---|---|---|---|"]
    for site in SITES:
        rs = rows[site]
        ok = [r["upright"] for r in rs if r["upright"] is not None]
        lowest_depth = min(speckle_depth for speckle_depth in
                           (float(np.dot(code_rule["weights"], o[2])) for o in ok if o[2]))
        test = [r for r in rs if r["split"] == "test"]
        refused = {n: float(np.mean([r[f"{n} refused"] for r in rs])) for n in VARIANTS}
        flagged = {n: float(np.mean([r[f"{n} flagged"] for r in rs])) for n in VARIANTS}
        report["sites"][site] = {"images": len(rs), "refused_share": refused, "flagged_share": flagged,
                                 "genuine_refused": [r["case"] for r in rs if r["upright refused"]],
                                 "genuine_refused_test": sum(r["upright refused"] for r in test)}
        lines.append(f"| {site} | {len(rs)} ({len(test)}) | {sum(r['upright refused'] for r in rs)} | "
                     f"{report['sites'][site]['genuine_refused_test']} | {100 * flagged['upright']:.1f} % | "
                     f"{min(o[0] for o in ok):.3f} / {min(o[1] for o in ok):.3f} / {lowest_depth:.2f} | "
                     f"{100 * refused['turned 90']:.1f} % | {100 * refused['turned 270']:.1f} % | "
                     f"{100 * refused['upside down']:.1f} % / {100 * flagged['upside down']:.1f} % | "
                     f"{100 * refused['inverted']:.1f} % |")
    report["seconds"] = time.perf_counter() - t0
    report["loadavg_1min_end"] = os.getloadavg()[0]
    head = header("Physical orientation checks (input guard rules)", report,
                  f"Made by `python -m benchmarks.speckle_orientation`; cuts anisotropy < {ANISOTROPY_CUT}, polarity "
                  f"< {POLARITY_CUT} (set below the lowest genuine value of the three sites with a margin: at 0 the "
                  f"rule refused 12 genuine BUS-BRA L5 images); depth score weights {code_rule['weights']}, refused "
                  f"< {code_rule['refuse']}, flagged (orientation_uncertain) < {code_rule['flag']}.")
    fit_line = (f"Depth rule fitted here on the three sites' non-test images: {fitted} "
                f"({'the code carries it' if report['depth_fit_matches_code'] else 'THE CODE CARRIES ANOTHER'}).")
    write_results(args.out, "speckle_orientation", report, "\n".join(
        head + ["", fit_line, "", "With the code's rules:", ""] + lines
        + ["", "The depth rule at a hospital it was not fitted on (non-test images):", ""] + lso) + "\n")


if __name__ == "__main__":
    main()
