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
MG_DATA = MODULE_DIR / "Testing" / "Data" / "minimias"


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


@pytest.fixture(scope="session")
def mg_set(tmp_path_factory) -> Path:
    """A mammography set trained on the committed mini-MIAS films (15 films, 6 + 6 findings, 2 folds) by `breastcadx
    train`, with neither segmenter nor image members: the user's box locates the finding."""
    out = tmp_path_factory.mktemp("mg") / "mg-demo"
    r = subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", "train", str(MG_DATA / "findings.csv"),
                        "--modality", "MG", "--out", str(out), "--folds", "2", "--device", "cpu",
                        "--segmenter-epochs", "0", "--members", "none"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out
