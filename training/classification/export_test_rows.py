"""Write the held-out test rows of both sites (reference outlines) to BreastCADx/Testing/Data/test_rows.npz.

    python -m training.classification.export_test_rows

The unit tests score the shipped classifiers on these rows: the two-site set on both sites' test patients and
the busi-only set on BUS-BRA L5's (a cross-site check), against floors taken from the benchmark. Columns are in
the shipped bundle's order (`named_names`), deep features from the crop the bundle uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.classifier import load_classifier
from training.classification.designs import load, named_matrix

OUT = Path("BreastCADx/Testing/Data/test_rows.npz")


def main() -> None:
    clf = load_classifier()
    rows = [load(site, "reference", None, test=True) for site in ("busi", "busbra_l5")]
    deep = "deep_box" if clf.card.get("deep_crop") == "box" else "deep_mask"
    np.savez_compressed(
        OUT, case=np.concatenate([d["case"] for d in rows]),
        site=np.concatenate([np.full(len(d["case"]), s) for s, d in zip(("busi", "busbra_l5"), rows)]),
        group=np.concatenate([d["group"] for d in rows]), label=np.concatenate([d["label"] for d in rows]),
        birads=np.concatenate([d["birads"] for d in rows]), named_names=np.array(clf.radiomics_names),
        named=np.vstack([named_matrix(d, clf.radiomics_names) for d in rows]),
        deep=np.vstack([d[deep] for d in rows]).astype(np.float32),
        **{k: np.concatenate([d[k] for d in rows]).astype(np.float32)  # image members per set (box_probs)
           for k in rows[0] if k.startswith(("box_", "whole_"))})
    print(f"{sum(len(d['case']) for d in rows)} test lesions -> {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
