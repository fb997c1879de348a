"""The size limit checked from file headers, before any pixel is decoded."""

from __future__ import annotations

import os
from pathlib import Path

from BreastCADxLib.errors import ImageTooLargeError

ENV = "BREASTCADX_MAX_VOXELS"
# about 100 M voxels: decoding stays under ~1 GB; analysing a 2D image of that size would need far more than this
# 24 GB machine has, but the input guard refuses such sizes for analysis anyway (after `info` could describe them)
DEFAULT_MAX_VOXELS = 100_000_000


def max_voxels() -> int:
    try:
        return max(1, int(os.environ.get(ENV, DEFAULT_MAX_VOXELS)))
    except ValueError:
        return DEFAULT_MAX_VOXELS


def check_size(cols: int, rows: int, frames: int, path: str | Path) -> None:
    limit = max_voxels()
    if cols * rows * max(frames, 1) > limit:
        raise ImageTooLargeError(f"{cols}x{rows}x{frames} pixels exceeds the limit of {limit:,} voxels (read from "
                                 f"the header; raise it with --max-voxels or {ENV})", path)
