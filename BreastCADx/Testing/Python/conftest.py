from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
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


DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PACS_USER, PACS_PASSWORD = "radiologist", "s3cret-test-only"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A real Orthanc with DICOMweb and basic auth, on a free loopback port, in a temporary folder (one per test
    module: each module sees only the studies it stored)."""
    import requests

    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(binary).exists() or not DICOMWEB_PLUGIN.exists():
        pytest.fail("Orthanc with its DICOMweb plugin is required: apt-get install orthanc orthanc-dicomweb")
    root = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "BreastCADxTest", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {PACS_USER: PACS_PASSWORD},
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "w")
    proc = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if requests.get(f"{url}/system", auth=(PACS_USER, PACS_PASSWORD), timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-2000:]}")
        time.sleep(0.3)
    yield f"{url}/dicom-web"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture()
def password(monkeypatch):
    """The test PACS user's password where the DICOMweb client reads it (never the command line)."""
    from BreastCADxLib.io.dicomweb import PASSWORD_ENV

    monkeypatch.setenv(PASSWORD_ENV, PACS_PASSWORD)
