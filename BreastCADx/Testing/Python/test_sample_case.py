"""The bundled sample case is valid DICOM (dciodvfy) and comes from the held-out test split."""

from __future__ import annotations

import csv

from conftest import REPO, dciodvfy


def test_sample_passes_dciodvfy(sample_dicom):
    out, errors = dciodvfy(sample_dicom)
    assert "USImage" in out  # recognised as the US Image IOD
    assert errors == []


def test_sample_is_a_test_split_case():
    import pydicom

    ds = pydicom.dcmread(REPO / "BreastCADx/Resources/SampleData/BreastCADx_US_sample.dcm")
    case = ds.DerivationDescription.split("'")[1]
    split = {r["case"]: r for r in csv.DictReader(open(REPO / "training/splits/busi.csv"))}
    assert split[case]["split"] == "test" and split[case]["label"] == "malignant"
