from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

MODULE_DIR = HERE.parents[1]  # BreastCADx/
REPO = MODULE_DIR.parent
SAMPLE_DIR = MODULE_DIR / "Resources" / "SampleData"
# the design trained on BUSI alone (a training output, not shipped): a set that never saw BUS-BRA or BUS-UCLM
BUSI_ONLY = MODULE_DIR / "Testing" / "Data" / "model_sets" / "busi-only"


def dciodvfy(path: Path) -> tuple[str, list[str]]:
    """Run dicom3tools' validator: (its whole output, the lines that are errors)."""
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy (Debian dicom3tools) is required for this test: apt-get install dicom3tools")
    r = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
    out = r.stdout + r.stderr
    return out, [line for line in out.splitlines() if line.startswith("Error")]


@pytest.fixture(scope="session")
def sample_dicom() -> Path:
    return SAMPLE_DIR / "BreastCADx_US_sample.dcm"


@pytest.fixture(scope="session")
def sample_mask() -> Path:
    return SAMPLE_DIR / "BreastCADx_US_sample_mask.nrrd"


@pytest.fixture()
def scene():
    """A real vtkMRMLScene from slicer-core, set as slicer.mrmlScene."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is part of the test install")
    sc = slicer.vtkMRMLScene()
    slicer.mrmlScene = sc
    yield sc
    sc.Clear(1)
