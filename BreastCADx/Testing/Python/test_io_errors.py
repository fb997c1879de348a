"""Each class of bad input raises its typed error, naming the file and the cause."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

import dicom_factory as f
from BreastCADxLib.errors import (
    ImageReadError,
    ImageTooLargeError,
    MaskError,
    NoPixelDataError,
    UnsupportedImageError,
)
from BreastCADxLib.io import load_image, load_mask


def _raises(exc, path, *words):
    with pytest.raises(exc) as info:
        load_image(path)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg.lower()
    return msg


def test_missing_file(tmp_path):
    _raises(ImageReadError, tmp_path / "nope.dcm", "no such file")


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    _raises(ImageReadError, tmp_path / "empty.png", "empty")


def test_garbage_named_dcm(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"this is not dicom at all" * 20)
    _raises(ImageReadError, tmp_path / "junk.dcm", "not a dicom file")


def test_truncated_dicom(tmp_path, sample_dicom):
    data = sample_dicom.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 3])
    _raises(ImageReadError, tmp_path / "cut.dcm", "truncated")


def test_truncated_compressed_dicom(tmp_path):
    path = f.us_compressed(tmp_path / "rle.dcm", f.sample_pixels(), f.COMPRESSED["JPEG 2000 Lossless"])
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ImageReadError) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_no_pixel_data(tmp_path):
    _raises(NoPixelDataError, f.no_pixels(tmp_path / "sr.dcm"), "no pixel data", "not an image")


def test_unsupported_transfer_syntax(tmp_path):
    msg = _raises(UnsupportedImageError, f.us_unsupported_syntax(tmp_path / "mpeg.dcm", f.sample_pixels()),
                  "transfer syntax", "not supported")
    assert "1.2.840.10008.1.2.4.100" in msg


def test_text_file_with_png_suffix(tmp_path):
    (tmp_path / "notes.png").write_text("radiology report, not an image")
    _raises(ImageReadError, tmp_path / "notes.png", "not a readable image")


def test_corrupt_nrrd(tmp_path):
    (tmp_path / "bad.nrrd").write_text("NRRD0004\ntype: garbage\n\n")
    _raises(ImageReadError, tmp_path / "bad.nrrd", "not a readable")


def test_unknown_suffix(tmp_path):
    (tmp_path / "scan.xyz").write_bytes(b"1234")
    _raises(UnsupportedImageError, tmp_path / "scan.xyz", "unsupported file type")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    _raises(ImageReadError, tmp_path, "no readable dicom")


def test_folder_with_two_series(tmp_path, sample_dicom):
    f.us(tmp_path / "one.dcm", f.sample_pixels())
    shutil.copy(sample_dicom, tmp_path / "two.dcm")
    _raises(UnsupportedImageError, tmp_path, "2 dicom series")


@pytest.mark.parametrize("kind", ["dicom", "png", "jpg", "tif", "nrrd", "nii.gz"])
def test_too_large_is_refused_from_the_header(tmp_path, sample_dicom, monkeypatch, kind):
    import SimpleITK as sitk

    if kind == "dicom":
        path = sample_dicom
    elif kind in ("nrrd", "nii.gz"):
        path = tmp_path / f"big.{kind}"
        sitk.WriteImage(sitk.Image(60, 50, sitk.sitkUInt8), str(path))
    else:
        path = tmp_path / f"big.{kind}"
        PILImage.fromarray(np.zeros((50, 60), np.uint8)).save(path)
    monkeypatch.setenv("BREASTCADX_MAX_VOXELS", "1000")
    _raises(ImageTooLargeError, path, "exceeds the limit of 1,000 voxels")


def test_mask_size_mismatch(tmp_path, sample_dicom):
    img = load_image(sample_dicom)
    PILImage.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(MaskError, match="does not match image size") as info:
        load_mask(tmp_path / "small.png", img)
    assert "small.png" in str(info.value)


def test_mask_not_binary(tmp_path, sample_dicom):
    img = load_image(sample_dicom)
    rows, cols = img.plane().shape
    PILImage.fromarray(img.plane()).save(tmp_path / "grey.png")  # an image passed as mask
    with pytest.raises(MaskError, match="not binary"):
        load_mask(tmp_path / "grey.png", img)
    assert (rows, cols) == (457, 557)


def test_ultrasound_regions_of_different_scales_measure_the_lesion_with_its_own_region(sample_dicom, tmp_path):
    """Two calibrated regions, 0.1 mm and 0.2 mm per pixel: a lesion inside the right one is measured with 0.2 mm;
    one spanning both is in pixels with a note (was: the first region's scale over the whole image)."""
    import numpy as np
    import pydicom

    from BreastCADxLib.analysis.pipeline import measurement_scale, measurements
    from BreastCADxLib.io import load_image

    ds = pydicom.dcmread(sample_dicom)
    ds.pop("PixelSpacing", None)
    rows, cols = int(ds.Rows), int(ds.Columns)
    half = cols // 2
    regions = []
    for x0, x1, delta in ((0, half - 1, 0.01), (half, cols - 1, 0.02)):
        r = pydicom.Dataset()
        r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x0, 0, x1, rows - 1
        r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3
        r.PhysicalDeltaX = r.PhysicalDeltaY = delta
        regions.append(r)
    ds.SequenceOfUltrasoundRegions = regions
    ds.save_as(tmp_path / "two_regions.dcm")
    image = load_image(tmp_path / "two_regions.dcm")
    assert not image.spacing_known and len(image.us_regions) == 2
    right = np.zeros(image.array.shape, bool)
    right[0, 100:140, half + 20:half + 60] = True
    assert measurement_scale(image, right) == ((0.2, 0.2), None)
    m = measurements(image, right, {})
    assert m["unit"] == "mm" and m["area"] == pytest.approx(40 * 40 * 0.04)
    across = np.zeros(image.array.shape, bool)
    across[0, 100:140, half - 20:half + 20] = True
    m = measurements(image, across, {})
    assert m["unit"] == "px" and "not inside one calibrated ultrasound region" in m["note"]


def test_a_mask_of_two_lesions_is_measured_per_region_and_said(tmp_path):
    import numpy as np

    from BreastCADxLib.analysis.pipeline import measurements
    from BreastCADxLib.image import Image

    image = Image(array=np.zeros((1, 300, 400), np.uint8))
    mask = np.zeros(image.array.shape, bool)
    mask[0, 20:60, 20:80] = True  # 60 px wide
    mask[0, 200:230, 300:330] = True  # 30 px
    m = measurements(image, mask, {"original_shape2D_MaximumDiameter": 403.5})
    assert [r["area"] for r in m["regions"]] == [2400.0, 900.0]
    assert m["regions"][0]["longest_diameter"] == pytest.approx(np.hypot(59, 39), abs=0.01)
    assert "2 separate regions" in m["note"]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_pipe_or_a_device_file_is_named_as_such(kind, tmp_path, capsys):
    """A FIFO (would block forever) or /dev/zero (endless) is refused at once, saying what it is (was 'empty')."""
    import os

    from BreastCADxLib.cli.main import main

    if kind == "fifo":
        path = tmp_path / "stream.png"
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    with pytest.raises(ImageReadError, match="named pipe" if kind == "fifo" else "device file"):
        load_image(path)
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "not an image file" in capsys.readouterr().err


def test_a_pipe_in_a_batch_manifest_is_an_error_row_not_a_hang(tmp_path):
    import csv
    import os

    from BreastCADxLib.cli.main import main

    os.mkfifo(tmp_path / "stream.png")
    (tmp_path / "m.csv").write_text("case_id,image\npipe,stream.png\n")
    assert main(["batch", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out")]) == 1
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["error_code"] == "image_unreadable" and "pipe" in row["error"]


def test_a_cine_is_analysed_on_one_frame_and_says_which(tmp_path, capsys):
    """A 5-frame ultrasound: the middle frame (or --frame N) is analysed, the result says so, the mask lies on the
    cine's grid; a frame outside the cine is a clear exit 2 (was: 'radiomics features missing ... (parameter file
    changed?)' after the whole analysis)."""
    import json

    from BreastCADxLib.cli.main import main

    img = load_image(f.__file__.replace("dicom_factory.py", "") + "../Data/busi/malignant_001.png").array[0]
    cine = f.us(tmp_path / "cine.dcm", np.stack([np.roll(img, 3 * k, axis=1) for k in range(5)]))
    assert main(["analyze", str(cine), "--out", str(tmp_path / "a"), "--expect-lesion"]) == 0
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["frame"] == {"analysed": 2, "frames": 5}
    assert "frame_selected" in [fl["code"] for fl in result["flags"]]
    mask = load_image(tmp_path / "a" / "mask.nrrd").array
    assert mask.shape[0] == 5 and mask[2].any() and not np.delete(mask, 2, axis=0).any()
    assert main(["analyze", str(cine), "--out", str(tmp_path / "b"), "--frame", "4"]) == 0
    assert json.loads((tmp_path / "b" / "result.json").read_text())["frame"]["analysed"] == 4
    assert main(["analyze", str(cine), "--out", str(tmp_path / "c"), "--frame", "9"]) == 2
    assert "frames 0 to 4" in capsys.readouterr().err
