"""Raster (PNG/JPEG/BMP/TIFF) and ITK (NRRD/NIfTI/MHA) files <-> Image."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from BreastCADxLib.errors import ImageReadError, ImageTooLargeError, UnsupportedImageError
from BreastCADxLib.image import Image
from BreastCADxLib.io.limits import check_size, max_voxels

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
SPACING_KNOWN_KEY = "breastcadx_spacing_known"
MODALITY_KEY = "breastcadx_modality"


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an (..., 3) array, keeping 8-bit data 8-bit."""
    if rgb.shape[-1] == 4:
        rgb = rgb[..., :3]
    grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    if rgb.dtype == np.uint8:
        return np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return grey.astype(np.float32)


CHROMA_LEVELS = 24  # a pixel whose channels differ by more than this is coloured (not grey)


def colour_fraction(rgb: np.ndarray) -> float:
    """Share of pixels of an (..., 3|4) array whose channels differ (a colour overlay, coloured marks); 0 for
    grey stored as colour."""
    c = rgb[..., :3].astype(np.float32)
    levels = CHROMA_LEVELS * (257 if rgb.dtype.itemsize > 1 and float(c.max()) > 255 else 1)
    return float(((c.max(-1) - c.min(-1)) > levels).mean())


def read_raster(path: Path) -> Image:
    try:
        with PILImage.open(path) as im:
            check_size(im.width, im.height, 1, path)  # header only: nothing decoded yet
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("LA", "PA"):
                im = im.convert("L")
            elif mode == "CMYK":
                im = im.convert("RGB")
            arr = np.asarray(im)
    except PILImage.DecompressionBombError as e:  # Pillow's own header check, above ours: same message
        pixels = int((re.findall(r"\((\d+) pixels\)", str(e)) or ["0"])[0])
        raise ImageTooLargeError(f"{pixels:,} pixels exceeds the limit of {max_voxels():,} voxels (read from the "
                                 "header; raise it with --max-voxels)", path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"not a readable image ({e.__class__.__name__}: {e})", path) from None
    photometric, metadata = "MONOCHROME2", {}
    if arr.ndim == 3:
        photometric = "RGB" if mode != "P" else "PALETTE COLOR"
        metadata["colour_fraction"] = colour_fraction(arr)
        arr = luminance(arr)
    if arr.dtype == np.int32 or arr.dtype == np.uint16:
        arr = arr.astype(np.uint16)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return Image(array=arr, photometric=photometric, source=str(path), modality="OT", metadata=metadata)


def sitk_to_image(img: sitk.Image, source: str) -> Image:
    dim = img.GetDimension()
    if dim not in (2, 3):
        raise UnsupportedImageError(f"{dim}D images are not supported (2D or 3D only)", source)
    arr = sitk.GetArrayFromImage(img)
    photometric = "MONOCHROME2"
    if img.GetNumberOfComponentsPerPixel() > 1:
        if img.GetNumberOfComponentsPerPixel() not in (3, 4):
            raise UnsupportedImageError(
                f"{img.GetNumberOfComponentsPerPixel()}-component pixels are not supported", source)
        arr, photometric = luminance(arr), "RGB"
    spacing, origin, direction = img.GetSpacing(), img.GetOrigin(), img.GetDirection()
    if dim == 2:
        spacing = (*spacing, 1.0)
        origin = (*origin, 0.0)
        d = direction
        direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    keys = set(img.GetMetaDataKeys())
    known = img.GetMetaData(SPACING_KNOWN_KEY) != "0" if SPACING_KNOWN_KEY in keys else True
    modality = img.GetMetaData(MODALITY_KEY) if MODALITY_KEY in keys else "OT"
    return Image(
        array=arr,
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in origin),
        direction=tuple(float(v) for v in direction),
        spacing_known=known,
        modality=modality,
        photometric=photometric,
        source=source,
    )


def image_to_sitk(image: Image, array: np.ndarray | None = None) -> sitk.Image:
    """3D SimpleITK image on the Image's grid (array defaults to the image's pixels)."""
    arr = image.array if array is None else array
    if arr.ndim == 2:
        arr = arr[None]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing(image.spacing)
    img.SetOrigin(image.origin)
    img.SetDirection(image.direction)
    img.SetMetaData(SPACING_KNOWN_KEY, "1" if image.spacing_known else "0")
    img.SetMetaData(MODALITY_KEY, image.modality)
    return img


def read_itk(path: Path) -> Image:
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = list(reader.GetSize()) + [1]
        check_size(size[0], size[1], int(np.prod(size[2:])) * max(1, reader.GetNumberOfComponents()), path)
        img = reader.Execute()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown error"
        raise ImageReadError(f"not a readable {suffix_of(path)} image ({first})", path) from None
    return sitk_to_image(img, str(path))


def write_image(image: Image, path: Path, array: np.ndarray | None = None) -> Path:
    """Write pixels on the image grid: NRRD/NIfTI/MHA keep geometry; PNG for 2D 8-bit data. Through a temporary
    file renamed into place (io.atomic): a link at `path` is replaced, never followed."""
    from BreastCADxLib.io.atomic import write_atomic

    arr = image.array if array is None else array
    suffix = suffix_of(path)
    if suffix in RASTER_SUFFIXES:
        if arr.ndim == 3 and arr.shape[0] != 1:
            raise UnsupportedImageError(f"cannot write a {arr.shape[0]}-frame image as {suffix}", path)
        plane = arr.reshape(arr.shape[-2:])
        if plane.dtype == bool:
            plane = plane.astype(np.uint8) * 255
        elif plane.dtype != np.uint8:
            plane = np.clip(plane, 0, 255).astype(np.uint8)
        return write_atomic(path, lambda tmp: PILImage.fromarray(plane).save(tmp, format=_PIL_FORMATS[suffix]))
    if suffix in ITK_SUFFIXES:
        def write_itk(tmp: Path) -> None:
            try:
                sitk.WriteImage(image_to_sitk(image, arr), str(tmp), useCompression=True)
            except RuntimeError as e:  # ITK's multi-line exception text: its last line says why
                raise OSError(str(e).strip().splitlines()[-1][:200]) from None

        if suffix in (".nhdr", ".mhd"):  # a header and a data file: written in place (links refused)
            if path.is_symlink():
                raise UnsupportedImageError("is a symbolic link; BreastCADx does not write through it", path)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_itk(path)
            return path
        return write_atomic(path, write_itk)
    raise UnsupportedImageError(f"unsupported output format '{suffix}' (use .nrrd, .nii.gz, .mha or .png)", path)


def fingerprint(*paths: Path) -> str:
    """SHA256 over the input files' bytes (a folder: every file in it, by relative name), so a rerun after the
    manifest or a file changed recomputes the case instead of reusing a result made from other inputs."""
    h = hashlib.sha256()
    for path in paths:
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()
