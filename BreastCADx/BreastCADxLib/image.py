"""The one image type used downstream of the loaders.

Geometry follows ITK/DICOM conventions (LPS): `origin` is the centre of the first voxel,
`spacing` (x, y, z) in mm, `direction` a row-major 3x3 matrix whose columns are the
directions of the i, j, k axes. Pixels are stored as `array[k, j, i]` (frames/slices,
rows, columns), always 3D; a 2D image has one frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from BreastCADxLib.errors import MaskError

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass
class Image:
    array: np.ndarray  # (frames, rows, cols), grey
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY
    spacing_known: bool = False  # False: `spacing` is a 1-pixel placeholder, sizes are in pixels
    modality: str = "OT"  # DICOM modality code (US, MG, MR, CT, OT)
    photometric: str = "MONOCHROME2"  # as stored in the source, before conversion to grey
    source: str = ""  # file or folder it came from
    metadata: dict = field(default_factory=dict)  # selected DICOM attributes (UIDs, patient/study)
    source_files: tuple[str, ...] = ()  # DICOM files behind the frames: one multi-frame file, or one per frame
    # calibrated ultrasound regions, (x0, y0, x1, y1 inclusive, mm per column, mm per row): a size is in mm only
    # when the lesion lies inside one of them (measured with that region's scale)
    us_regions: tuple[tuple[int, int, int, int, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.array.ndim == 2:
            self.array = self.array[None]
        if self.array.ndim != 3:
            raise ValueError(f"Image array must be 2D or 3D, got shape {self.array.shape}")

    @property
    def frames(self) -> int:
        return int(self.array.shape[0])

    @property
    def size(self) -> tuple[int, int, int]:
        """(columns, rows, frames), i.e. ITK order."""
        k, j, i = self.array.shape
        return (int(i), int(j), int(k))

    def plane(self, k: int = 0) -> np.ndarray:
        return self.array[k]

    def same_grid(self, other: Image, tol: float = 1e-4) -> bool:
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def with_array(self, array: np.ndarray, **changes) -> Image:
        """A new Image on the same grid with other pixels (e.g. a mask or heatmap)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "array"}
        fields["metadata"] = dict(self.metadata)
        fields.update(changes)
        return Image(array=array, **fields)

    def describe(self) -> dict:
        sx, sy, sz = self.spacing
        return {
            "source": self.source,
            "modality": self.modality,
            "size": list(self.size),
            "frames": self.frames,
            "spacing_mm": [sx, sy, sz] if self.spacing_known else None,
            "photometric": self.photometric,
            "dtype": str(self.array.dtype),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }


def check_mask(mask: Image, image: Image, path: str | Path | None = None) -> np.ndarray:
    """Return the mask as a bool array on the image grid, or raise MaskError naming the cause."""
    where = path or mask.source or None
    if mask.array.shape != image.array.shape:
        raise MaskError(
            f"mask size {list(mask.size)} does not match image size {list(image.size)} ({image.source})", where
        )
    if image.spacing_known and mask.spacing_known and not mask.same_grid(image, tol=1e-3):
        raise MaskError(f"mask geometry (origin/spacing/direction) differs from the image ({image.source})", where)
    values = np.unique(mask.array)
    if values.size > 2:
        raise MaskError(f"mask is not binary: {values.size} distinct values (expected 0 and one label)", where)
    if values.size == 2 and values.min() > 0:
        raise MaskError(f"mask has the values {values[0]:g} and {values[1]:g} and no 0 (background): a label map of "
                        "two labels, not a lesion mask; save the lesion as 1 (or 255) on 0", where)
    return mask.array > 0
