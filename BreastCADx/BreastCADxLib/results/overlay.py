"""Human-readable outputs: overlay PNG (image, lesion contour, Grad-CAM, result text)."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from scipy import ndimage

from BreastCADxLib.analysis.preprocessing import to_uint8_range
from BreastCADxLib.image import Image


def _heat_colours(h: np.ndarray) -> np.ndarray:
    """0..1 -> RGB (blue-cyan-yellow-red ramp)."""
    r = np.clip(1.5 * h - 0.25, 0, 1)
    g = np.clip(1.5 - np.abs(2.5 * h - 1.5), 0, 1)
    b = np.clip(1.0 - 2.0 * h, 0, 1)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def overlay_rgb(image: Image, mask: np.ndarray, heatmap: np.ndarray | None, lines: list[str],
                frame: int | None = None) -> np.ndarray:
    """Image, lesion contour, Grad-CAM and text lines as one RGB uint8 array (the lesion's frame)."""
    if frame is None:
        frame = int(np.argmax(mask.reshape(mask.shape[0], -1).sum(1))) if mask.any() else 0
    grey = to_uint8_range(image.array[frame]).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, -1).astype(np.float32)
    if heatmap is not None and heatmap[frame].max() > 0:
        h = heatmap[frame]
        # show the upper half of the map only (CAMs are read for where evidence concentrates)
        alpha = (0.55 * np.clip((h - 0.5) / 0.5, 0, 1))[..., None]
        rgb = rgb * (1 - alpha) + _heat_colours(h).astype(np.float32) * alpha
    m = mask[frame]
    if m.any():
        edge = m & ~ndimage.binary_erosion(m, iterations=2)
        rgb[edge] = (0, 255, 80)
    canvas = PILImage.fromarray(rgb.clip(0, 255).astype(np.uint8))
    if canvas.width < 480:
        scale = 480 / canvas.width
        canvas = canvas.resize((480, int(canvas.height * scale)), PILImage.BILINEAR)
    banner = 16 * len(lines) + 10
    out = PILImage.new("RGB", (canvas.width, canvas.height + banner), (20, 20, 28))
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((8, canvas.height + 5 + 16 * i), line, fill=(235, 235, 235))
    return np.asarray(out)
