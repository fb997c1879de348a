"""Write an 8-bit 2D grey plane (or frames) as a real DICOM Ultrasound image.

Used for the bundled sample case (a BUSI PNG wrapped as US) and to build test files.
Spacing unknown -> the Region Calibration says units "none" (0000H) rather than invent mm.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from BreastCADxLib import __version__

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
# DICOM UID root for UIDs we generate: pydicom's documented prefix + a UUID-derived suffix
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def new_uid() -> str:
    return generate_uid(prefix=UID_PREFIX)


def _region(cols: int, rows: int, spacing_mm: tuple[float, float] | None) -> pydicom.Dataset:
    r = pydicom.Dataset()
    r.RegionSpatialFormat = 1  # 2D tissue image
    r.RegionDataType = 1  # tissue
    r.RegionFlags = 0
    r.RegionLocationMinX0 = 0
    r.RegionLocationMinY0 = 0
    r.RegionLocationMaxX1 = cols - 1
    r.RegionLocationMaxY1 = rows - 1
    r.ReferencePixelX0 = 0
    r.ReferencePixelY0 = 0
    if spacing_mm is None:
        r.PhysicalUnitsXDirection = 0  # none: calibration unknown
        r.PhysicalUnitsYDirection = 0
        r.PhysicalDeltaX = 1.0
        r.PhysicalDeltaY = 1.0
    else:
        r.PhysicalUnitsXDirection = 3  # cm
        r.PhysicalUnitsYDirection = 3
        r.PhysicalDeltaX = spacing_mm[0] / 10.0
        r.PhysicalDeltaY = spacing_mm[1] / 10.0
    return r


def ultrasound_dataset(
    pixels: np.ndarray,
    *,
    patient_name: str = "BREASTCADX^SYNTHETIC",
    patient_id: str = "BCADX-0001",
    study_description: str = "Breast ultrasound",
    series_description: str = "B-mode",
    spacing_mm: tuple[float, float] | None = None,
    laterality: str | None = None,
    derivation: str = "",
    study_uid: str | None = None,
    frame_time_ms: float = 33.3,
) -> pydicom.FileDataset:
    """(rows, cols) or (frames, rows, cols) uint8 -> a US Image (multi-frame when frames > 1)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError("ultrasound_dataset expects uint8 (rows, cols) or (frames, rows, cols)")
    multiframe = pixels.ndim == 3 and pixels.shape[0] > 1
    plane = pixels if pixels.ndim == 2 else pixels[0]
    rows, cols = plane.shape
    sop_class = US_MULTIFRAME_STORAGE if multiframe else US_IMAGE_STORAGE
    sop_uid = new_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID_PREFIX + "1"
    meta.ImplementationVersionName = f"BCADX_{__version__}"[:16]
    ds = pydicom.FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    now = dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    # Patient / study (synthetic by construction)
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or new_uid()
    ds.StudyDate, ds.StudyTime = date, time
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    # Series / equipment
    ds.Modality = "US"
    ds.SeriesInstanceUID = new_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = series_description
    ds.Manufacturer = "BreastCADx"
    ds.ManufacturerModelName = "sample-wrapper"
    ds.SoftwareVersions = __version__
    ds.BodyPartExamined = "BREAST"
    ds.Laterality = laterality or ""  # type 2C for a paired organ: empty when unknown
    # General image / US image
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = date, time
    ds.PatientOrientation = ""
    ds.ImageType = ["DERIVED" if derivation else "ORIGINAL", "PRIMARY", "BREAST", "0001"]  # value 4: 2D imaging
    if derivation:
        ds.DerivationDescription = derivation[:1024]
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    if multiframe:
        ds.NumberOfFrames = pixels.shape[0]
        ds.FrameTime = frame_time_ms
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.SequenceOfUltrasoundRegions = Sequence([_region(cols, rows, spacing_mm)])
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def write_ultrasound(path: str | Path, pixels: np.ndarray, **kwargs) -> Path:
    ds = ultrasound_dataset(pixels, **kwargs)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(p, enforce_file_format=True)
    return p
