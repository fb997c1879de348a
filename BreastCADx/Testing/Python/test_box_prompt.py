"""LiteMedSAM inside a drawn box (training/experiments/box_prompt.py, an experiment since 2026-12-06): golden
masks, the box as a hard limit, pinned weights, no stand-in left behind, the experiment's segmenter; and a card
that still names it is refused by the product's segmenter."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox
from BreastCADxLib.analysis.segmentation import get_segmenter
from BreastCADxLib.errors import ModelError
from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.results.evaluation import dice
from conftest import MODULE_DIR
from training.experiments import box_prompt
from training.experiments.box_prompt import BoxOutliner, LiteMedSamSegmenter, get_box_outliner

DATA = MODULE_DIR / "Testing" / "Data" / "busi"



def _case(name: str):
    img = load_image(DATA / f"{name}.png")
    ref = load_mask(DATA / f"{name}_mask.png", img)
    return img, ref, expand_box(mask_bbox(ref[0]), 0.10, ref.shape[1:])  # the reference box + 10 %, as benchmarked


def test_outlines_held_out_lesions_from_their_box():
    outliner = get_box_outliner("cpu")
    scores = {}
    for name in ("benign_031", "malignant_001"):
        img, ref, box = _case(name)
        prob = outliner.probability(img.array[0], box)
        assert prob.shape == ref.shape[1:] and 0.0 <= prob.min() and prob.max() <= 1.0
        x0, y0, x1, y1 = box
        outside = prob.copy()
        outside[y0:y1, x0:x1] = 0
        assert not outside.any()  # the box is a hard limit
        scores[name] = dice(prob > 0.5, ref[0])
    assert min(scores.values()) > 0.85, scores  # measured 0.90-0.95


def test_no_timm_stand_in_is_left_behind():
    get_box_outliner("cpu")
    assert "timm" not in sys.modules or hasattr(sys.modules["timm"], "__file__")


def test_altered_weights_are_refused(monkeypatch):
    monkeypatch.setattr(box_prompt, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(ModelError, match="SHA256"):
        BoxOutliner("cpu")


def test_the_experiments_segmenter_outlines_the_box_with_it():
    shipped = get_segmenter(device="cpu")
    segmenter = LiteMedSamSegmenter(shipped.card, None, "cpu", engine=shipped.engine)
    img, ref, box = _case("malignant_001")
    mask = segmenter.segment(img, roi=box, expect_lesion=True).mask
    np.testing.assert_array_equal(mask[0] & ~(get_box_outliner("cpu").probability(img.array[0], box) > 0), False)
    assert dice(mask[0], ref[0]) > 0.85


def test_a_card_naming_litemedsam_is_refused_by_the_product():
    import dataclasses

    from BreastCADxLib.analysis.segmentation import LesionSegmenter

    card = get_segmenter(device="cpu").card
    card = dataclasses.replace(card, postprocessing={**card.postprocessing, "roi_outliner": "litemedsam"})
    with pytest.raises(ModelError, match="outlines inside a drawn box with the set's own network"):
        LesionSegmenter(card, None, "cpu", engine=lambda x: x)
