"""Every supported input format loads with the right pixels, modality and geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

import dicom_factory as f
from BreastCADxLib.image import Image
from BreastCADxLib.io import load_image, load_mask, save_image, save_mask
from BreastCADxLib.io.dicom_write import US_MULTIFRAME_STORAGE


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return f.sample_pixels()


def test_sample_case_is_us_without_invented_spacing(sample_dicom):
    img = load_image(sample_dicom)
    assert img.modality == "US"
    assert img.size == (557, 457, 1)
    assert img.spacing_known is False  # BUSI has no calibration: reported as unknown
    assert img.metadata["PatientName"].startswith("BREASTCADX^SYNTHETIC")
    assert img.array.dtype == np.uint8 and 20 < img.array.mean() < 200


def test_us_region_calibration_gives_mm_spacing(tmp_path, pixels):
    img = load_image(f.us(tmp_path / "cal.dcm", pixels, spacing_mm=(0.1, 0.12)))
    assert img.spacing_known
    assert img.spacing[:2] == pytest.approx((0.1, 0.12))


@pytest.mark.parametrize("name", list(f.COMPRESSED))
def test_lossless_compressed_syntaxes_decode_exactly(tmp_path, pixels, name):
    path = f.us_compressed(tmp_path / "c.dcm", pixels, f.COMPRESSED[name])
    img = load_image(path)
    assert img.metadata["TransferSyntaxUID"] == str(f.COMPRESSED[name])
    np.testing.assert_array_equal(img.plane(), pixels)


def test_jpeg_baseline_ybr_full_422_converted_to_grey(tmp_path, pixels):
    img = load_image(f.us_jpeg_ybr(tmp_path / "j.dcm", pixels))
    assert img.photometric == "YBR_FULL_422"
    assert img.array.dtype == np.uint8
    assert np.abs(img.plane().astype(int) - pixels).mean() < 3.0  # lossy, but the same picture


def test_rgb_us_becomes_luminance(tmp_path, pixels):
    img = load_image(f.us_rgb(tmp_path / "rgb.dcm", pixels))
    assert img.photometric == "RGB"
    assert np.abs(img.plane().astype(int) - pixels).max() <= 1


def test_palette_color_applies_lut(tmp_path, pixels):
    img = load_image(f.us_palette(tmp_path / "p.dcm", pixels))
    assert img.photometric == "PALETTE COLOR"
    assert np.abs(img.plane().astype(int) - pixels).max() <= 1


def test_monochrome1_is_inverted_to_monochrome2(tmp_path, pixels):
    img = load_image(f.us_monochrome1(tmp_path / "m1.dcm", pixels))
    np.testing.assert_array_equal(img.plane(), pixels)


def test_multiframe_us_keeps_frames(tmp_path, pixels):
    cine = np.stack([pixels, np.roll(pixels, 3, axis=1), np.roll(pixels, 6, axis=1)])
    img = load_image(f.us(tmp_path / "cine.dcm", cine))
    assert img.frames == 3 and img.metadata["SOPClassUID"] == US_MULTIFRAME_STORAGE
    np.testing.assert_array_equal(img.array[2], cine[2])


def test_mammogram_for_processing_monochrome1_with_imager_spacing(tmp_path):
    raw = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 5) % 16000
    img = load_image(f.mammogram_for_processing(tmp_path / "mg.dcm", raw, spacing=0.07))
    assert img.modality == "MG" and img.metadata["PresentationIntentType"] == "FOR PROCESSING"
    assert img.spacing_known and img.spacing[:2] == pytest.approx((0.07, 0.07))
    np.testing.assert_array_equal(img.plane().astype(int), (1 << 14) - 1 - raw.astype(int))


def test_mr_series_sorted_by_position_with_geometry(tmp_path):
    folder, stack = f.mr_series(tmp_path / "mr", n=6, gap=2.5)
    img = load_image(folder)
    assert img.modality == "MR" and img.frames == 6
    np.testing.assert_array_equal(img.array, stack)  # order by ImagePositionPatient, not file name
    assert img.spacing == pytest.approx((0.6, 0.8, 2.5))
    assert img.origin == pytest.approx((10.0, -20.0, 30.0))
    d = np.array(img.direction).reshape(3, 3)
    assert d[:, 0] == pytest.approx([np.cos(0.3), np.sin(0.3), 0.0])


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("RGB", ".png"), ("P", ".png"), ("L", ".jpg"), ("L", ".bmp")])
def test_raster_formats(tmp_path, pixels, mode, suffix):
    path = tmp_path / f"img{suffix}"
    pil = PILImage.fromarray(pixels)
    (pil.convert(mode) if mode != "P" else pil.convert("P", palette=PILImage.Palette.ADAPTIVE)).save(path)
    img = load_image(path)
    assert img.size == (pixels.shape[1], pixels.shape[0], 1) and not img.spacing_known
    tol = 0 if (mode, suffix) in (("L", ".png"), ("L", ".bmp"), ("RGB", ".png")) else 12
    assert np.abs(img.plane().astype(int) - pixels).mean() <= max(tol, 0.5)


def test_16bit_png_keeps_depth(tmp_path):
    arr = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)
    PILImage.fromarray(arr).save(tmp_path / "d16.png")
    img = load_image(tmp_path / "d16.png")
    assert img.array.dtype == np.uint16
    np.testing.assert_array_equal(img.plane(), arr)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_geometry_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    c, s = np.cos(0.4), np.sin(0.4)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    original = Image(array=rng.integers(0, 3000, (5, 20, 30)).astype(np.int16), spacing=(0.5, 0.7, 3.0),
                     origin=(-12.5, 40.0, 7.0), direction=direction, spacing_known=True, modality="MR")
    back = load_image(save_image(original, tmp_path / f"v{suffix}"))
    np.testing.assert_array_equal(back.array, original.array)
    assert back.same_grid(original)
    assert back.spacing_known


def test_dicom_to_nrrd_round_trip_keeps_unknown_spacing(tmp_path, sample_dicom):
    img = load_image(sample_dicom)
    back = load_image(save_image(img, tmp_path / "s.nrrd"))
    assert back.same_grid(img) and back.spacing_known is False and back.modality == "US"
    np.testing.assert_array_equal(back.array, img.array)


def test_2d_nifti_reads_as_one_frame(tmp_path, pixels):
    itk = sitk.GetImageFromArray(pixels)
    itk.SetSpacing((0.2, 0.3))
    sitk.WriteImage(itk, str(tmp_path / "flat.nii"))
    img = load_image(tmp_path / "flat.nii")
    assert img.frames == 1 and img.spacing[:2] == pytest.approx((0.2, 0.3))


def test_mask_round_trip_png_and_nrrd(tmp_path, sample_dicom, sample_mask):
    img = load_image(sample_dicom)
    mask = load_mask(sample_mask, img)
    assert mask.dtype == bool and mask.sum() == 54718
    for name in ("m.png", "m.nrrd"):
        np.testing.assert_array_equal(load_mask(save_mask(mask, img, tmp_path / name), img), mask)


def test_a_dicomdir_export_is_followed_from_its_folder_or_the_dicomdir_file(tmp_path, sample_dicom):
    """A CD / USB export: DICOMDIR + files in sub-folders without suffixes. Read through the DICOMDIR (was 'folder
    holds no readable DICOM image series')."""
    import pydicom
    from pydicom.fileset import FileSet

    fs = FileSet()
    fs.add(pydicom.dcmread(sample_dicom))
    fs.write(tmp_path / "export")
    direct = load_image(sample_dicom)
    for path in (tmp_path / "export", tmp_path / "export" / "DICOMDIR"):
        img = load_image(path)
        np.testing.assert_array_equal(img.array, direct.array)
        assert img.modality == "US"


def _colour_picture(pixels: np.ndarray) -> np.ndarray:
    """The grey picture with a coloured box (a Doppler-like overlay): RGB uint8."""
    rgb = np.repeat(pixels[..., None], 3, axis=-1).copy()
    h, w = pixels.shape
    rgb[h // 4:h // 2, w // 3:w // 2] = (200, 40, 40)
    return rgb


def _ybr_full(path, rgb: np.ndarray, syntax=None):
    from pydicom.pixels import convert_color_space

    ds = f.ultrasound_dataset(rgb[..., 0])
    f._rgb_header(ds, "YBR_FULL")
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    if syntax is not None:
        ds.compress(syntax)
    return f.save(ds, path)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(float) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("syntax", [None, "RLE Lossless"], ids=["native", "rle"])
def test_ybr_colour_is_decoded_once_and_converted_exactly(tmp_path, pixels, monkeypatch, syntax):
    """YBR_FULL colour data (uncompressed, RLE): one decode, read as stored and converted to RGB once; the grey
    is the picture's luminance and the colour is seen (the guard refuses colour)."""
    from pydicom.pixels.decoders.base import Decoder

    rgb = _colour_picture(pixels)
    path = _ybr_full(tmp_path / "y.dcm", rgb, f.COMPRESSED.get(syntax))
    calls = []
    real = Decoder.as_array
    monkeypatch.setattr(Decoder, "as_array", lambda self, *a, **k: calls.append(k) or real(self, *a, **k))
    img = load_image(path)
    assert len(calls) == 1 and calls[0].get("raw") is True
    assert np.abs(img.plane().astype(float) - _luminance(rgb)).max() <= 2.5  # YBR_FULL rounding, both ways
    assert img.metadata["colour_fraction"] > 0.03 and not img.metadata.get("corrections")


def test_jpeg_ybr_full_422_colour_keeps_its_colour_and_luminance(tmp_path, pixels):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    rgb = _colour_picture(pixels)
    path = f.us_jpeg_ybr(tmp_path / "j.dcm", pixels)
    import io

    import pydicom

    ds = pydicom.dcmread(path)
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path)
    img = load_image(path)
    assert np.abs(img.plane().astype(float) - _luminance(rgb)).mean() < 3.0
    assert img.metadata["colour_fraction"] > 0.03


def test_ybr_through_the_gdcm_fallback_is_the_same_picture(tmp_path, pixels, monkeypatch):
    """With no pydicom decoder for the syntax, ITK's GDCM reader decodes: it gives YBR data as RGB."""
    from BreastCADxLib.io import dicom

    monkeypatch.setattr(dicom, "_decoder_available", lambda ts: False)
    img = load_image(f.us_jpeg_ybr(tmp_path / "j.dcm", pixels))
    assert np.abs(img.plane().astype(int) - pixels).mean() < 3.0
