"""Writing a fusion bundle, for both training sides (`breastcadx train` and training/classification): its OOD
statistics, and its arrays + typed card written, reloaded as `analyze` will load them and checked against the fit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.cards import FusionCard
from BreastCADxLib.errors import ModelError

OOD_RIDGE = 1e-3  # added to the covariance's diagonal
OOD_PERCENTILE = 99  # of the fitting rows' own distances: the threshold


def ood_statistics(fused: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, precision and threshold of the Mahalanobis distance over the fitting rows' fused vectors."""
    cov = np.cov(fused, rowvar=False) + OOD_RIDGE * np.eye(fused.shape[1])
    mean, precision = fused.mean(axis=0), np.linalg.inv(cov)
    d = fused - mean
    dist = np.sqrt(np.einsum("ij,jk,ik->i", d, precision, d))
    return mean, precision, float(np.percentile(dist, OOD_PERCENTILE))


def write_bundle(folder: Path, card: FusionCard, arrays: dict[str, np.ndarray],
                 check: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, tolerance: float = 1e-6
                 ) -> tuple[FusionCard, float]:
    """Arrays (card.arrays) + the card (its sha256 and files set from the arrays file) into `folder`, through
    registry.save_card; with `check` = (radiomics rows, deep rows, the fit's probabilities), the bundle is loaded
    back as `analyze` loads it and must reproduce them (ModelError naming the card otherwise). Returns the card
    written and the largest difference (0 without a check)."""
    from BreastCADxLib.analysis.classifier import load_classifier
    from BreastCADxLib.analysis.registry import save_card, sha256_of

    np.savez(Path(folder) / card.arrays, **arrays)
    sha = sha256_of(Path(folder) / card.arrays)
    card = replace(card, sha256=sha, files={card.arrays: sha})
    save_card(folder, card)
    if check is None:
        return card, 0.0
    rad, deep, expected = check
    diff = float(np.abs(load_classifier(card.id, folder).raw_proba(rad, deep)[0] - expected).max())
    if diff > tolerance:
        raise ModelError(f"the written bundle does not reproduce the fit (max |dp| {diff:.2e})", card.path)
    return card, diff
