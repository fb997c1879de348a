"""The result picture: the image as acquired, the lesion outline, the Grad-CAM evidence fading out around the
lesion (never a pasted rectangle), a colour bar, and a text panel below the image (result, lexicon, every flag,
research use only) whose font scales with the image, so it reads the same on a 300-pixel and a 3000-pixel frame."""

from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from scipy import ndimage

from BreastCADxLib.analysis.values import to_uint8_range
from BreastCADxLib.image import Image

MIN_WIDTH = 640  # small frames are enlarged so the text panel stays legible
OUTLINE = (0, 255, 80)
FLAG_COLOUR = (255, 196, 60)
TEXT_COLOUR = (235, 235, 235)


def heat_colours(h: np.ndarray) -> np.ndarray:
    """0..1 -> RGB (blue-cyan-yellow-red ramp)."""
    r = np.clip(1.5 * h - 0.25, 0, 1)
    g = np.clip(1.5 - np.abs(2.5 * h - 1.5), 0, 1)
    b = np.clip(1.0 - 2.0 * h, 0, 1)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def heat_alpha(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Opacity of the heatmap: its square (where evidence concentrates stands out), fading to 0 with the distance
    from the lesion, so the image around it stays visible. The map and the fade are smooth, so no edge shows."""
    strength = np.clip(h, 0, 1) ** 2
    if mask.any():
        ys, xs = np.nonzero(mask)
        size = max(np.ptp(ys), np.ptp(xs)) + 1
        dist = ndimage.distance_transform_edt(~mask)
        strength = strength * np.exp(-((dist / (0.2 * size)) ** 2))
    return 0.5 * strength


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _colour_bar(draw: ImageDraw.ImageDraw, x: int, y: int, width: int, height: int, font) -> None:
    ramp = heat_colours(np.linspace(0, 1, width))
    for i, colour in enumerate(ramp):
        draw.line([(x + i, y), (x + i, y + height)], fill=tuple(int(c) for c in colour))
    draw.text((x, y + height + 2), "Grad-CAM: low", fill=TEXT_COLOUR, font=font)
    draw.text((x + width, y + height + 2), "high", fill=TEXT_COLOUR, font=font, anchor="ra")


def overlay_rgb(image: Image, mask: np.ndarray, heatmap: np.ndarray | None, lines: list[str],
                frame: int | None = None) -> np.ndarray:
    """Image, lesion outline, Grad-CAM and the text panel as one RGB uint8 array (the lesion's frame).
    Lines starting with "FLAG" are drawn in amber."""
    if frame is None:
        frame = int(np.argmax(mask.reshape(mask.shape[0], -1).sum(1))) if mask.any() else 0
    grey = to_uint8_range(image.array[frame]).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, -1).astype(np.float32)
    m = mask[frame]
    show_heat = heatmap is not None and heatmap[frame].max() > 0
    if show_heat:
        alpha = heat_alpha(heatmap[frame], m)[..., None]
        rgb = rgb * (1 - alpha) + heat_colours(heatmap[frame]).astype(np.float32) * alpha
    if m.any():
        width = max(1, int(round(max(m.shape) / 400)))
        edge = m & ~ndimage.binary_erosion(m, iterations=width)
        rgb[edge] = OUTLINE
    canvas = PILImage.fromarray(rgb.clip(0, 255).astype(np.uint8))
    if canvas.width < MIN_WIDTH:
        canvas = canvas.resize((MIN_WIDTH, round(canvas.height * MIN_WIDTH / canvas.width)), PILImage.BILINEAR)
    size = max(12, canvas.width // 48)
    font = _font(size)
    chars = max(30, int(canvas.width / (0.55 * size)) - 2)
    wrapped = [(part, line.startswith("FLAG")) for line in lines
               for part in (textwrap.wrap(line, chars, subsequent_indent="    ") or [""])]
    line_h = int(size * 1.35)
    bar_h = size + line_h + 8 if show_heat else 0
    panel = 8 + line_h * len(wrapped) + bar_h + 6
    out = PILImage.new("RGB", (canvas.width, canvas.height + panel), (20, 20, 28))
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    y = canvas.height + 6
    for text, flag in wrapped:
        draw.text((size // 2, y), text, fill=FLAG_COLOUR if flag else TEXT_COLOUR, font=font)
        y += line_h
    if show_heat:
        _colour_bar(draw, size // 2, y + 4, min(canvas.width // 3, 20 * size), size // 2, font)
        draw.text((canvas.width - size // 2, y + 4), "green outline: lesion", fill=OUTLINE, font=font, anchor="ra")
    return np.asarray(out)
