"""Classifier designs compared across sites: feature blocks + one L2 logistic regression, fitted on NPZ features.

Blocks: `rad_all` (102 pyradiomics features), `rad_inv` (the dimensionless ones: no lesion size in pixels, no
absolute grey level), `desc` (lexicon descriptors), `deep_box` / `deep_mask` (frozen ImageNet EfficientNet-Lite0 on
the box crop / the mask-aware crop). Each block is standardised (deep blocks then PCA to 32) and the blocks are
concatenated; the same arithmetic is what the shipped bundle computes (radiomics branch, deep branch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from BreastCADxLib.analysis.descriptors import NAMES as DESCRIPTOR_NAMES

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
    "desc+deep_mask": ("desc", "deep_mask"),
    "rad_inv+desc+deep_mask": ("rad_inv", "desc", "deep_mask"),
    "rad_all+desc+deep_mask": ("rad_all", "desc", "deep_mask"),
}
SCORED = ("expect", "roi", "perturbed", "reference")
PCA_DIM = 32


def load(site: str, kind: str, seg: str | None, root: Path = FEATURES, test: bool = False) -> dict:
    name = f"{site}__{kind}" + (f"__{seg}" if kind in ("expect", "roi") else "") + ("__test" if test else "")
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
            parts.append(self.pre_[b].transform(x))
        return np.hstack(parts)

    def fit(self, d: dict) -> BlockModel:
        self.pre_: dict = {}
        x = self._x(d, fit=True)
        self.lr_ = LogisticRegression(C=self.c, max_iter=5000).fit(x, d["label"])
        return self

    def proba(self, d: dict) -> np.ndarray:
        return self.lr_.predict_proba(self._x(d))[:, 1]


def fit_rows(sites: list[str], kinds: tuple[str, ...], own_pass: dict[str, str] | None = None,
             root: Path = FEATURES) -> dict:
    """Fitting rows of the feature member: per site each lesion once per kind. `reference` and `perturbed` are the
    reference outline and its redraw; `expect` / `roi` are the masks of the set's own segmenter run over its own
    training images (own_pass: site -> site_pass name), so the member also learns that segmenter's outline style."""
    own = own_pass or {}
    missing = [s for s in sites if s not in own and any(k in ("expect", "roi") for k in kinds)]
    if missing:
        raise ValueError(f"fitting on segmenter masks needs the segmenter pass of {', '.join(missing)}")
    return stack([load(s, k, own.get(s) if k in ("expect", "roi") else None, root) for s in sites for k in kinds])


def parse_own_pass(text: str) -> dict[str, str]:
    """'busi=busi-only,busbra_l5=seg_B' -> {site: site_pass name}."""
    return dict(part.split("=", 1) for part in text.split(",") if part)


def stack(ds: list[dict]) -> dict:
    keys = ("label", "radiomics", "descriptors", "deep_box", "deep_mask", "group", "case")
    keys += tuple(k for k in ("split", "fold") if all(k in d for d in ds))
    return {**{k: np.concatenate([d[k] for d in ds]) for k in keys}, "radiomics_names": ds[0]["radiomics_names"],
            "descriptor_names": ds[0]["descriptor_names"]}


def named_columns(blocks: tuple[str, ...], radiomics_names: list[str] | None = None) -> list[str]:
    """The named (non-deep) inputs of a design in model order, as the bundle and the pipeline name them."""
    out: list[str] = []
    for b in blocks:
        if b == "rad_all":
            out += list(radiomics_names or [])
        elif b == "rad_inv":
            out += list(RAD_INVARIANT)
        elif b == "desc":
            out += [f"descriptor_{n}" for n in DESCRIPTOR_NAMES]
    return out


def named_matrix(d: dict, names: list[str]) -> np.ndarray:
    """Columns of a feature file by name: radiomics by their pyradiomics name, descriptors as descriptor_<name>."""
    rad = list(d["radiomics_names"])
    desc = {f"descriptor_{n}": j for j, n in enumerate(d["descriptor_names"])}
    return np.column_stack([d["descriptors"][:, desc[n]] if n in desc else d["radiomics"][:, rad.index(n)]
                            for n in names])
