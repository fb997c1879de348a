"""The bundled sample case is valid DICOM (dciodvfy) and comes from the held-out test split."""

from __future__ import annotations

import csv
import shutil
import subprocess

import pytest

from conftest import REPO


def test_sample_passes_dciodvfy(sample_dicom):
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy (Debian dicom3tools) is required for this test: apt-get install dicom3tools")
    r = subprocess.run(["dciodvfy", str(sample_dicom)], capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert "USImage" in out  # recognised as the US Image IOD
    errors = [line for line in out.splitlines() if line.startswith("Error")]
    assert errors == []


def test_sample_is_a_test_split_case():
    import pydicom

    ds = pydicom.dcmread(REPO / "BreastCADx/Resources/SampleData/BreastCADx_US_sample.dcm")
    case = ds.DerivationDescription.split("'")[1]
    split = {r["case"]: r for r in csv.DictReader(open(REPO / "training/splits/busi.csv"))}
    assert split[case]["split"] == "test" and split[case]["label"] == "malignant"
