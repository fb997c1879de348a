"""Choose the lexicon cut-points (analysis/lexicon.py) on the training split of both hospitals.

    python -m training.lexicon_thresholds            # -> BreastCADx/Resources/Lexicon/thresholds.json

Rows: the descriptors of the reference outlines (runs/site_features/<site>__reference.npz, made by
training.classification.site_features), train split only; val rows are left for the validation
(benchmarks/lexicon.py). Orientation uses the lexicon's own definition (deeper than wide); every other cut-point
is the value of Youden's J for the direction the lexicon gives the category (irregular shape, non-circumscribed
margin and posterior shadowing go with malignancy; posterior enhancement with benignity). Echo pattern uses
fixed definitions (ECHO below: half a tissue spread darker or brighter than the surrounding tissue; heterogeneous
when the lesion varies more than the tissue around it); anechoic is the darkest twentieth of the training lesions
(there is no cyst truth here).
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.lexicon import THRESHOLDS
from training.data import SITES

FEATURES = Path("runs/site_features")
# echo pattern: lesion median against the surrounding tissue's, in tissue interquartile ranges; heterogeneity: the
# lesion's interquartile range against the tissue's (definitions, not fitted: at both hospitals echogenicity is only
# weakly tied to malignancy, so Youden cut-points there are noise; benchmarks/results/lexicon.md)
ECHO = {"hypoechoic": -0.5, "hyperechoic": 0.5, "echo_heterogeneity": 1.0}
# cut-point name -> (descriptor, the side that goes with malignancy: "low" or "high"; for a benign sign, the
# side of malignancy is the other one)
RULES = {
    "solidity": ("solidity", "low"),
    "margin_roughness": ("margin_roughness", "high"),
    "margin_sharpness": ("margin_sharpness", "low"),
    "shadowing": ("posterior_ratio", "low"),
    "enhancement": ("posterior_ratio", "low"),  # enhancement (high ratio) is the benign side
}


def rows(sites: list[str], splits: tuple[str, ...], root: Path = FEATURES) -> tuple[dict[str, np.ndarray], np.ndarray]:
    values, labels = [], []
    for site in sites:
        z = np.load(root / f"{site}__reference.npz", allow_pickle=False)
        keep = np.isin(z["split"], splits)
        values.append(z["descriptors"][keep])
        labels.append(z["label"][keep])
        names = list(z["descriptor_names"])
    v = np.concatenate(values)
    return {n: v[:, i] for i, n in enumerate(names)}, np.concatenate(labels).astype(bool)


def youden_cut(x: np.ndarray, malignant: np.ndarray, malignant_side: str, lo: float = -np.inf,
               hi: float = np.inf) -> float | None:
    """The cut c (within [lo, hi]) maximising sensitivity + specificity of `x < c` (side low) or `x > c`;
    None when no training value lies in [lo, hi]."""
    ok = np.isfinite(x)
    x, y = x[ok], malignant[ok]
    best, best_j = None, -1.0
    for c in np.unique(np.quantile(x, np.linspace(0.02, 0.98, 193))):
        if not lo <= c <= hi:
            continue
        pos = x < c if malignant_side == "low" else x > c
        j = pos[y].mean() + (~pos[~y]).mean() - 1
        if j > best_j:
            best, best_j = float(c), j
    return best


def choose(d: dict[str, np.ndarray], malignant: np.ndarray) -> dict:
    cut = {}
    for name, (feature, side) in RULES.items():
        lo, hi = -np.inf, np.inf
        if name == "enhancement":
            lo = 1.0
        if name == "shadowing":
            hi = 1.0
        cut[name] = youden_cut(d[feature], malignant, side, lo, hi)
    cut.update(ECHO)
    cut["anechoic"] = float(np.nanquantile(d["echo_contrast"], 0.05))
    spread = {n: float(np.subtract(*np.nanpercentile(v, [75, 25]))) for n, v in d.items()}
    return {"cut": cut, "spread": spread}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", default=",".join(SITES))
    ap.add_argument("--out", type=Path, default=THRESHOLDS)
    args = ap.parse_args()
    sites = args.sites.split(",")
    d, malignant = rows(sites, ("train",))
    res = choose(d, malignant)
    res.update({"fit": {"sites": sites, "split": "train", "lesions": int(len(malignant)),
                        "malignant": int(malignant.sum()), "masks": "reference outlines"},
                "rule": __doc__.split("\n\n")[2].replace("\n", " ").strip(), "date": str(date.today()),
                "command": "python -m training.lexicon_thresholds", "validation": "benchmarks/results/lexicon.md"})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["cut"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
