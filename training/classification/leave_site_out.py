"""Choose the classifier design by leave-site-out scores: fit on one site, score on the other, both ways.

    python -m training.classification.leave_site_out --pass-a seg_A --pass-b seg_B --out runs/lso_cls

Inputs: runs/site_features/<site>__<kind>[__<pass>].npz (training.classification.site_features) for the
non-test rows of both sites. Fitting masks: the site's reference outlines plus the same outlines redrawn
(`perturbed`) unless --fit-masks says otherwise. Scored on the other site with the masks the product uses:
`expect` (automatic, lesion expected; from a segmenter trained on the fitting site only), `roi` (that segmenter
in the reference box + 10 %), `perturbed` (a user-corrected outline) and `reference`.
Selection score: mean AUC over both directions of the automatic and the ROI-box masks.
Writes OUT/designs.json and OUT/designs.md; test splits are not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = Path("runs/site_features")
SITES = ("busi", "busbra_l5")
# radiomics that are dimensionless: no lesion size in pixels, no absolute grey level (first order)
RAD_INVARIANT = tuple(f"original_{n}" for n in (
    "shape2D_Elongation", "shape2D_Sphericity", "firstorder_Skewness", "firstorder_Kurtosis", "glcm_Correlation",
    "glcm_Imc1", "glcm_Imc2", "glcm_MCC", "glcm_Idmn", "glcm_Idn", "glrlm_GrayLevelNonUniformityNormalized",
    "glrlm_RunLengthNonUniformityNormalized", "glrlm_RunPercentage", "glrlm_ShortRunEmphasis",
    "glrlm_LongRunEmphasis", "glrlm_RunEntropy", "glszm_SizeZoneNonUniformityNormalized", "glszm_ZonePercentage",
    "glszm_SmallAreaEmphasis", "glszm_ZoneEntropy", "gldm_DependenceNonUniformityNormalized",
    "gldm_SmallDependenceEmphasis", "gldm_LargeDependenceEmphasis", "gldm_DependenceEntropy"))
DESIGNS = {  # name -> feature blocks
    "radiomics_all": ("rad_all",),
    "radiomics_invariant": ("rad_inv",),
    "descriptors": ("desc",),
    "deep_box": ("deep_box",),
    "deep_mask": ("deep_mask",),
    "desc+deep_box": ("desc", "deep_box"),
    "rad_inv+deep_box": ("rad_inv", "deep_box"),
    "rad_inv+desc+deep_box": ("rad_inv", "desc", "deep_box"),
    "rad_all+deep_mask": ("rad_all", "deep_mask"),
}
SCORED = ("expect", "roi", "perturbed", "reference")
PCA_DIM = 32


def load(site: str, kind: str, seg: str | None, root: Path = FEATURES) -> dict:
    name = f"{site}__{kind}" + (f"__{seg}" if kind in ("expect", "roi") else "")
    z = np.load(root / f"{name}.npz", allow_pickle=False)
    return {k: z[k] for k in z.files}


def block(d: dict, name: str) -> np.ndarray:
    if name == "rad_all":
        return d["radiomics"]
    if name == "rad_inv":
        idx = [list(d["radiomics_names"]).index(n) for n in RAD_INVARIANT]
        return d["radiomics"][:, idx]
    if name == "desc":
        return d["descriptors"]
    return d[name]


class BlockModel:
    """Per block: standardise (deep blocks: + PCA to 32); concatenated; L2 logistic regression."""

    def __init__(self, blocks: tuple[str, ...], c: float = 0.1) -> None:
        self.blocks, self.c = blocks, c

    def _x(self, d: dict, fit: bool = False, y=None) -> np.ndarray:
        parts = []
        for b in self.blocks:
            x = np.nan_to_num(block(d, b).astype(float), posinf=0, neginf=0)
            if fit:
                steps = [("scale", StandardScaler())]
                if b.startswith("deep"):
                    steps.append(("pca", PCA(PCA_DIM, random_state=0)))
                self.pre_[b] = Pipeline(steps).fit(x)
            parts.append(np.clip(self.pre_[b].transform(x), -8, 8))
        return np.hstack(parts)

    def fit(self, d: dict) -> BlockModel:
        self.pre_: dict = {}
        x = self._x(d, fit=True)
        self.lr_ = LogisticRegression(C=self.c, max_iter=5000).fit(x, d["label"])
        return self

    def proba(self, d: dict) -> np.ndarray:
        return self.lr_.predict_proba(self._x(d))[:, 1]


def stack(ds: list[dict]) -> dict:
    keys = ("label", "radiomics", "descriptors", "deep_box", "deep_mask", "group", "case")
    return {**{k: np.concatenate([d[k] for d in ds]) for k in keys}, "radiomics_names": ds[0]["radiomics_names"]}


def auc(y, p) -> float:
    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pass-a", default="shipped", help="segmenter pass over BUSI... trained on BUS-BRA (B->A)")
    ap.add_argument("--pass-b", default="shipped", help="segmenter pass over BUS-BRA, trained on BUSI (A->B)")
    ap.add_argument("--fit-masks", default="reference,perturbed")
    ap.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--out", type=Path, default=Path("runs/lso_cls"))
    args = ap.parse_args()
    passes = {"busi": args.pass_a, "busbra_l5": args.pass_b}
    fit_kinds = args.fit_masks.split(",")
    results = []
    for name, blocks in DESIGNS.items():
        for c in args.c:
            row: dict = {"design": name, "C": c}
            for src, dst in (("busi", "busbra_l5"), ("busbra_l5", "busi")):
                model = BlockModel(blocks, c).fit(stack([load(src, k, None) for k in fit_kinds]))
                for kind in SCORED:
                    try:
                        d = load(dst, kind, passes[dst])
                    except FileNotFoundError:
                        continue
                    row[f"{src}->{dst}:{kind}"] = auc(d["label"], model.proba(d))
            ab = [row.get(f"{s}->{t}:{k}") for s, t in (("busi", "busbra_l5"), ("busbra_l5", "busi"))
                  for k in ("expect", "roi")]
            row["score"] = float(np.nanmean([v for v in ab if v is not None])) if any(ab) else float("nan")
            results.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "designs.json").write_text(json.dumps({"passes": passes, "fit_masks": fit_kinds,
                                                       "results": results}, indent=2))
    cols = [f"{s}->{t}:{k}" for s, t in (("busi", "busbra_l5"), ("busbra_l5", "busi")) for k in SCORED]
    lines = ["| design | C | score | " + " | ".join(cols) + " |", "|---" * (len(cols) + 3) + "|"]
    for r in sorted(results, key=lambda r: -np.nan_to_num(r["score"])):
        lines.append(f"| {r['design']} | {r['C']:g} | {r['score']:.3f} | "
                     + " | ".join(f"{r[c]:.3f}" if c in r else "" for c in cols) + " |")
    (args.out / "designs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
