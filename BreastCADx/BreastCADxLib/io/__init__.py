"""Loading and saving images and masks: one entry point for every supported format."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

from BreastCADxLib.errors import BreastCADxError, ImageReadError, UnsupportedImageError
from BreastCADxLib.image import Image, check_mask
from BreastCADxLib.io.dicom import is_dicom_file, read_dicom_file, read_dicom_folder
from BreastCADxLib.io.files import ITK_SUFFIXES, RASTER_SUFFIXES, read_itk, read_raster, suffix_of, write_image

__all__ = ["load_image", "load_mask", "save_image", "save_mask", "SUPPORTED"]

SUPPORTED = "DICOM (file or series folder), " + ", ".join(s.lstrip(".").upper() for s in RASTER_SUFFIXES + ITK_SUFFIXES)


def load_image(path: str | Path) -> Image:
    """Read any supported image; raise a BreastCADxError naming the file and the cause (never anything else:
    a reader failure no check foresaw is reported as unreadable, not as a traceback)."""
    try:
        return _load_image(Path(path))
    except BreastCADxError:
        raise
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise ImageReadError(f"could not be read ({e.__class__.__name__}: {first})", path) from None


def _load_image(p: Path) -> Image:
    if not p.exists():
        raise ImageReadError("no such file or folder", p)
    if p.is_dir():
        return read_dicom_folder(p)
    mode = p.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device file" if stat.S_ISCHR(mode)
                or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ImageReadError(f"is {kind}, not an image file: give the path of a saved image", p)
    if p.stat().st_size == 0:
        raise ImageReadError("file is empty", p)
    suffix = suffix_of(p)
    if is_dicom_file(p) or suffix in (".dcm", ".dicom"):
        return read_dicom_file(p)
    if suffix in RASTER_SUFFIXES:
        return read_raster(p)
    if suffix in ITK_SUFFIXES:
        return read_itk(p)
    raise UnsupportedImageError(f"unsupported file type '{suffix or '(none)'}'; supported: {SUPPORTED}", p)


def load_mask(path: str | Path, image: Image) -> np.ndarray:
    """Read a mask file and check it against the image grid: bool array (frames, rows, cols)."""
    mask = load_image(path)
    return check_mask(mask, image, path)


def save_image(image: Image, path: str | Path) -> Path:
    return write_image(image, Path(path))


def save_mask(mask: np.ndarray, image: Image, path: str | Path) -> Path:
    """Write a bool mask on the image grid (label 1 in NRRD/NIfTI, 255 in PNG)."""
    if mask.shape != image.array.shape:
        raise UnsupportedImageError(f"mask shape {mask.shape} != image shape {image.array.shape}", path)
    p = Path(path)
    arr = mask.astype(np.uint8) * (255 if suffix_of(p) in RASTER_SUFFIXES else 1)
    return write_image(image, p, arr)
