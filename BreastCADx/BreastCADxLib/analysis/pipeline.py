"""One case end to end: image (+ optional mask / ROI) -> segmentation -> features -> calibrated result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

import numpy as np
from scipy import ndimage

from BreastCADxLib import __version__
from BreastCADxLib.analysis.box_classifier import get_member_scorer
from BreastCADxLib.analysis.calibration import INCOMPLETE, INCOMPLETE_NOTE, SUGGESTION_NOTE
from BreastCADxLib.analysis.classifier import classifier_for, member_flags
from BreastCADxLib.analysis.deep_features import DEEP_MODEL, get_deep_features, lesion_frame
from BreastCADxLib.analysis.descriptors import describe
from BreastCADxLib.analysis.guard import check_input
from BreastCADxLib.analysis.lexicon import categories, from_automatic_outline, suspicious_signs
from BreastCADxLib.analysis.preprocessing import MIN_LESION_PIXELS, WorkingGrid, working_grid
from BreastCADxLib.analysis.radiomics_features import check_lesion_mask, extract
from BreastCADxLib.analysis.registry import (
    DEFAULT_MODEL_SET,
    has_segmenter,
    load_card,
    model_set_dir,
    model_set_fingerprint,
    model_set_info,
)
from BreastCADxLib.analysis.result import MASK_ORIGINS, AnalysisResult, ModelRef, Provenance
from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL, Box, box_ellipse, check_roi, get_segmenter
from BreastCADxLib.analysis.site import ReaderView, SiteProfile, SiteProfileError, reader_category
from BreastCADxLib.analysis.values import LOW_SCORE, Flag
from BreastCADxLib.errors import MaskError, UnsupportedImageError
from BreastCADxLib.image import Image

Progress = Callable[[float, str], None]


OUTSIDE_REGIONS_NOTE = ("sizes in pixels: the lesion is not inside one calibrated ultrasound region of the image "
                        "(its regions have different scales or do not cover it)")


def measurement_scale(image: Image, mask: np.ndarray) -> tuple[tuple[float, float] | None, str | None]:
    """(mm per column, mm per row) that the lesion's sizes are measured with, or None (pixels) with the reason:
    with ultrasound regions, the scale of the calibrated region holding the whole lesion."""
    if not image.us_regions:
        return (image.spacing[0], image.spacing[1]) if image.spacing_known else None, None
    ys, xs = np.nonzero(mask.any(axis=0))
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    for rx0, ry0, rx1, ry1, sx, sy in image.us_regions:
        if rx0 <= x0 and ry0 <= y0 and x1 <= rx1 and y1 <= ry1:
            return (sx, sy), None
    return None, OUTSIDE_REGIONS_NOTE


def longest_diameter(region: np.ndarray, scale: tuple[float, float]) -> float:
    """Largest distance between two pixels of a 2D region's outline, in the scale's units (pixel centres)."""
    edge = region & ~ndimage.binary_erosion(region)
    ys, xs = np.nonzero(edge if edge.any() else region)
    if len(xs) > 1500:  # the diameter of a subsample of the outline: well within a pixel for lesions
        keep = np.linspace(0, len(xs) - 1, 1500).astype(int)
        ys, xs = ys[keep], xs[keep]
    pts = np.column_stack([xs * scale[0], ys * scale[1]])
    return float(np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).max()) if len(pts) > 1 else 0.0


def separate_regions(mask: np.ndarray, scale: tuple[float, float] | None) -> list[dict]:
    """Each separate region of the lesion's frame with at least MIN_LESION_PIXELS, largest first: its area,
    longest diameter and box, in the lesion's measurement scale (measurement_scale; None: pixels)."""
    k = lesion_frame(mask)
    labels, n = ndimage.label(mask[k])
    if n < 2:
        return []
    sx, sy = scale or (1.0, 1.0)
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        region = labels[sl] == i
        if region.sum() >= MIN_LESION_PIXELS:
            out.append({"area": float(region.sum() * sx * sy), "longest_diameter": longest_diameter(region, (sx, sy)),
                        "box_xyxy": [sl[1].start, sl[0].start, sl[1].stop, sl[0].stop]})
    return sorted(out, key=lambda r: -r["area"]) if len(out) > 1 else []


def measurements(image: Image, mask: np.ndarray, radiomics: dict[str, float], px_scale: float = 1.0) -> dict:
    """Area from the mask on the input grid; longest diameter from radiomics (in input pixels x px_scale when
    the spacing is unknown and radiomics ran on a working grid; with several ultrasound regions, the scale of the
    one holding the lesion, and pixels with a note when none does)."""
    scale, note = measurement_scale(image, mask)
    unit = "mm" if scale else "px"
    pixel_area = scale[0] * scale[1] if scale else 1.0
    out = {"unit": unit, "lesion_pixels": int(mask.sum()), "area": float(mask.sum() * pixel_area),
           "area_unit": f"{unit}^2"}
    if note:
        out["note"] = note
    regions = separate_regions(mask, scale)
    if regions:  # a mask of several lesions: each measured, and said
        out["regions"] = regions
        out["note"] = (f"the mask holds {len(regions)} separate regions (measured one by one: "
                       + "; ".join(f"{r['longest_diameter']:.1f} {unit}" for r in regions)
                       + "); the classification and the lexicon describe them together: outline one lesion for "
                       "a per-lesion result" + (f"; {note}" if note else ""))
    for key in ("original_shape2D_MaximumDiameter", "original_shape_Maximum3DDiameter"):
        if key not in radiomics:
            continue
        if image.spacing_known:  # radiomics measured in mm already
            out["longest_diameter"] = radiomics[key] if scale else radiomics[key] / image.spacing[0]
        elif scale and abs(scale[0] - scale[1]) <= 0.01 * scale[0]:  # a region's isotropic scale
            out["longest_diameter"] = radiomics[key] * px_scale * scale[0]
        elif scale:  # an anisotropic region scale: the pixel diameter cannot be converted
            out["unit"], out["area"], out["area_unit"] = "px", float(mask.sum()), "px^2"
            out["longest_diameter"] = radiomics[key] * px_scale
        else:
            out["longest_diameter"] = radiomics[key] * px_scale
    return out


DESCRIPTOR_PREFIX = "descriptor_"


def lesion_descriptors(image: Image, mask: np.ndarray) -> dict[str, float]:
    """Lexicon-style descriptors of the lesion's largest frame, named for the classifier ("descriptor_...")."""
    k = lesion_frame(mask)
    row, col = (image.spacing[1], image.spacing[0]) if image.spacing_known else (1.0, 1.0)
    values = describe(image.array[k], mask[k], spacing=(row, col))
    return {f"{DESCRIPTOR_PREFIX}{n}": v for n, v in values.items()}


LOW_CONFIDENCE_FLAG = Flag("low_confidence_segmentation", "low-confidence segmentation: no region passed the "
                           "segmenter's presence threshold; the most probable region was used because a lesion was "
                           "expected - check the mask")
BOX_PROMPT_FLAG = Flag("box_prompt_outline", "box outline: this model set has no segmenter; the ellipse inscribed "
                       "in the drawn box is the finding's outline - outline it for sizes and shape")
BOX_FALLBACK_FLAG = Flag("box_outline_fallback", "box outline: the segmenter found no distinct region inside the "
                         "drawn box; the ellipse inscribed in the box is the outline - correct it in the editor "
                         "before relying on the result")


def apply_site(pred, site: SiteProfile | None, origin: str, reader_birads: str | None) -> ReaderView | None:
    """The site profile's probability and suggestion in place of the set's (the set's kept as raw_probability is);
    the radiologist's category beside it, with a flag where the profile's rule decides otherwise."""
    if site is not None:
        pred.probability = site.calibrate(pred.probability, origin)
        pred.birads, note = site.suggestion(pred.probability)
        pred.suggestion_note = f"{SUGGESTION_NOTE}; site profile '{site.id}'" + (f": {note}" if note else "")
    if reader_birads is None:
        return None
    view = site.reader_view(reader_birads, pred.probability) if site else ReaderView(reader_birads, None, None)
    if view.disagreement:
        pred.flags.append(Flag("reader_disagreement", view.disagreement))
    return view


@lru_cache(maxsize=4)
def shipped_segmenter_ref(model_set: str) -> ModelRef:
    """The segmenter of a model set, named from its card (for a mask it made in an earlier step)."""
    card = load_card(DEFAULT_MODEL, model_set_dir(model_set))
    return ModelRef.of(card)


def working_image(image: Image, grid: WorkingGrid) -> Image:
    """The image on its working grid (itself when small enough): analysed as if handed over at that size. A known
    spacing is scaled (millimetres stay millimetres); unknown, sizes are in working pixels, as in training."""
    if not grid.resized:
        return image
    arr = grid.down(image.array)
    if not image.spacing_known:
        return image.with_array(arr)
    (fx, fy), (sx, sy, sz) = grid.scale(), image.spacing
    return image.with_array(arr, spacing=(sx * fx, sy * fy, sz))


def analyze(image: Image, mask: np.ndarray | None = None, roi: Box | None = None, heatmap: bool = True,
            progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None,
            device: str = "auto", expect_lesion: bool = False, model_set: str = DEFAULT_MODEL_SET,
            mask_origin: str = "user", allow_unvalidated: bool = False, frame: int | None = None,
            site: SiteProfile | None = None, reader_birads: str | None = None, box_prompt: bool = False
            ) -> AnalysisResult:
    """One lesion of one image; a multi-frame ultrasound (a cine) is analysed on one frame: `frame` (0-based), else
    the frame of a given mask's largest lesion, else the middle one; the result says which (`extra["frame"]` and
    a flag) and its mask and heatmap lie on the whole cine's grid. See analyze_plane for the rest."""
    extra = {"site": site, "reader_birads": reader_birads, "box_prompt": box_prompt}
    if image.frames == 1 or image.modality not in ("US", "OT"):
        if frame not in (None, 0):
            raise UnsupportedImageError(f"--frame {frame}: the image has one frame", image.source or None)
        return analyze_plane(image, mask, roi, heatmap, progress, should_cancel, device, expect_lesion, model_set,
                             mask_origin, allow_unvalidated, **extra)
    n = image.frames
    k = frame if frame is not None else lesion_frame(mask) if mask is not None and mask.any() else n // 2
    if not 0 <= k < n:
        raise UnsupportedImageError(f"--frame {k}: this cine has frames 0 to {n - 1}", image.source or None)
    one = image.with_array(image.array[k:k + 1])
    res = analyze_plane(one, None if mask is None else mask[k:k + 1], roi, heatmap, progress, should_cancel, device,
                        expect_lesion, model_set, mask_origin, allow_unvalidated, **extra)
    full = np.zeros(image.array.shape, bool)
    if res.mask is not None:
        full[k] = res.mask[0]
    res.mask = full
    if res.heatmap is not None:
        heat = np.zeros(image.array.shape, np.float32)
        heat[k] = res.heatmap[0]
        res.heatmap = heat
    res.extra["frame"] = {"analysed": k, "frames": n}
    if res.prediction is not None:
        res.prediction.flags.append(Flag("frame_selected", f"a cine of {n} frames: frame {k} (0-based) was analysed"
                                         + ("" if frame is not None else "; choose another with --frame")))
    return res


def box_prompt_outline(image: Image, roi: Box | None, model_set: str) -> np.ndarray:
    """The outline a set without a segmenter takes: the ellipse inscribed in the user's box (its middle frame)."""
    if roi is None:
        raise UnsupportedImageError(f"the model set '{model_set}' has no segmenter: draw a box around the finding "
                                    "(--roi x0,y0,x1,y1, a batch manifest's roi column, or in the panel and the page "
                                    "an ROI box) or give its outline (--mask)", image.source or None)
    rows, cols = image.array.shape[1:]
    mask = np.zeros(image.array.shape, bool)
    mask[image.frames // 2] = box_ellipse((rows, cols), check_roi(roi, rows, cols))
    return mask


def analyze_plane(image: Image, mask: np.ndarray | None = None, roi: Box | None = None, heatmap: bool = True,
                  progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None,
                  device: str = "auto", expect_lesion: bool = False, model_set: str = DEFAULT_MODEL_SET,
                  mask_origin: str = "user", allow_unvalidated: bool = False, site: SiteProfile | None = None,
                  reader_birads: str | None = None, box_prompt: bool = False) -> AnalysisResult:
    """Classify the lesion in `mask` (given), else in the auto-segmented mask. Never modifies `mask`.
    mask_origin: how a given mask was made (user, or auto / edited when the model set's segmenter made it).
    expect_lesion: for the automatic mask, keep the best candidate when nothing passes presence (flagged).
    The input guard runs first: an image outside what the models were validated on raises InputRefused unless
    allow_unvalidated (then the result is flagged). An image larger than the training images (WORK_SIDE) is
    analysed on a downsampled copy; the mask and heatmap come back on the input grid (a given mask unchanged).
    site: a site profile (analysis.site) the probability, suggestion and presence threshold follow; reader_birads:
    the radiologist's own category, shown beside BreastCADx's (compared by the profile's rule when it has one).
    box_prompt: the given mask is box_prompt_outline's, as made (the panel's segment step of a set without a
    segmenter): flagged as the CLI flags it."""
    report = progress or (lambda f, m: None)
    if site is not None and site.body["model_set"]["sha256"] != model_set_fingerprint(model_set):
        # the set is its content: the same folder named another way is the same set
        raise SiteProfileError(f"made for the model set '{site.model_set}', not '{model_set}'", site.folder)
    if reader_birads is not None:
        reader_birads = reader_category(reader_birads, image.source or None)  # refused before any model runs
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    checked = check_input(image, model_set, allow_unvalidated, device)
    seconds["input_check"] = time.perf_counter() - t
    t = time.perf_counter()
    if mask is not None and mask_origin not in MASK_ORIGINS:
        raise ValueError(f"mask_origin must be one of {MASK_ORIGINS}")
    prompt_outline = box_prompt or (mask is None and not has_segmenter(model_set))
    if prompt_outline and mask is None:  # a set without a segmenter (`breastcadx train`): the user's box
        mask, mask_origin = box_prompt_outline(image, roi, model_set), "user"
    origin = "auto" if mask is None else mask_origin
    classifier = classifier_for(model_set, origin)
    provenance = Provenance(
        breastcadx=__version__, model_set=model_set,
        classifier=ModelRef.of(classifier.card),
        classifier_config=f"{classifier.card.mode}/{classifier.card.classifier}",
        deep_model=classifier.card.deep_model or DEEP_MODEL, mask_origin=origin,
        segmenter=None if origin == "user" else shipped_segmenter_ref(model_set),
        site=None if site is None else ModelRef.of(site))
    grid = working_grid(image.array.shape)
    work = working_image(image, grid)
    if mask is None:
        segmenter = get_segmenter(device=device, model_set=model_set)
        report(0.05, "segmenting")
        seg = segmenter.segment(work, roi=grid.down_box(roi) if roi is not None else None,
                                should_cancel=should_cancel, expect_lesion=expect_lesion,
                                presence=None if site is None else site.presence)
        work_mask, low_confidence, box_fallback = seg.mask, seg.low_confidence, seg.box_fallback
        presence = seg.presence_score
        mask = grid.up(work_mask, is_mask=True)
        seconds["segment"] = time.perf_counter() - t
        if not mask.any() and seg.expected:
            # told a lesion is there: "no lesion found (normal)" would be a confident wrong answer
            raise MaskError("a lesion was expected, but the segmenter gives no usable region anywhere in the image; "
                            "draw a box around the lesion or outline it", image.source or None)
        if not mask.any():
            report(1.0, "no lesion found")
            return AnalysisResult(source=image.source, lesion_found=False, provenance=provenance, mask=mask,
                                  seconds=seconds, input_check=checked, presence_score=presence,
                                  reader=None if reader_birads is None else ReaderView(reader_birads, None, None))
    else:
        if mask.shape != image.array.shape:
            raise MaskError(f"mask shape {mask.shape} does not match image shape {image.array.shape}", image.source)
        mask, low_confidence, box_fallback, presence = mask.astype(bool).copy(), False, False, None
        check_lesion_mask(mask, image.source or None)
        work_mask = grid.down(mask, is_mask=True)
    report(0.4, "radiomics")
    t = time.perf_counter()
    try:
        rad = extract(work, work_mask)
    except MaskError as err:
        if origin != "auto":
            raise
        # said of the segmenter's outline, with what the user can do about it
        raise MaskError(f"the automatic outline cannot be classified ({err.cause}); draw a box around the "
                        "lesion or outline it", image.source or None) from None
    seconds["radiomics"] = time.perf_counter() - t
    t = time.perf_counter()
    desc = lesion_descriptors(work, work_mask)
    rad = {**rad, **desc}  # the classifier reads what its card names
    meas = measurements(image, mask, rad, px_scale=grid.scale()[0])
    # the ACR ultrasound lexicon describes ultrasound only
    lexicon = categories({k.removeprefix(DESCRIPTOR_PREFIX): v for k, v in desc.items()}, meas) \
        if model_set_info(model_set)["modality"] == "US" else []
    if origin == "auto":  # the segmenter's outline is smoother than a reader's: its shape and margin say less
        lexicon = from_automatic_outline(lexicon)
    seconds["descriptors"] = time.perf_counter() - t
    report(0.6, "deep features")
    t = time.perf_counter()
    deep_model = get_deep_features(device, classifier.card.deep_crop)
    deep = deep_model.features(work, work_mask)
    box_p, scorer, whole_p = None, None, None
    if classifier.box_member is not None:
        scorer = get_member_scorer(classifier.box_member["model"], device, model_set)
        box_p = scorer.probability(work, work_mask)
        provenance = replace(provenance, box_model=ModelRef.of(scorer.card))
    if classifier.whole_member is not None:
        whole = get_member_scorer(classifier.whole_member["model"], device, model_set)
        whole_p = whole.probability(work, work_mask)
        provenance = replace(provenance, whole_image_model=ModelRef.of(whole.card))
    seconds["deep_features"] = time.perf_counter() - t
    t = time.perf_counter()
    pred = classifier.predict(rad, deep, box_probability=box_p, whole_probability=whole_p)
    reader = apply_site(pred, site, origin, reader_birads)
    signs = suspicious_signs(lexicon) if pred.probability < LOW_SCORE else []
    if signs:  # no confident benign call where the lexicon itself says suspicious
        pred.flags.append(Flag("suspicious_sign_low_score", f"suspicious signs despite a score of "
                               f"{100 * pred.probability:.1f} %: {', '.join(signs)}; the lexicon alone calls for at "
                               "least 4A, so the score is not a reason to call it benign"))
    pred.flags += member_flags(pred.member_probabilities, pred.probability)
    if "note" in meas:
        pred.flags.append(Flag("measurement", f"measurement: {meas['note']}"))
    if prompt_outline:
        pred.flags.insert(0, BOX_PROMPT_FLAG)
    if low_confidence:
        pred.flags.insert(0, BOX_FALLBACK_FLAG if box_fallback else LOW_CONFIDENCE_FLAG)
        if roi is None or box_fallback:  # not a category on an outline that may not be the lesion
            pred.birads, pred.suggestion_note = INCOMPLETE, INCOMPLETE_NOTE
    seconds["classify"] = time.perf_counter() - t
    heat = None
    if heatmap:
        report(0.8, "Grad-CAM")
        t = time.perf_counter()
        # the member that carries most of the fused logit is the one explained
        if scorer is not None and float(classifier.box_member["weight"]) >= 0.5:
            work_heat = scorer.gradcam(work, work_mask)
        else:
            work_heat = deep_model.gradcam(work, work_mask, classifier.explain_weight, classifier.explain_bias)
        heat = grid.up(work_heat)
        seconds["gradcam"] = time.perf_counter() - t
    report(1.0, "done")
    return AnalysisResult(source=image.source, lesion_found=True, provenance=provenance, mask=mask,
                          prediction=pred, heatmap=heat, radiomics=rad,
                          measurements=meas, lexicon=lexicon, seconds=seconds, input_check=checked,
                          presence_score=presence, reader=reader,
                          extra={"working_size": list(grid.work_shape())} if grid.resized else {})
