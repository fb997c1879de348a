"""The input guard: before any model runs, is this an image the models were made for?

Two layers, both declared in the model set's `image_guard` card (what the models were validated on):
1. rules: modality (ultrasound, or an undeclared raster), frames, plausible size; blank, constant or non-finite
   images are refused always (there is nothing to analyse);
2. an image-level score: a logistic model on the frozen ImageNet Lite0 embedding of the whole image, fitted on the
   model set's ultrasound images against varied non-ultrasound images (mammograms, MR, photographs, synthetic
   patterns); its threshold is chosen leave-site-out, so that ultrasound from a hospital the fit has never seen
   still passes (training/fit_guard.py; a one-class distance was tried first and could not tell a new hospital's
   ultrasound from a mammogram: benchmarks/results/input_guard.md).
An image outside either is refused naming the file and why; `allow_unvalidated=True` analyses it anyway and the
result carries the reasons as a flag.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from BreastCADxLib.analysis.cards import GuardCard
from BreastCADxLib.analysis.inference import Engine
from BreastCADxLib.analysis.orientation import speckle_check
from BreastCADxLib.analysis.preprocessing import network_input, resize_plane
from BreastCADxLib.analysis.registry import (
    DEFAULT_MODEL_SET,
    installed_sets,
    load_card,
    model_set_dir,
    model_set_info,
)
from BreastCADxLib.analysis.values import InputCheck, to_uint8_range
from BreastCADxLib.errors import OVERRIDE_HINT, BreastCADxError
from BreastCADxLib.image import Image

GUARD_ID = "image_guard"
EMBED_SIZE = 224
MODALITY_NAMES = {"MG": "mammography", "MR": "MRI", "CT": "CT", "DX": "radiography", "CR": "radiography",
                  "PT": "PET", "NM": "nuclear medicine", "XA": "angiography", "RF": "fluoroscopy",
                  "OP": "ophthalmic photography", "SM": "slide microscopy"}
# no image of the three sites (2,259) has one coloured pixel; coloured calipers or text stay well below this
MAX_COLOUR_FRACTION = 0.01


class InputRefused(BreastCADxError):
    """An image outside what the models were validated on (or with nothing to analyse)."""

    code = "input_refused"


def _plane(image: Image) -> np.ndarray:
    return image.array[image.frames // 2]


def hard_reasons(image: Image) -> list[str]:
    """Problems no override can lift: nothing to analyse."""
    a = image.array
    if a.size == 0:
        return ["the image is empty"]
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        return ["the image holds NaN or infinite values"]
    plane = _plane(image)
    if float(plane.max()) == float(plane.min()):
        return [f"the image is blank (every pixel is {plane.flat[0]:g})"]
    grey = to_uint8_range(plane)
    if float(np.percentile(grey, 99)) - float(np.percentile(grey, 1)) < 4.0:
        return ["the image is nearly constant (98 % of pixels within 4 grey levels): nothing to analyse"]
    return []


def rule_reasons(image: Image, spec: dict) -> list[str]:
    """Where the image is outside the declared validated range (modality, frames, size)."""
    out = []
    if image.modality not in spec["modalities"]:
        name = MODALITY_NAMES.get(image.modality, "this modality")
        out.append(f"{name} ({image.modality}): no model for this modality is installed (this model set was "
                   f"validated on {', '.join(spec['modalities'])}; installed sets: {installed_sets()})")
    if image.frames > spec["max_frames"] and image.modality != "US":
        out.append(f"{image.frames} frames: the models were validated on single 2D ultrasound frames")
    colour = float(image.metadata.get("colour_fraction", 0.0))
    if colour > spec.get("max_colour_fraction", MAX_COLOUR_FRACTION):
        out.append(f"{100 * colour:.1f} % of its pixels are coloured (a colour Doppler or elastography overlay, or "
                   "coloured marks): the models were validated on grey B-mode only (no training image has any)")
    rows, cols = image.array.shape[1:]
    lo, hi = spec["min_side"], spec["max_side"]
    if min(rows, cols) < lo or max(rows, cols) > hi:
        out.append(f"{cols}x{rows} pixels: outside the {lo}-{hi} pixel sides of the validated images")
    return out


class ImageGuard:
    """The image-level model: P(breast ultrasound) from the whole image's embedding."""

    def __init__(self, card: GuardCard, device: str = "cpu") -> None:
        path = card.weights_path  # verified with the model set (registry.verify_model_set)
        with np.load(path, allow_pickle=False) as z:
            self.one_class = "components" in z.files  # a set made by `breastcadx train`: distance to its images
            keys = ("mean", "components", "variances") if self.one_class else ("mean", "scale", "coef", "intercept")
            self.params = {k: z[k] for k in keys}
            if self.one_class and "residual_max" in z.files:  # sets made before it have none
                self.params["residual_max"] = z["residual_max"]
        self.card = card
        self.threshold = float(card.threshold)
        self.spec = card.validated_on
        self.engine = embedder(device)

    def embed(self, planes: list[np.ndarray]) -> np.ndarray:
        return embed(self.engine, planes)

    def score(self, image: Image) -> float:
        z = self.embed([_plane(image)])
        if self.one_class:
            return float(one_class_score(z, self.params)[0])
        return float(ultrasound_probability(z, self.params)[0])


def pca_residual(z: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Distance of each embedding from the PCA subspace of the set's training images (what the Mahalanobis
    distance inside it does not see: noise, patterns and other modalities lie far off it)."""
    c = z - params["mean"]
    return np.linalg.norm(c - (c @ params["components"].T) @ params["components"], axis=1)


def one_class_score(z: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Chi-square tail probability of the Mahalanobis distance in the PCA of a set's own training images: near 1
    inside them, near 0 far from them; 0 for an embedding farther from that subspace than `residual_max` (when the
    set has one: calibrated leave-site-out, train/pipeline.write_guard)."""
    from scipy.stats import chi2

    d2 = ((((z - params["mean"]) @ params["components"].T) ** 2) / params["variances"]).sum(axis=1)
    p = chi2.sf(d2, df=len(params["variances"]))
    if "residual_max" in params:
        p = np.where(pca_residual(z, params) > float(params["residual_max"]), 0.0, p)
    return p


def embedder(device: str = "cpu") -> Engine:
    """The frozen Lite0 trunk's engine, shared with the deep features (loaded once)."""
    from BreastCADxLib.analysis.deep_features import get_deep_features

    return get_deep_features(device).engine


def embed(engine: Engine, planes: list[np.ndarray]) -> np.ndarray:
    """L2-normalised pooled Lite0 features of whole grey planes, (n, 1280)."""
    x = torch.stack([network_input(resize_plane(torch.from_numpy(to_uint8_range(p)), (EMBED_SIZE, EMBED_SIZE)))
                     for p in planes])
    f = engine(x).numpy()
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8)


def ultrasound_probability(z: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    logit = ((z - params["mean"]) / params["scale"]) @ params["coef"] + params["intercept"]
    return 1.0 / (1.0 + np.exp(-logit))


@lru_cache(maxsize=2)
def get_guard(model_set: str = DEFAULT_MODEL_SET, device: str = "cpu") -> ImageGuard:
    return ImageGuard(load_card(GUARD_ID, model_set_dir(model_set)), device)


MODALITY_WORDS = {"US": "breast ultrasound", "MG": "mammograms"}


def check_input(image: Image, model_set: str = DEFAULT_MODEL_SET, allow_unvalidated: bool = False,
                device: str = "auto") -> InputCheck:
    """Refuse (InputRefused naming the file and why) or return what was found; see the module docstring."""
    hard = hard_reasons(image)
    if hard:
        raise InputRefused("; ".join(hard) + " - not analysed", image.source or None)
    from BreastCADxLib.analysis.registry import choose_device

    guard = get_guard(model_set, str(choose_device(device)))
    modality = model_set_info(model_set)["modality"]
    reasons = rule_reasons(image, guard.spec)
    check = InputCheck(threshold=guard.threshold, reasons=reasons,
                       notes=list(image.metadata.get("corrections", [])))
    if image.modality in guard.spec["modalities"]:  # a foreign modality is refused by its name alone
        check.ultrasound_score = guard.score(image)
        looks_right = check.ultrasound_score >= guard.threshold
        if not looks_right:
            reasons.append(f"it does not look like the {MODALITY_WORDS.get(modality, modality)} the models were "
                           f"trained on ({modality} score {check.ultrasound_score:.3f} < {guard.threshold:.3f}; "
                           f"installed sets: {installed_sets()}; another modality needs a model set made for it)")
        speckle = speckle_check(to_uint8_range(_plane(image))) if modality == "US" else None
        if speckle is not None and looks_right:  # turned, upside down or inverted: the models would misread it
            reasons += speckle.reasons()
            check.cautions += speckle.cautions()
        elif speckle is not None and speckle.reasons():  # a mammogram is not "turned by 90 degrees": a hint only
            reasons[-1] += " (if it is an ultrasound image: " + "; ".join(speckle.reasons()) + ")"
    if reasons and not allow_unvalidated:
        raise InputRefused("; ".join(reasons) + f" - {OVERRIDE_HINT}", image.source or None)
    check.overridden = bool(reasons)
    return check
