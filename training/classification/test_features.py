"""Write the held-out test rows of a feature set to BreastCADx/Testing/Data/busi_test_features.npz.

    python -m training.classification.test_features --features runs/features_v2/lesion_cnn_lite0

The unit tests score the shipped classifier on these rows (test split, reference masks) and check that the
library still computes the same features for a committed case.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path("BreastCADx/Testing/Data/busi_test_features.npz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, required=True)
    args = ap.parse_args()
    z = np.load(args.features / "reference.npz", allow_pickle=False)
    test = z["split"] == "test"
    np.savez_compressed(OUT, case=z["case"][test], label=z["label"][test], radiomics=z["radiomics"][test],
                        radiomics_names=z["radiomics_names"], deep=z["deep"][test].astype(np.float32),
                        deep_model=z["deep_model"])
    print(f"{int(test.sum())} test lesions -> {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
