"""Augmentations that imitate another hospital's scanner, applied to the full-resolution 8-bit image before resizing
(`breastcadx train`'s members and segmenter for ultrasound, and the training/ scripts).

What changes between ultrasound sites and what each transform imitates:
resolution and resampling (another probe/scan converter), overall and depth-dependent gain (TGC settings),
speckle grain size (frequency, focus), JPEG compression (export path), field of view (crop or dark
padding), and burned-in text and caliper marks (present on BUSI, absent on the BUS-BRA crops).
The mask only follows the geometric steps.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def _resize(a: np.ndarray, size: tuple[int, int], resample: int = Image.BILINEAR) -> np.ndarray:
    """size = (cols, rows)."""
    return np.asarray(Image.fromarray(a).resize(size, resample))


def resolution_loss(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = img.shape
    f = rng.uniform(1.5, 3.0)
    small = _resize(img, (max(8, int(cols / f)), max(8, int(rows / f))), Image.BILINEAR)
    return _resize(small, (cols, rows), Image.BICUBIC if rng.random() < 0.5 else Image.BILINEAR)


def gain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Overall gain times a smooth depth (row) profile, like time-gain compensation."""
    rows = img.shape[0]
    depth = np.linspace(0.0, 1.0, rows)[:, None]
    knots = rng.uniform(-0.35, 0.35, size=4)
    profile = 1.0 + np.interp(depth[:, 0], np.linspace(0, 1, 4), knots)[:, None]
    out = img.astype(np.float32) * rng.uniform(0.75, 1.3) * profile
    return np.clip(out, 0, 255).astype(np.uint8)


def speckle_grain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise with a random grain size (noise drawn on a coarser grid and upsampled)."""
    rows, cols = img.shape
    k = rng.uniform(1.0, 4.0)
    coarse = rng.normal(1.0, rng.uniform(0.05, 0.3), size=(max(2, int(rows / k)), max(2, int(cols / k))))
    field = np.asarray(Image.fromarray(coarse.astype(np.float32), mode="F").resize((cols, rows), Image.BILINEAR))
    return np.clip(img.astype(np.float32) * field, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(rng.integers(15, 60)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


def marks(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Burn in caliper crosses, dotted lines and short text, as many scanners do."""
    pil = Image.fromarray(img.copy())
    draw = ImageDraw.Draw(pil)
    rows, cols = img.shape
    s = max(3, int(min(rows, cols) * 0.015))
    for _ in range(int(rng.integers(1, 5))):
        x, y = int(rng.integers(0, cols)), int(rng.integers(0, rows))
        v = int(rng.integers(180, 256))
        draw.line([(x - s, y), (x + s, y)], fill=v, width=1)
        draw.line([(x, y - s), (x, y + s)], fill=v, width=1)
    if rng.random() < 0.5:
        y = int(rng.integers(0, rows))
        for x in range(int(rng.integers(0, cols // 2)), cols, 2 * s):
            draw.point((x, y), fill=230)
    for _ in range(int(rng.integers(0, 3))):
        text = "".join(rng.choice(list("0123456789.cmRLTGCA ")) for _ in range(int(rng.integers(2, 8))))
        draw.text((int(rng.integers(0, max(1, cols - 40))), int(rng.integers(0, max(1, rows - 12)))), text, fill=240)
    return np.asarray(pil)


def field_of_view(img: np.ndarray, msk: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Crop to a smaller field that keeps the whole lesion, or pad with dark borders (a wider field)."""
    rows, cols = img.shape
    if rng.random() < 0.6:
        ys, xs = np.nonzero(msk)
        ly0, ly1 = (ys.min(), ys.max() + 1) if len(ys) else (rows, 0)
        lx0, lx1 = (xs.min(), xs.max() + 1) if len(xs) else (cols, 0)
        y0 = int(rng.integers(0, max(1, min(ly0, int(0.25 * rows)) + 1)))
        x0 = int(rng.integers(0, max(1, min(lx0, int(0.25 * cols)) + 1)))
        y1 = rows - int(rng.integers(0, max(1, min(rows - ly1, int(0.25 * rows)) + 1)))
        x1 = cols - int(rng.integers(0, max(1, min(cols - lx1, int(0.25 * cols)) + 1)))
        if y1 - y0 >= 32 and x1 - x0 >= 32:
            return img[y0:y1, x0:x1], msk[y0:y1, x0:x1]
        return img, msk
    top, side = int(rows * rng.uniform(0, 0.15)), int(cols * rng.uniform(0, 0.15))
    pad = ((top, int(rows * rng.uniform(0, 0.1))), (side, side))
    return np.pad(img, pad), np.pad(msk, pad)


class ScannerAugment:
    """Each step applied with probability `p` (field of view with p/2), in an order a scanner would produce."""

    def __init__(self, p: float = 0.3, seed: int = 0) -> None:
        self.p = p
        self.rng = np.random.default_rng(seed)

    def __call__(self, img: np.ndarray, msk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = self.rng
        if self.p <= 0:
            return img, msk
        if r.random() < self.p / 2:
            img, msk = field_of_view(img, msk, r)
        for step in (resolution_loss, gain, speckle_grain):
            if r.random() < self.p:
                img = step(img, r)
        if r.random() < self.p:
            img = marks(img, r)
        if r.random() < self.p:
            img = jpeg(img, r)
        return img, msk


def negative_crop(img: np.ndarray, msk: np.ndarray, rng: np.random.Generator,
                  tries: int = 10) -> tuple[np.ndarray, np.ndarray] | None:
    """A lesion-free view: a random box (15-60 % of each side) that misses the lesion's grown box, or None."""
    rows, cols = msk.shape
    ys, xs = np.nonzero(msk)
    for _ in range(tries):
        h, w = int(rows * rng.uniform(0.15, 0.6)), int(cols * rng.uniform(0.15, 0.6))
        if h < 16 or w < 16:
            continue
        y0, x0 = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
        if len(ys):
            my, mx = 0.1 * (ys.max() - ys.min() + 1), 0.1 * (xs.max() - xs.min() + 1)
            if (y0 < ys.max() + my and y0 + h > ys.min() - my and x0 < xs.max() + mx and x0 + w > xs.min() - mx):
                continue
        return img[y0:y0 + h, x0:x0 + w], np.zeros((h, w), bool)
    return None


REDRAW_SEED = 11


def largest_filled(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The largest island of a redrawn outline, holes filled (the reference when nothing is left)."""
    from scipy import ndimage

    labels, n = ndimage.label(out)
    if n == 0:
        return ref
    out = labels == (1 + int(np.argmax(ndimage.sum_labels(out, labels, np.arange(1, n + 1)))))
    return ndimage.binary_fill_holes(out)


def redrawn(ref: np.ndarray, key: str) -> np.ndarray:
    """A 2D outline as another hand would draw it (a user-corrected mask): signed distance + smooth noise of about
    5 % of the lesion size + a small global offset, largest island; the same for the same key."""
    from scipy import ndimage

    rng = np.random.default_rng([REDRAW_SEED, *key.encode()])
    scale = float(np.sqrt(ref.sum()))
    sdt = ndimage.distance_transform_edt(~ref) - ndimage.distance_transform_edt(ref)
    noise = ndimage.gaussian_filter(rng.normal(size=ref.shape), sigma=max(2.0, 0.15 * scale))
    noise *= 0.05 * scale / max(noise.std(), 1e-9)
    out = sdt + noise + rng.uniform(-0.06, 0.06) * scale < 0
    return largest_filled(out, ref)

