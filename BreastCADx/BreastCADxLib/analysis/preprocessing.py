"""Intensity and geometry preprocessing shared by training and inference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from BreastCADxLib.analysis.networks import LITE_MEAN, LITE_STD
from BreastCADxLib.analysis.values import to_uint8_range  # noqa: F401 (re-exported)

MIN_LESION_PIXELS = 20  # a smaller region cannot be described by radiomics, and is never a lesion


def resize_plane(plane: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize an (H, W) or (C, H, W) tensor to size=(h, w)."""
    x = plane[None] if plane.ndim == 3 else plane[None, None]
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    y = F.interpolate(x.float(), size=size, mode=mode, **kwargs)
    return y[0] if plane.ndim == 3 else y[0, 0]


def network_input(plane255: torch.Tensor) -> torch.Tensor:
    """(H, W) 0..255 -> (3, H, W) normalised the way EfficientNet-Lite was trained."""
    x = (plane255.float() - LITE_MEAN) / LITE_STD
    return x[None].expand(3, -1, -1)


def expand_box(box: tuple[int, int, int, int], margin: float, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Grow an (x0, y0, x1, y1) box (x1, y1 exclusive) by a relative margin, clipped to shape (h, w)."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = shape
    return (max(0, int(round(x0 - mx))), max(0, int(round(y0 - my))),
            min(w, int(round(x1 + mx))), min(h, int(round(y1 + my))))


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1), exclusive end, of a 2D mask; None when empty."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


WORK_SIDE = 1048  # the largest image side of both training sites: larger images are analysed at this size


@dataclass(frozen=True)
class WorkingGrid:
    """A large image analysed on a smaller copy (every side / factor), the way the models saw images in
    training; results go back to the input grid. factor 1: the input itself."""

    factor: float
    shape: tuple[int, int, int]  # the input's (frames, rows, cols)

    @property
    def resized(self) -> bool:
        return self.factor > 1

    def work_shape(self) -> tuple[int, int]:
        _, rows, cols = self.shape
        return max(1, round(rows / self.factor)), max(1, round(cols / self.factor))

    def scale(self) -> tuple[float, float]:
        """(x, y): input pixels per working pixel along columns and rows."""
        rows, cols = self.work_shape()
        return self.shape[2] / cols, self.shape[1] / rows

    def down_box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """An (x0, y0, x1, y1) box on the input grid -> the working grid, grown to whole pixels."""
        fx, fy = self.scale()
        x0, y0, x1, y1 = box
        return (int(np.floor(x0 / fx)), int(np.floor(y0 / fy)), int(np.ceil(x1 / fx)), int(np.ceil(y1 / fy)))

    def down(self, array: np.ndarray, is_mask: bool = False) -> np.ndarray:
        """(frames, rows, cols) on the input grid -> the working grid (area average; masks: > half covered)."""
        if not self.resized:
            return array
        x = torch.from_numpy(np.array(array, copy=True)).float()
        y = F.interpolate(x[None], size=self.work_shape(), mode="area")[0].numpy()
        if is_mask:
            return y > 0.5
        if np.issubdtype(array.dtype, np.integer):
            info = np.iinfo(array.dtype)
            return np.clip(np.rint(y), info.min, info.max).astype(array.dtype)
        return y.astype(array.dtype)

    def up(self, array: np.ndarray, is_mask: bool = False) -> np.ndarray:
        """The working grid -> the input grid (bilinear; masks: > 0.5)."""
        if not self.resized:
            return array
        y = F.interpolate(torch.from_numpy(np.ascontiguousarray(array)).float()[None], size=self.shape[1:],
                          mode="bilinear", align_corners=False)[0].numpy()
        return y > 0.5 if is_mask else y.astype(np.float32)


def working_grid(shape: tuple[int, int, int], side: int = WORK_SIDE) -> WorkingGrid:
    return WorkingGrid(max(1.0, max(shape[1:]) / side), tuple(shape))
