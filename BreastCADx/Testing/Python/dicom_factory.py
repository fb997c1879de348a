"""Builds real DICOM test files with pydicom (plain, compressed, colour, multi-frame, MG, MR series)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image as PILImage
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from BreastCADxLib.io.dicom_write import new_uid, ultrasound_dataset

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "BreastCADx_US_sample.dcm"


def sample_pixels(size: tuple[int, int] | None = (160, 128)) -> np.ndarray:
    """The sample case's grey pixels, optionally downscaled (w, h) to keep tests fast."""
    arr = pydicom.dcmread(SAMPLE).pixel_array
    if size is None:
        return arr
    return np.asarray(PILImage.fromarray(arr).resize(size, PILImage.BILINEAR))


def save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def us(path: Path, pixels: np.ndarray, **kw) -> Path:
    return save(ultrasound_dataset(pixels, **kw), path)


def us_compressed(path: Path, pixels: np.ndarray, syntax) -> Path:
    ds = ultrasound_dataset(pixels)
    ds.compress(syntax)
    if syntax != RLELossless:
        ds.LossyImageCompression = "00"
    return save(ds, path)


def us_monochrome1(path: Path, pixels: np.ndarray) -> Path:
    ds = ultrasound_dataset(255 - pixels)
    ds.PhotometricInterpretation = "MONOCHROME1"
    return save(ds, path)


def _rgb_header(ds: pydicom.Dataset, photometric: str) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = 0


def us_rgb(path: Path, pixels: np.ndarray) -> Path:
    ds = ultrasound_dataset(pixels)
    rgb = np.repeat(pixels[..., None], 3, axis=-1)
    _rgb_header(ds, "RGB")
    ds.PixelData = rgb.tobytes()
    return save(ds, path)


def us_jpeg_ybr(path: Path, pixels: np.ndarray) -> Path:
    """Baseline JPEG in YBR_FULL_422, the way many US scanners store colour frames."""
    ds = ultrasound_dataset(pixels)
    buf = io.BytesIO()
    PILImage.fromarray(np.repeat(pixels[..., None], 3, axis=-1)).save(buf, format="JPEG", quality=95)
    _rgb_header(ds, "YBR_FULL_422")
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = f"{pixels.size * 3 / len(buf.getvalue()):.2f}"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return save(ds, path)


def us_palette(path: Path, pixels: np.ndarray) -> Path:
    """PALETTE COLOR with a grey ramp LUT (index i -> grey i)."""
    ds = ultrasound_dataset(pixels)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ramp = (np.arange(256, dtype=np.uint16) * 257).tobytes()
    for c in ("Red", "Green", "Blue"):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{c}PaletteColorLookupTableData", ramp)
    return save(ds, path)


def us_unsupported_syntax(path: Path, pixels: np.ndarray) -> Path:
    """Pixel data labelled MPEG2 (no decoder here)."""
    ds = ultrasound_dataset(pixels)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    return save(ds, path)


def no_pixels(path: Path) -> Path:
    """A Basic Text SR-like object: valid DICOM, no image."""
    ds = ultrasound_dataset(np.zeros((4, 4), np.uint8))
    for key in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
                "PixelRepresentation", "PhotometricInterpretation", "SequenceOfUltrasoundRegions"):
        delattr(ds, key)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.Modality = "SR"
    return save(ds, path)


def mammogram_for_processing(path: Path, pixels16: np.ndarray, spacing: float = 0.07) -> Path:
    """Digital Mammography X-Ray Image, FOR PROCESSING, MONOCHROME1, ImagerPixelSpacing."""
    ds = ultrasound_dataset(np.zeros((2, 2), np.uint8))
    del ds.SequenceOfUltrasoundRegions
    uid = "1.2.840.10008.5.1.4.1.1.1.2.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PROCESSING"
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.ImageLaterality = "L"
    ds.ViewPosition = "CC"
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.Rows, ds.Columns = pixels16.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 14, 13
    ds.PixelData = pixels16.astype(np.uint16).tobytes()
    return save(ds, path)


def mr_series(folder: Path, n: int = 6, gap: float = 2.5) -> tuple[Path, np.ndarray]:
    """n axial-oblique MR slices, files named in reverse order of position; returns the stack in position order."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = new_uid(), new_uid(), new_uid()
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 4000, size=(n, 24, 32)).astype(np.uint16)
    c, s = np.cos(0.3), np.sin(0.3)
    row_dir, col_dir = np.array([c, s, 0.0]), np.array([-s, c, 0.0])
    normal = np.cross(row_dir, col_dir)
    for k in range(n):
        ds = ultrasound_dataset(np.zeros((2, 2), np.uint8), study_uid=study)
        del ds.SequenceOfUltrasoundRegions
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.InstanceNumber = n - k  # deliberately misleading: sort must use positions
        ds.ImageOrientationPatient = [*row_dir, *col_dir]
        ds.ImagePositionPatient = list(np.array([10.0, -20.0, 30.0]) + k * gap * normal)
        ds.PixelSpacing = [0.8, 0.6]  # row spacing (y), column spacing (x)
        ds.SliceThickness = gap
        ds.Rows, ds.Columns = stack.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelData = stack[k].tobytes()
        save(ds, folder / f"slice_{n - k:03d}.dcm")
    return folder, stack


COMPRESSED = {"RLE Lossless": RLELossless, "JPEG-LS Lossless": JPEGLSLossless, "JPEG 2000 Lossless": JPEG2000Lossless}
