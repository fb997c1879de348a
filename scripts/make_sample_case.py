"""Wrap one held-out BUSI case as a US DICOM + reference mask for the demo and the tests.

    python scripts/make_sample_case.py --data ../shared/data/busi --case malignant_183
The case must be in the test split (never seen in training).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from BreastCADxLib.io import load_image, save_mask
from BreastCADxLib.io.dicom_write import write_ultrasound

OUT = Path("BreastCADx/Resources/SampleData")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/busi"))
    ap.add_argument("--case", default="malignant_183")
    ap.add_argument("--split", type=Path, default=Path("training/splits/busi.csv"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    split = {r["case"]: r for r in csv.DictReader(open(args.split))}
    row = split[args.case]
    if row["split"] != "test":
        raise SystemExit(f"{args.case} is in the {row['split']} split; the sample must come from test")
    label = row["label"]
    grey = np.asarray(PILImage.open(args.data / label / f"{args.case}.png").convert("L"))
    mask = np.asarray(PILImage.open(args.data / label / f"{args.case}_mask.png").convert("L")) > 127
    dcm = write_ultrasound(
        args.out / "BreastCADx_US_sample.dcm",
        grey,
        patient_name="BREASTCADX^SYNTHETIC^SAMPLE",
        patient_id="BCADX-SAMPLE-001",
        study_description="Breast US (BUSI sample, synthetic patient)",
        derivation=f"BUSI {label} image '{row['case']}' (Al-Dhabyani et al. 2020) wrapped as DICOM",
    )
    image = load_image(dcm)
    save_mask(mask[None], image, args.out / "BreastCADx_US_sample_mask.nrrd")
    print(f"wrote {dcm} and its mask ({label}, {int(mask.sum())} lesion pixels)")


if __name__ == "__main__":
    main()
