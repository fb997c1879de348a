"""Lesion segmentation: image (2D, or a stack slice by slice) -> mask + probability on the input grid."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from BreastCADxLib.analysis.cards import SegmenterCard
from BreastCADxLib.analysis.inference import Engine, TorchEngine, card_engine
from BreastCADxLib.analysis.networks import lesion_unet
from BreastCADxLib.analysis.preprocessing import (
    MIN_LESION_PIXELS,
    expand_box,
    mask_bbox,
    network_input,
    resize_plane,
    to_uint8_range,
)
from BreastCADxLib.analysis.registry import (
    DEFAULT_MODEL_SET,
    SEGMENTER_MODEL,
    choose_device,
    load_card,
    model_set_dir,
)
from BreastCADxLib.analysis.values import Box
from BreastCADxLib.errors import BreastCADxError, ModelError, UnsupportedImageError
from BreastCADxLib.image import Image

DEFAULT_MODEL = SEGMENTER_MODEL


class Cancelled(Exception):
    """Raised when the caller's cancel check returns True; nothing is returned or written."""


class RoiError(BreastCADxError):
    """A ROI box outside the image or of no area."""

    code = "roi_invalid"


@dataclass
class Segmentation:
    mask: np.ndarray  # bool, (frames, rows, cols), on the input grid
    probability: np.ndarray  # float32 0..1, same shape
    seconds: float
    low_confidence: bool = False  # nothing passed the presence threshold; the best candidate was kept (expect_lesion)
    box_fallback: bool = False  # inside a drawn box no usable region at all: the ellipse inscribed in the box
    presence_score: float | None = None  # the most confident region's peak (whole image); found when >= presence
    expected: bool = False  # the user said a lesion is there (expect_lesion, or a drawn box)

    @property
    def lesion_found(self) -> bool:
        return bool(self.mask.any())

    @property
    def outcome(self) -> str:
        """One line for the user: what the mask is."""
        if not self.lesion_found and self.expected:  # told a lesion is there: never "no lesion"
            return "no usable region anywhere although a lesion was expected: draw a box around it"
        if not self.lesion_found:
            return "no lesion found"
        if self.box_fallback:
            return "no distinct region in the box: its inscribed ellipse (correct it)"
        return "low-confidence candidate" if self.low_confidence else "lesion found"


def parse_roi(text: str) -> Box:
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in text.split(","))
    except (ValueError, OverflowError):  # not four numbers, or one of them NaN / infinite
        raise RoiError(f"ROI must be 'x0,y0,x1,y1' in pixels, got '{text[:80]}'") from None
    return x0, y0, x1, y1


def check_roi(roi: Box, rows: int, cols: int) -> Box:
    x0, y0, x1, y1 = roi
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(cols, x1), min(rows, y1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise RoiError(f"ROI {roi} has less than 8x8 pixels inside the {cols}x{rows} image")
    return x0, y0, x1, y1


def postprocess(prob: np.ndarray, threshold: float, presence: float, min_area_fraction: float,
                keep_fraction: float) -> np.ndarray:
    """Threshold, drop islands (tiny, far smaller than the largest, or never confident), fill holes."""
    labels, areas, peaks = islands(prob, threshold)
    if not len(areas):
        return labels > 0
    min_area = max(16.0, min_area_fraction * prob.size)
    keep = (areas >= min_area) & (areas >= keep_fraction * areas.max()) & (peaks >= presence)
    mask = np.isin(labels, np.arange(1, len(areas) + 1)[keep])
    return ndimage.binary_fill_holes(mask)


def islands(prob: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The connected regions at or above threshold: their labels, areas and peaks (over their own pixels)."""
    labels, n = ndimage.label(prob >= threshold)
    fg = labels > 0
    lab = labels[fg]
    areas = np.bincount(lab, minlength=n + 1)[1:].astype(float)
    peaks = np.zeros(n + 1, np.float32)
    np.maximum.at(peaks, lab, prob[fg])
    return labels, areas, peaks[1:]


def presence_score(prob: np.ndarray, threshold: float, min_area_fraction: float) -> float:
    """The highest peak of a region large enough to be a lesion: postprocess finds a lesion where this reaches
    the presence threshold (a site profile's presence threshold is fitted on it)."""
    _, areas, peaks = islands(prob, threshold)
    big = areas >= max(16.0, min_area_fraction * prob.size)
    return float(peaks[big].max()) if big.any() else 0.0


def box_ellipse(shape: tuple[int, int], box: Box) -> np.ndarray:
    """The ellipse inscribed in a box: the outline of last resort inside a drawn box."""
    x0, y0, x1, y1 = box
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    cy, cx, ry, rx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2, max(1.0, (y1 - y0) / 2), max(1.0, (x1 - x0) / 2)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


CONTENT_LEVEL = 24  # grey level (0..255) above which a film pixel is exposed tissue rather than background
CONTENT_MARGIN = 0.02


def content_box(plane: np.ndarray) -> Box | None:
    """The box of the largest bright connected region (a film's breast, not its background nor its labels), with a
    small margin; None when it is most of the image anyway or there is none."""
    small = to_uint8_range(plane)[::4, ::4]
    labels, n = ndimage.label(ndimage.binary_opening(small > CONTENT_LEVEL, iterations=2))
    if not n:
        return None
    region = labels == 1 + int(np.argmax(np.bincount(labels[labels > 0])[1:]))
    x0, y0, x1, y1 = mask_bbox(region)
    box = expand_box((4 * x0, 4 * y0, min(4 * x1, plane.shape[1]), min(4 * y1, plane.shape[0])), CONTENT_MARGIN,
                     plane.shape)
    if (box[2] - box[0]) * (box[3] - box[1]) > 0.9 * plane.size or min(box[2] - box[0], box[3] - box[1]) < 32:
        return None
    return box


def best_candidate(prob: np.ndarray, relative: float, min_area: float = 0.0, tries: int = 8) -> np.ndarray:
    """The region around the most probable pixel: connected pixels >= relative x peak, holes filled. With
    min_area, a region smaller than that or one pixel thick (a response in an image corner, along an image edge or
    on a speckle: never a lesion, and radiomics refuses it) is passed over for the next peak; empty when `tries`
    peaks gave none."""
    work = prob
    for _ in range(tries):
        peak = float(work.max())
        if peak <= 0:
            break
        labels, _ = ndimage.label(work >= relative * peak)
        region = ndimage.binary_fill_holes(labels == labels[np.unravel_index(np.argmax(work), work.shape)])
        if not min_area or (region.sum() >= min_area and ndimage.binary_erosion(region).any()):
            return region
        work = np.where(region, 0.0, work)
    return np.zeros(prob.shape, bool)


class LesionSegmenter:
    """Loads the model once; `segment` may be called many times (thread-compatible, not thread-safe)."""

    def __init__(self, card: SegmenterCard, net: torch.nn.Module | None, device: str | None = "auto",
                 engine: Engine | None = None) -> None:
        """`net` may be None when `engine` runs a graph of it (the PyTorch network is then never built)."""
        self.card = card
        self.device = choose_device(device)
        self.size = card.size
        post = card.postprocessing
        self.threshold = float(post["threshold"])
        self.presence = float(post["presence"])
        self.min_area_fraction = float(post["min_area_fraction"])
        self.keep_fraction = float(post["keep_fraction"])
        self.flip_tta = bool(post.get("flip_tta", True))
        self.refine_margin = post.get("refine_margin")  # None: single pass
        self.candidate_relative = float(post.get("candidate_relative", 0.5))
        # inside a drawn box the candidate reaches lower: there the lesion fills most of the box
        self.roi_candidate_relative = float(post.get("roi_candidate_relative", self.candidate_relative))
        # a film's tissue, not its empty background and labels, fills the network's input (mammography sets)
        self.content_crop = bool(post.get("content_crop", False))
        if post.get("roi_outliner", "network") != "network":  # LiteMedSAM in a box is an experiment now
            raise ModelError(f"this version outlines inside a drawn box with the set's own network, not "
                             f"'{post['roi_outliner']}'", card.path)
        self.net = net.to(self.device).eval() if net is not None else None
        if engine is None and self.net is None:
            raise ValueError("LesionSegmenter needs a network or an engine")
        self.engine = engine or TorchEngine(self.net, self.device)

    @classmethod
    def from_registry(cls, model_id: str = DEFAULT_MODEL, device: str | None = "auto",
                      models_dir: Path | None = None) -> LesionSegmenter:
        """The shipped model: card + SHA256-verified weights from Resources/Models (or models_dir)."""
        card = load_card(model_id, models_dir)
        engine, net = card_engine(card, (3, *card.size), choose_device(device),
                                  lambda: lesion_unet(pretrained=False, arch=card.arch))
        return cls(card, net, device, engine)

    def probability(self, plane: np.ndarray) -> np.ndarray:
        """(rows, cols) any dtype -> lesion probability (rows, cols) float32."""
        x = network_input(resize_plane(torch.from_numpy(to_uint8_range(plane)), self.size))[None]
        if self.flip_tta:
            x = torch.cat([x, x.flip(-1)])
        logits = self.engine(x)
        prob = torch.sigmoid(logits[:, 0])
        if self.flip_tta:
            prob = 0.5 * (prob[0] + prob[1].flip(-1))
        else:
            prob = prob[0]
        return resize_plane(prob, plane.shape).clamp(0, 1).numpy()

    def mask_from(self, prob: np.ndarray, presence: float | None = None) -> np.ndarray:
        """The shipped post-processing of a probability map (presence: a site profile's threshold)."""
        return postprocess(prob, self.threshold, self.presence if presence is None else presence,
                           self.min_area_fraction, self.keep_fraction)

    def refine(self, plane: np.ndarray, prob: np.ndarray, mask: np.ndarray | None = None,
               presence: float | None = None) -> np.ndarray:
        """Second pass: each lesion found (in `mask`, default the post-processed `prob`) is re-segmented in
        its own box, as if the user had drawn it."""
        labels, n = ndimage.label(self.mask_from(prob, presence) if mask is None else mask)
        out = prob.copy()
        for k in range(1, n + 1):
            x0, y0, x1, y1 = self.refine_box(labels == k)
            if min(x1 - x0, y1 - y0) >= 16:
                out[y0:y1, x0:x1] = self.probability(plane[y0:y1, x0:x1])
        return out

    def segment(
        self,
        image: Image,
        roi: Box | None = None,
        progress: Callable[[float, str], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        expect_lesion: bool = False,
        presence: float | None = None,
    ) -> Segmentation:
        """Segment every frame; with a ROI box, only inside the box (the box is the user's prompt).
        expect_lesion: the user says there is a lesion; when nothing passes the presence threshold, the most
        probable region (of the most probable frame) is returned, flagged low_confidence. A drawn box says so too:
        inside a box there is always an outline (the best candidate, flagged when weak; when the network gives no
        usable region at all, the ellipse inscribed in the box, flagged box_fallback). presence: a site profile's
        threshold instead of the card's; the result's presence_score is what it is compared with (whole image)."""
        t0 = time.perf_counter()
        if image.array.ndim != 3 or min(image.array.shape[1:]) < 16:
            raise UnsupportedImageError(f"cannot segment an image of shape {image.array.shape}", image.source)
        frames, rows, cols = image.array.shape
        box = check_roi(roi, rows, cols) if roi is not None else None
        prob = np.zeros(image.array.shape, np.float32)
        mask = np.zeros(image.array.shape, bool)
        score = 0.0
        for k in range(frames):
            if should_cancel is not None and should_cancel():
                raise Cancelled("segmentation cancelled")
            plane = image.array[k]
            if box is not None:
                prob[k] = self.box_probability(plane, box)
            else:
                prob[k] = self.whole_probability(plane)
                score = max(score, presence_score(prob[k], self.threshold, self.min_area_fraction))
                if self.refine_margin is not None:
                    prob[k] = self.refine(plane, prob[k], presence=presence)
            mask[k] = self.mask_from(prob[k], presence)
            if progress is not None:
                progress((k + 1) / frames, f"segmented frame {k + 1}/{frames}")
        expected = expect_lesion or box is not None
        low_confidence = bool(expected and not mask.any() and (prob.max() > 0 or box is not None))
        fallback = False
        if low_confidence:
            k = int(np.argmax(prob.reshape(frames, -1).max(axis=1)))
            mask[k] = self.candidate(image.array[k], prob[k], in_box=box is not None)
            if box is not None and mask[k].sum() < MIN_LESION_PIXELS:
                mask[k], fallback = box_ellipse((rows, cols), box), True
        return Segmentation(mask=mask, probability=prob, seconds=time.perf_counter() - t0,
                            low_confidence=low_confidence, box_fallback=fallback,
                            presence_score=None if box is not None else score, expected=expected)

    def whole_probability(self, plane: np.ndarray) -> np.ndarray:
        """P(lesion) of a whole plane: the network on the plane, or on its content box (content_crop)."""
        box = content_box(plane) if self.content_crop else None
        return self.probability(plane) if box is None else self.box_probability(plane, box)

    def box_probability(self, plane: np.ndarray, box: Box) -> np.ndarray:
        """P(lesion) of one plane inside a drawn box (0 outside): the network on the box, as if it were the image."""
        x0, y0, x1, y1 = box
        prob = np.zeros(plane.shape, np.float32)
        prob[y0:y1, x0:x1] = self.probability(plane[y0:y1, x0:x1])
        return prob

    def refine_box(self, region: np.ndarray) -> Box:
        """The box a found region is re-segmented in: its bounding box + the refinement margin."""
        return expand_box(mask_bbox(region), float(self.refine_margin), region.shape)

    def candidate(self, plane: np.ndarray, prob: np.ndarray, in_box: bool) -> np.ndarray:
        """Best candidate region of one plane. In a drawn box: the region around the peak down to
        roi_candidate_relative x the peak. Whole image: refined in its own box like a found lesion (prob updated);
        the refined region is the part of that box connected to the first-pass candidate (>= candidate_relative x
        the refined peak over it): a sharper peak elsewhere in the box, e.g. a caliper mark, is not followed."""
        if in_box:
            return best_candidate(prob, self.roi_candidate_relative, MIN_LESION_PIXELS)
        min_area = max(MIN_LESION_PIXELS, self.min_area_fraction * prob.size)  # as the post-processing's islands
        region = best_candidate(prob, self.candidate_relative, min_area)
        if self.refine_margin is None or not region.any():
            return region
        return self.grown(plane, prob, region)

    def grown(self, plane: np.ndarray, prob: np.ndarray, region: np.ndarray) -> np.ndarray:
        """A first-pass candidate region refined in its own box (prob updated there) and grown within it."""
        prob[...] = self.refine(plane, prob, region)
        inside = np.zeros(prob.shape, bool)
        x0, y0, x1, y1 = self.refine_box(region)
        inside[y0:y1, x0:x1] = True
        grown = region | (inside & (prob >= self.candidate_relative * float(prob[region].max())))
        labels, _ = ndimage.label(grown)
        return ndimage.binary_fill_holes(labels == labels[region].max())


@lru_cache(maxsize=4)
def get_segmenter(model_id: str = DEFAULT_MODEL, device: str = "auto", model_set: str = DEFAULT_MODEL_SET
                  ) -> LesionSegmenter:
    """Process-wide cached segmenter of a model set (the model is loaded once)."""
    return LesionSegmenter.from_registry(model_id, device, model_set_dir(model_set))
