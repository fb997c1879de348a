"""Small helpers shared by the training and benchmark scripts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def read_split(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def load_case(data: Path, row: dict) -> tuple[np.ndarray, np.ndarray]:
    """BUSI image (uint8 grey) and reference mask (bool) for one split row."""
    img = np.asarray(Image.open(data / row["label"] / f"{row['case']}.png").convert("L"))
    msk = np.asarray(Image.open(data / row["label"] / f"{row['case']}_mask.png").convert("L")) > 127
    return img, msk
