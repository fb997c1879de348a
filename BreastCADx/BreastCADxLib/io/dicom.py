"""DICOM -> Image: single/multi-frame US, mammography, MR/CT series.

pydicom decodes (with the pylibjpeg/pillow plugins for compressed syntaxes); SimpleITK
(GDCM) is the fallback decoder and reads slice series, sorted by position.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.uid import UID

from BreastCADxLib.errors import BreastCADxError, ImageReadError, NoPixelDataError, UnsupportedImageError
from BreastCADxLib.image import IDENTITY, Image
from BreastCADxLib.io.files import colour_fraction, luminance
from BreastCADxLib.io.limits import check_size

US_UNITS_CM = 3  # PhysicalUnitsX/YDirection code for centimetres
METADATA_KEYS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "SeriesDescription",
    "SeriesNumber", "InstanceNumber", "Manufacturer", "ManufacturerModelName", "BodyPartExamined",
    "Laterality", "ImageLaterality", "ViewPosition", "PresentationIntentType", "Modality",
)


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _metadata(ds: pydicom.Dataset) -> dict:
    out = {}
    for key in METADATA_KEYS:
        value = ds.get(key)
        if value is not None and value != "":
            out[key] = str(value)
    out["TransferSyntaxUID"] = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    return out


def _pixel_measures(ds: pydicom.Dataset) -> pydicom.Dataset | None:
    """Pixel Measures of an enhanced multi-frame object (shared functional groups)."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and "PixelMeasuresSequence" in shared[0]:
        return shared[0].PixelMeasuresSequence[0]
    return None


def _checked(values, attribute: str, path) -> tuple[float, float]:
    """(col, row) spacing from a (row, col) attribute value; refuses anything but two positive finite numbers."""
    try:
        row, col = (float(v) for v in values)
    except (TypeError, ValueError):
        raise UnsupportedImageError(f"{attribute} {list(values)!r} is not two numbers", path) from None
    if not (np.isfinite(row) and np.isfinite(col) and row > 0 and col > 0):
        raise UnsupportedImageError(f"pixel spacing {attribute} = {row:g}\\{col:g} mm is not positive: the file's "
                                    "calibration is broken (sizes cannot be measured)", path)
    return col, row


def _check_claimed_frames(ds: pydicom.Dataset, rows: int, cols: int, frames: int, path) -> None:
    """Native (uncompressed) pixel data shorter than the header's frames claim: a false or truncated header, said
    as such (not as an image too large to read)."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or UID(syntax).is_encapsulated or "PixelData" not in ds or frames <= 1:
        return
    per_frame = rows * cols * int(ds.get("SamplesPerPixel", 1) or 1) * max(1, int(ds.get("BitsAllocated", 8)) // 8)
    have = len(ds.PixelData) // per_frame if per_frame else 0
    if have < frames:
        raise ImageReadError(f"the header claims {frames:,} frames but the pixel data holds {have:,}: "
                             "a truncated file or a false header", path)


def pixel_spacing(ds: pydicom.Dataset, path=None, regions: tuple | None = None) -> tuple[float, float] | None:
    """(x, y) spacing in mm, or None when the object does not tell it; a broken value is refused. `regions`: the
    object's us_regions when the caller has them already."""
    for source in (ds, _pixel_measures(ds)):
        if source is not None and source.get("PixelSpacing"):
            return _checked(source.PixelSpacing, "PixelSpacing", path)
    if ds.get("ImagerPixelSpacing"):
        return _checked(ds.ImagerPixelSpacing, "ImagerPixelSpacing", path)
    scales = {(r[4], r[5]) for r in (us_regions(ds, path) if regions is None else regions)}
    if len(scales) == 1:  # one scale over every calibrated region (else sizes are per region: us_regions)
        return next(iter(scales))
    return None


def us_regions(ds: pydicom.Dataset, path=None) -> tuple[tuple[int, int, int, int, float, float], ...]:
    """The calibrated (cm) regions of an ultrasound object: (x0, y0, x1, y1 inclusive, mm/column, mm/row). A
    PhysicalDelta of 0, below 0 or not a number is refused like a PixelSpacing of 0."""
    out = []
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        ux, uy = region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection")
        if ux != US_UNITS_CM or uy != US_UNITS_CM:
            continue
        dx, dy = region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")
        col, row = _checked((dy, dx), "PhysicalDeltaY\\X (cm)", path)
        box = tuple(int(region.get(k, 0) or 0) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                          "RegionLocationMaxX1", "RegionLocationMaxY1"))
        out.append((*box, round(col * 10.0, 9), round(row * 10.0, 9)))
    return tuple(out)


def _orientation(ds: pydicom.Dataset) -> tuple[tuple[float, float, float], tuple[float, ...]]:
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is None or iop is None:
        return (0.0, 0.0, 0.0), IDENTITY
    r, c = np.array(iop[:3], float), np.array(iop[3:], float)
    n = np.cross(r, c)
    m = np.stack([r, c, n], axis=1)  # columns are the i, j, k directions
    return tuple(float(v) for v in ipp), tuple(float(v) for v in m.ravel())


def _decoder_available(ts: str) -> bool:
    try:
        return get_decoder(UID(ts)).is_available
    except (NotImplementedError, ValueError):
        return False


# still-image compressions GDCM decodes (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE)
GDCM_IMAGE_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
})


def _is_ybr(ds: pydicom.Dataset) -> bool:
    return str(ds.get("PhotometricInterpretation", "")).startswith("YBR") and int(ds.get("SamplesPerPixel", 1)) == 3


def _decode(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, str]:
    """The pixels, decoded once, and the colour space they are in (the decoder's word, not the header's: a JPEG
    decoder may hand back RGB for YBR-labelled data). YBR data come back as stored (raw) for _to_grey to read."""
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if not ts or _decoder_available(ts):
        try:
            if ts and _is_ybr(ds):
                arr, meta = get_decoder(UID(ts)).as_array(ds, raw=True)
                return arr, str(meta.get("photometric_interpretation", photometric))
            arr = ds.pixel_array  # pydicom converts YBR to RGB itself when it has no transfer syntax to go by
            return arr, "RGB" if _is_ybr(ds) else photometric
        except Exception as e:  # corrupt/truncated data surfaces as many exception types
            msg = str(e).splitlines()[0] if str(e) else ""
            if "is invalid" in msg:  # pydicom's check of the image pixel module (Rows, Bits Allocated, ...)
                raise UnsupportedImageError(f"invalid image header: {msg}", path) from None
            raise ImageReadError(f"pixel data is corrupt or truncated ({e.__class__.__name__}: {msg})", path) from None
    name = UID(ts).name
    if ts not in GDCM_IMAGE_SYNTAXES:  # video (MPEG, HEVC) or unknown: GDCM would not decode it either, and on a
        # corrupt header it may allocate gigabytes first (found by fuzzing: 4.3 GB for a 1.2 kB file)
        raise UnsupportedImageError(f"transfer syntax '{name}' ({ts}) is not supported: no decoder installed", path)
    try:  # GDCM knows image transfer syntaxes the installed pydicom plugins may not; ITK's GDCM reader gives
        # YBR data as RGB
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path))), "RGB" if _is_ybr(ds) else photometric
    except RuntimeError:
        raise UnsupportedImageError(f"transfer syntax '{name}' ({ts}) is not supported: no decoder installed",
                                    path) from None


def ybr_to_rgb(arr: np.ndarray, space: str) -> tuple[np.ndarray, bool]:
    """Decoded YBR samples as RGB; True when the three samples are equal in every pixel (grey stored as RGB
    under a wrong YBR label, which colour conversion would turn into invented colours): then they are kept."""
    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        return arr, True
    from pydicom.pixels import convert_color_space

    return convert_color_space(arr, space, "RGB"), False


def _to_grey(arr: np.ndarray, ds: pydicom.Dataset, frames: int, meta: dict | None = None, space: str = ""
             ) -> tuple[np.ndarray, str]:
    """Grey frames from decoded pixels (`space`: the colour space the decoder gave them in); `meta` receives the
    colour fraction of colour data and any correction."""
    meta = {} if meta is None else meta
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    spp = int(ds.get("SamplesPerPixel", 1))
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if lut_bits == 16:  # 16-bit LUT entries span 0..65535: bring to 8 bits
            arr = np.round(arr.astype(np.float32) / 257.0)
        meta["colour_fraction"] = colour_fraction(arr.astype(np.uint8))
        arr = luminance(arr.astype(np.uint8))
    elif spp == 3 and space.startswith("YBR") and arr.shape[-1] == 3:
        rgb, grey = ybr_to_rgb(arr, space)
        if grey:
            meta.setdefault("corrections", []).append(
                f"PhotometricInterpretation says {photometric}, but every pixel's three samples are equal: read as "
                "grey (colour conversion would have invented colours)")
        meta["colour_fraction"] = 0.0 if grey else colour_fraction(rgb)
        arr = rgb[..., 0] if grey else luminance(rgb)
    elif spp == 3:
        meta["colour_fraction"] = colour_fraction(arr)
        arr = luminance(arr)
    elif photometric == "MONOCHROME1":
        hi = (1 << int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))) - 1
        arr = (hi - arr.astype(np.int64)).clip(0, None).astype(arr.dtype if arr.dtype.kind == "u" else np.int32)
    elif "RescaleSlope" in ds or "RescaleIntercept" in ds:
        arr = apply_modality_lut(arr, ds)
    if frames == 1 and arr.ndim == 2:
        arr = arr[None]
    return arr, photometric


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def check_file_meta(path: Path) -> None:
    """Walk the file meta group (0002) as bytes before pydicom parses it: a sequence there, or a group length
    (0002,0000) that is not a 4-byte UL, is refused. pydicom formats the group length's value into a log message
    whether or not anyone logs it; a 2 kB file with that element as a broken sequence made it build nested
    traceback texts for a minute and 11 GB (found by fuzzing, 2026-12-06)."""
    with open(path, "rb") as f:
        head = f.read(8192)
    pos = 132 if head[128:132] == b"DICM" else 0
    for _ in range(64):
        if pos + 8 > len(head) or head[pos:pos + 2] != b"\x02\x00":
            return
        element, vr = int.from_bytes(head[pos + 2:pos + 4], "little"), head[pos + 4:pos + 6]
        if not (vr.isalpha() and vr.isupper()):  # implicit VR: a 4-byte length follows the tag
            vr, length, pos = None, int.from_bytes(head[pos + 4:pos + 8], "little"), pos + 8
        elif vr in _LONG_VRS:
            length, pos = int.from_bytes(head[pos + 8:pos + 12], "little"), pos + 12
        else:
            length, pos = int.from_bytes(head[pos + 6:pos + 8], "little"), pos + 8
        if vr == b"SQ" or (element == 0 and (vr not in (b"UL", None) or length != 4)):
            what = f"VR {vr.decode()}" if vr else f"length {length}"
            raise ImageReadError(f"corrupt DICOM file meta: element (0002,{element:04X}) has {what}", path)
        if length == 0xFFFFFFFF:
            return
        pos += length


def read_dicom_file(path: Path) -> Image:
    """One DICOM file as an Image. pydicom converts element values when they are read, so a corrupt value can
    surface as any exception at any attribute access: every one becomes a clear ImageReadError naming the file."""
    try:
        return _read_dicom_file(path)
    except BreastCADxError:
        raise
    except MemoryError:
        raise ImageReadError("corrupt DICOM: decoding it needs more memory than the header suggests", path) from None
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise ImageReadError(f"corrupt DICOM ({e.__class__.__name__}: {first})", path) from None


def _read_dicom_file(path: Path) -> Image:
    try:
        try:
            check_file_meta(path)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(path)
            if any("End of file reached" in str(w.message) for w in caught):
                raise ImageReadError("DICOM file is truncated (ends inside a data element)", path)
        except InvalidDicomError:  # some writers omit the preamble: accept a bare dataset that has image rows
            ds = pydicom.dcmread(path, force=True)
            if "Rows" not in ds and "SOPClassUID" not in ds:
                raise ImageReadError("not a DICOM file (no 'DICM' header and no DICOM data elements)", path) from None
    except ImageReadError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise ImageReadError(f"corrupt or truncated DICOM ({e.__class__.__name__}: {e})", path) from None
    if ds.get("SOPClassUID") == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return read_dicomdir(path)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = ds.get("SOPClassUID")
        kind = UID(sop).name if sop else "unknown SOP class"
        raise NoPixelDataError(f"DICOM object has no pixel data ({kind}); not an image", path)
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_claimed_frames(ds, rows, cols, frames, path)
    check_size(cols, rows, frames, path)
    raw, space = _decode(ds, path)
    expected = rows * cols * frames * int(ds.get("SamplesPerPixel", 1))
    if raw.size != expected:
        raise ImageReadError(f"pixel data holds {raw.size} values, header says {expected}: truncated?", path)
    found: dict = {}
    arr, photometric = _to_grey(raw, ds, frames, found, space)
    regions = us_regions(ds, path)  # a broken region calibration is refused even beside a PixelSpacing
    spacing = pixel_spacing(ds, path, regions)
    origin, direction = _orientation(ds)
    sz = 1.0
    pm = _pixel_measures(ds)
    for src in (pm, ds):
        if src is not None and src.get("SpacingBetweenSlices"):
            sz = float(src.SpacingBetweenSlices)
            break
    return Image(
        array=arr,
        spacing=(spacing[0], spacing[1], sz) if spacing else (1.0, 1.0, 1.0),
        origin=origin,
        direction=direction,
        spacing_known=spacing is not None,
        modality=str(ds.get("Modality", "OT")),
        photometric=photometric,
        source=str(path),
        metadata={**_metadata(ds), **found},
        us_regions=() if ds.get("PixelSpacing") else regions,
        source_files=(str(path),),
    )


def read_datasets(paths, pixels: bool = True) -> list[pydicom.Dataset]:
    """DICOM datasets of several files (headers only when not `pixels`); the first unreadable one is named."""
    out = []
    for f in paths:
        try:
            check_file_meta(Path(f))
            out.append(pydicom.dcmread(f, stop_before_pixels=not pixels))
        except (OSError, InvalidDicomError) as e:
            raise ImageReadError(f"not a readable DICOM file ({e})", f) from None
    return out


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def read_dicomdir(path: Path) -> Image:
    """A DICOMDIR (a CD / USB export): the one image series it indexes, read from the files it references."""
    from pydicom.fileset import FileSet

    check_file_meta(Path(path))
    try:
        instances = list(FileSet(path))
    except Exception as e:  # pydicom's own errors for a broken directory record
        raise ImageReadError(f"DICOMDIR cannot be followed ({e.__class__.__name__}: {str(e)[:120]})", path) from None
    groups: dict[str, list[Path]] = {}
    for inst in instances:
        f = Path(inst.path)
        if f.is_file() and f.resolve().is_relative_to(Path(path).resolve().parent):
            groups.setdefault(str(getattr(inst, "SeriesInstanceUID", "?")), []).append(f)
    images = {uid: files for uid, files in groups.items() if _has_pixels(files[0])}
    if not images:
        raise ImageReadError("DICOMDIR references no readable image", path)
    if len(images) > 1:
        listing = "; ".join(f"{len(v)} file(s) in {v[0].parent}" for v in list(images.values())[:3])
        raise UnsupportedImageError(f"DICOMDIR indexes {len(images)} image series ({listing}); pass one series "
                                    "folder or file", path)
    uid, files = next(iter(images.items()))
    if len(files) == 1:
        return read_dicom_file(files[0])
    parents = {f.parent for f in files}
    by_position = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(files[0].parent), uid) \
        if len(parents) == 1 else ()  # GDCM sorts a series lying in one folder by position
    return _read_series(list(by_position) or sorted(files), Path(path).parent)


def _has_pixels(path: Path) -> bool:
    try:
        check_file_meta(path)
        return "PixelData" in pydicom.dcmread(path, stop_before_pixels=False, specific_tags=["PixelData"])
    except Exception:
        return False


def read_dicom_folder(folder: Path) -> Image:
    """One series from a folder: one file directly, several slices through SimpleITK, sorted by position; a folder
    with a DICOMDIR is read through it."""
    dicomdir = next((p for p in folder.iterdir() if p.name.upper() == "DICOMDIR" and p.is_file()), None)
    if dicomdir is not None:
        return read_dicomdir(dicomdir)
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ImageReadError("folder holds no readable DICOM image series", folder)
    if len(series) > 1:
        raise UnsupportedImageError(
            f"folder holds {len(series)} DICOM series ({', '.join(series[:3])}...); pass one series folder or file",
            folder)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    if len(files) == 1:
        return read_dicom_file(Path(files[0]))
    return _read_series(list(files), folder)


def _read_series(files: list, folder: Path) -> Image:
    """Several slice files of one series through SimpleITK, in the order given (GDCM's, or the DICOMDIR's)."""
    files = [str(f) for f in files]
    first = read_dicom_file(Path(files[0]))  # metadata, modality, checks
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise ImageReadError(f"series could not be read ({str(e).strip().splitlines()[-1]})", folder) from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise UnsupportedImageError("colour slice series are not supported", folder)
    arr = sitk.GetArrayFromImage(img)
    check_size(arr.shape[2], arr.shape[1], arr.shape[0], folder)
    meta = dict(first.metadata)
    meta["NumberOfSlices"] = str(len(files))
    return Image(
        array=arr,
        spacing=tuple(float(s) for s in img.GetSpacing()),
        origin=tuple(float(o) for o in img.GetOrigin()),
        direction=tuple(float(v) for v in img.GetDirection()),
        spacing_known=first.spacing_known,
        modality=first.modality,
        photometric=first.photometric,
        source=str(folder),
        metadata=meta,
        source_files=tuple(str(f) for f in files),  # GDCM's order = frame order
    )
