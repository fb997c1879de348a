"""Radiomics (pyradiomics) of a lesion: named features, with clear errors for unusable masks."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from BreastCADxLib.analysis.preprocessing import MIN_LESION_PIXELS, to_uint8_range
from BreastCADxLib.errors import MaskError
from BreastCADxLib.image import Image
from BreastCADxLib.io.files import image_to_sitk

PARAMS_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Radiomics"
PARAMS_2D = PARAMS_DIR / "ultrasound_2d.yaml"
PARAMS_3D = PARAMS_DIR / "volume_3d.yaml"


@lru_cache(maxsize=4)
def _extractor(params: str):
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractor = featureextractor.RadiomicsFeatureExtractor(params)
    extractor.settings["additionalInfo"] = False  # the diagnostics_* entries (image hashes): not used, not computed
    return extractor


CROP_PAD = 8  # pixels kept around the lesion's box (pyradiomics itself crops to the box + 5)


def lesion_box(mask: np.ndarray, pad: int = CROP_PAD) -> tuple[slice, ...]:
    """Index of the mask's bounding box + `pad` pixels in-plane (all frames of a volume are kept)."""
    ys, xs = np.nonzero(mask.reshape(-1, *mask.shape[-2:]).any(axis=0))
    rows, cols = mask.shape[-2:]
    box = (slice(max(0, ys.min() - pad), min(rows, ys.max() + 1 + pad)),
           slice(max(0, xs.min() - pad), min(cols, xs.max() + 1 + pad)))
    return (slice(None),) * (mask.ndim - 2) + box


MAX_COVER = 0.8  # a lesion leaves tissue around it (the descriptors compare the two)


def check_lesion_mask(mask: np.ndarray, where: str | None = None) -> None:
    """Reject masks radiomics cannot describe: empty, tiny, or one pixel thick everywhere."""
    n = int(mask.sum())
    if n == 0:
        raise MaskError("lesion mask is empty: nothing to classify", where)
    if n < MIN_LESION_PIXELS:
        raise MaskError(f"lesion mask has {n} pixels; at least {MIN_LESION_PIXELS} are needed for radiomics", where)
    planes = mask if mask.ndim == 3 else mask[None]
    if not any(ndimage.binary_erosion(p).any() for p in planes):
        raise MaskError("lesion mask is one pixel thick (a line or outline, not a filled region)", where)
    if mask.mean() > MAX_COVER:
        raise MaskError(f"lesion mask covers {100 * mask.mean():.0f} % of the image: a lesion outline is expected, "
                        "with tissue around it to compare", where)


def extract(image: Image, mask: np.ndarray, params: Path | None = None) -> dict[str, float]:
    """pyradiomics features of the masked lesion; 2D settings for one frame, 3D for volumes."""
    if mask.shape != image.array.shape:
        raise MaskError(f"mask shape {mask.shape} does not match image shape {image.array.shape}", image.source)
    check_lesion_mask(mask, image.source or None)
    if params is None:
        params = PARAMS_2D if image.frames == 1 else PARAMS_3D
    # 8-bit data as is; wider data (MR, CT, 16-bit MG) to 0..255 by percentiles, so the bin width means the same
    pixels = image.array.astype(np.float32) if image.array.dtype == np.uint8 else to_uint8_range(image.array)
    # only the lesion's box goes to pyradiomics: the same features (the original image, no normalisation or
    # filters), without copying and binning a large frame
    box = lesion_box(mask)
    crop = image.with_array(pixels[box])
    result = _extractor(str(params)).execute(image_to_sitk(crop, pixels[box]),
                                             image_to_sitk(crop, mask[box].astype(np.uint8)))
    feats = {k: float(v) for k, v in result.items() if not k.startswith("diagnostics")}
    bad = [k for k, v in feats.items() if not np.isfinite(v)]
    if bad:
        raise MaskError(f"radiomics gave non-finite values for {len(bad)} features (e.g. {bad[0]}): "
                        "the lesion is too small or uniform", image.source or None)
    return feats
