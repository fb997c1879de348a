"""The input guard: ultrasound from both hospitals passes; other modalities, photographs, noise and blank images
are refused before any model runs, naming the file and why; an override analyses and flags."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

from BreastCADxLib.analysis.guard import InputRefused, check_input, get_guard
from BreastCADxLib.cli.main import main
from BreastCADxLib.io import load_image
from dicom_factory import mammogram_for_processing, us

DATA = Path(__file__).resolve().parents[1] / "Data"
ULTRASOUND = sorted((DATA / "busi").glob("*[0-9].png")) + sorted((DATA / "busbra_l5").glob("bus_*[lr].png"))


MAMMOGRAMS = sorted((DATA / "minimias").glob("mdb*.png"))  # mini-MIAS film mammograms (see the README there)


def mammogram_dicom(folder: Path) -> Path:
    """A mini-MIAS film as a Digital Mammography DICOM (for processing, MONOCHROME1, 14-bit)."""
    film = np.asarray(PILImage.open(MAMMOGRAMS[0]).convert("L")).astype(np.uint16)
    return mammogram_for_processing(folder / "mg.dcm", (255 - film) * 64, spacing=0.2)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> dict[str, Path]:
    """Non-ultrasound images with no modality to give them away (PNG), at ultrasound-like sizes."""
    d = tmp_path_factory.mktemp("foreign")
    out = {}
    out["mammogram as PNG"] = d / "mammogram.png"
    PILImage.open(MAMMOGRAMS[1]).convert("L").resize((400, 640)).save(out["mammogram as PNG"])
    rng = np.random.default_rng(1)
    out["noise"] = d / "noise.png"
    PILImage.fromarray(rng.integers(0, 256, (480, 560), dtype=np.uint8)).save(out["noise"])
    out["checkerboard"] = d / "checker.png"
    PILImage.fromarray(((np.indices((480, 560)) // 40).sum(0) % 2 * 255).astype(np.uint8)).save(out["checkerboard"])
    return out


@pytest.mark.parametrize("path", ULTRASOUND + ["sample"], ids=lambda p: getattr(p, "name", p))
def test_ultrasound_of_both_hospitals_passes(path, sample_dicom):
    image = load_image(sample_dicom if path == "sample" else path)
    check = check_input(image)
    assert check.reasons == [] and not check.overridden
    assert check.ultrasound_score >= check.threshold


@pytest.mark.parametrize("path", ULTRASOUND, ids=lambda p: p.name)
def test_depth_runs_down_the_committed_ultrasound_and_up_when_it_is_turned_over(path):
    """The depth score: above the flag cut upright (no caution), the same score negated upside down, which is
    flagged or refused (analysis.orientation)."""
    from BreastCADxLib.analysis.orientation import DEPTH_FLAG_CUT, speckle_check

    grey = load_image(path).array[0]
    upright, turned = speckle_check(grey), speckle_check(grey[::-1])
    assert upright.depth > DEPTH_FLAG_CUT and upright.cautions() == [] and upright.reasons() == []
    assert turned.depth == pytest.approx(-upright.depth, abs=0.05)
    assert turned.cautions() or any("upside down" in r for r in turned.reasons())


def test_threshold_separates_ultrasound_from_foreign_images(foreign):
    guard = get_guard()
    lowest_us = min(guard.score(load_image(p)) for p in ULTRASOUND)
    highest_foreign = max(guard.score(load_image(p)) for p in foreign.values())
    assert highest_foreign < guard.threshold <= lowest_us


@pytest.mark.parametrize("kind", ["mammogram as PNG", "noise", "checkerboard"])
def test_foreign_images_are_refused_naming_file_and_cause(foreign, kind, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(foreign[kind]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(foreign[kind]) in err and "does not look like the breast ultrasound" in err
    assert "--allow-unvalidated-input" in err and not out.exists()
    told = err.split("(if it is an ultrasound image:")[0]  # orientation words only as a hint for ultrasound
    assert not any(w in told for w in ("turned by 90", "upside down", "inverted"))


def test_mammography_is_refused_by_modality(tmp_path, capsys):
    path = mammogram_dicom(tmp_path)
    assert main(["analyze", str(path), "--out", str(tmp_path / "mg"), "--dicom-out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "mammography (MG): no model for this modality is installed" in err
    assert not (tmp_path / "mg").exists() and not (tmp_path / "d").exists()
    assert main(["segment", str(path), "--out", str(tmp_path / "m.nrrd")]) == 2
    assert "mammography (MG)" in capsys.readouterr().err


def _nan_nrrd(path: Path) -> Path:
    img = sitk.GetImageFromArray(np.full((60, 80), np.nan, np.float32))
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize("make, cause", [
    (lambda d: PILImage.fromarray(np.zeros((400, 500), np.uint8)).save(d / "black.png") or d / "black.png",
     "blank (every pixel is 0)"),
    (lambda d: us(d / "flat.dcm", np.full((400, 500), 77, np.uint8)), "blank (every pixel is 77)"),
    (lambda d: _nan_nrrd(d / "nan.nrrd"), "nan or infinite"),
    (lambda d: PILImage.fromarray(np.where(np.indices((400, 500))[0] == 5, 255, 40).astype(np.uint8))
     .save(d / "line.png") or d / "line.png", "nearly constant"),
])
def test_nothing_to_analyse_is_refused_even_with_the_override(tmp_path, make, cause, capsys):
    path = make(tmp_path)
    assert main(["analyze", str(path), "--out", str(tmp_path / "o"), "--allow-unvalidated-input"]) == 2
    err = capsys.readouterr().err.lower()
    assert str(path).lower() in err and cause in err and "traceback" not in err
    assert not (tmp_path / "o").exists()


def test_implausible_size_is_refused(tmp_path, capsys):
    big = np.asarray(PILImage.open(ULTRASOUND[0]).convert("L").resize((3000, 2400)))
    PILImage.fromarray(big).save(tmp_path / "big.png")
    with pytest.raises(InputRefused, match="3000x2400 pixels: outside"):
        check_input(load_image(tmp_path / "big.png"))


def test_override_analyses_and_the_flag_travels_everywhere(foreign, tmp_path, sample_dicom):
    """Noise with a dark ellipse, analysed on request: result.json, results.csv and the SR carry the flag."""
    from BreastCADxLib.results.dicom_export import read_sr_summary

    src = pydicom.dcmread(sample_dicom)
    rng = np.random.default_rng(2)
    noise = rng.integers(60, 256, (src.Rows, src.Columns), dtype=np.uint8)
    yy, xx = np.indices(noise.shape)
    inside = ((yy - 220) / 60) ** 2 + ((xx - 280) / 90) ** 2 < 1
    noise[inside] = rng.integers(0, 40, int(inside.sum()))
    path = us(tmp_path / "noise.dcm", noise)
    out = tmp_path / "o"
    assert main(["analyze", str(path), "--out", str(out), "--allow-unvalidated-input", "--expect-lesion",
                 "--dicom-out", str(out / "dicom")]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["input_check"]["overridden"] and result["flags"][0]["code"] == "input_unvalidated"
    assert result["lesion_found"]  # the ellipse, classified
    texts = read_sr_summary(out / "dicom" / "sr.dcm")["text"]
    assert any(t.startswith("Flag input_unvalidated: input outside") for t in texts)
    (tmp_path / "m.csv").write_text(f"case_id,image\nnoise,{path.name}\n")
    assert main(["batch", str(tmp_path / "m.csv"), "--out", str(tmp_path / "b")]) == 1  # refused: a failed case
    assert main(["batch", str(tmp_path / "m.csv"), "--out", str(tmp_path / "b2"), "--allow-unvalidated-input"]) == 0
    with open(tmp_path / "b2" / "results.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["flags"].split(";")[0] == "input_unvalidated"
    with open(tmp_path / "b" / "results.csv", newline="") as f:
        refused = next(csv.DictReader(f))
    assert refused["status"] == "error" and "does not look like the breast ultrasound" in refused["error"]
