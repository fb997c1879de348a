"""First use in a fresh Slicer: the module starts, its panel appears and Segment asks to install, in a Python that
holds only what a stock Slicer 5.x Python holds (no torch, MONAI, pyradiomics, onnxruntime, scikit-learn, skops,
highdicom), with stand-ins for `slicer`, `qt`, `ctk` and `SampleData` (slicer_standin/)."""

import json
import os
import subprocess
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1]
STANDIN = HERE / "slicer_standin"
# what Slicer's SuperBuild puts in its Python (with what they need themselves); nothing else
STOCK = ("numpy", "scipy", "SimpleITK", "pydicom", "pillow", "requests", "packaging", "dicomweb-client", "vtk")
HEAVY = {"torch", "monai", "radiomics", "onnxruntime", "sklearn", "skops", "highdicom", "xgboost", "lightgbm"}


def _closure(names) -> set[str]:
    out, todo = set(), list(names)
    while todo:
        dist = metadata.distribution(todo.pop())
        name = dist.metadata["Name"].lower()
        if name in out:
            continue
        out.add(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                try:
                    metadata.distribution(req.name)
                except metadata.PackageNotFoundError:
                    continue  # an optional platform package that is not installed here
                todo.append(req.name)
    return out


@pytest.fixture(scope="module")
def stock_python(tmp_path_factory) -> Path:
    """A venv whose site-packages holds only the stock set (linked from this environment's installs)."""
    root = tmp_path_factory.mktemp("stock-slicer-python")
    venv.create(root, with_pip=False, symlinks=True)
    site = next(root.glob("lib/python3*/site-packages"))
    for name in sorted(_closure(STOCK)):
        dist = metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(dist.locate_file(top))
            if src.exists() and not (site / top).exists() and top != "__pycache__":
                (site / top).symlink_to(src)
    return root / "bin" / "python"


def first_use(python: Path, confirm: str, preimport: str = "", pydeps: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join([str(STANDIN), str(MODULE_DIR)]), STANDIN_CONFIRM=confirm,
               STANDIN_PREIMPORT=preimport, PYTHONNOUSERSITE="1", STANDIN_PYDEPS="1" if pydeps else "0")
    out = subprocess.run([str(python), str(STANDIN / "first_use_driver.py")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _calls(report, kind):
    return [c[1:] for c in report["calls"] if c[0] == kind]


def test_the_stock_python_lacks_the_heavy_packages(stock_python):
    names = sorted(HEAVY | {"vtk"})
    probe = f"import importlib.util as u; print(sorted(m for m in {names!r} if u.find_spec(m)))"
    out = subprocess.run([str(stock_python), "-c", probe], capture_output=True, text=True, env={"PATH": ""})
    assert out.stdout.strip() == "['vtk']"


def test_start_up_and_panel_need_only_the_stock_packages_and_a_declined_install_is_said_plainly(stock_python):
    r = first_use(stock_python, confirm="no")
    assert r["foreign_before_installer"] == []
    assert _calls(r, "registerCustomSampleDataSource") == [["BreastCADx US sample"]]
    terms = _calls(r, "LoadTerminologyFromFile")
    assert any(c[0].endswith("SegmentationCategoryType-BreastCADx.term.json") for c in terms)
    assert any(c[0].endswith("BreastCADx.ui") for c in _calls(r, "loadUI"))
    assert r["installer_started"] and _calls(r, "ensure_dependencies")[0][0].endswith("requirements.txt")
    assert _calls(r, "confirm") and _calls(r, "pip_install") == []
    assert r["raised"] is None and _calls(r, "errorDisplay") == []
    assert "declined" in r["status"] and "Traceback" not in r["status"]


def test_an_accepted_install_installs_torch_and_the_requirements_file(stock_python):
    r = first_use(stock_python, confirm="yes")
    assert r["foreign_before_installer"] == []
    pip = _calls(r, "pip_install")
    assert pip[0][0].startswith("['torch'")
    requirements = str(MODULE_DIR / "Resources" / "requirements.txt")
    assert any(c[0] == str(["-r", requirements]) for c in pip)
    assert r["raised"] is None  # what follows (here: no image loaded) is shown in the panel, not raised into Qt
    for text, _details in _calls(r, "errorDisplay"):
        assert "Traceback" not in text


def test_slicer_5_11_installs_the_requirements_file_through_pydeps(stock_python):
    r = first_use(stock_python, confirm="yes", pydeps=True)
    assert r["foreign_before_installer"] == []
    assert _calls(r, "load_requirements")[0][0].endswith("requirements.txt")
    assert _calls(r, "pip_ensure")[0][0] == "BreastCADx"
    assert all(not c[0].startswith("['-r'") for c in _calls(r, "pip_install"))  # torch only, by pip_install


def test_the_check_sees_a_heavy_import_before_the_installer(stock_python):
    r = first_use(stock_python, confirm="no", preimport="BreastCADxLib.analysis.segmentation")
    assert "torch" in r["foreign_before_installer"]
