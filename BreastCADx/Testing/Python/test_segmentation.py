"""Shipped segmenter on committed held-out BUSI cases: golden masks, empty normal, geometry, ROI, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

import dicom_factory as f
from BreastCADxLib.analysis.cards import SegmenterCard
from BreastCADxLib.analysis.registry import MODELS_DIR, choose_device
from BreastCADxLib.analysis.segmentation import Cancelled, LesionSegmenter, RoiError, get_segmenter
from BreastCADxLib.errors import ModelError, UnsupportedImageError
from BreastCADxLib.image import Image
from BreastCADxLib.io import load_image, load_mask, save_image, save_mask
from BreastCADxLib.results.evaluation import dice
from conftest import BUSI_ONLY, MODULE_DIR

DATA = MODULE_DIR / "Testing" / "Data" / "busi"
LESION_CASES = ["benign_004", "benign_031", "malignant_001"]  # test split, first by name with width <= 600
# Floors (benchmarks/results/segmentation.md: test-split mean Dice 0.73 without prompt). These committed cases
# measured 0.89-0.93 with the shipped model; the floors sit ~0.1 below so a real regression fails the test.
MEAN_DICE_FLOOR = 0.80
SAMPLE_DICE_FLOOR = 0.85



@pytest.fixture(scope="module")
def segmenter() -> LesionSegmenter:
    return get_segmenter(device="cpu")


def _case(name: str):
    img = load_image(DATA / f"{name}.png")
    return img, load_mask(DATA / f"{name}_mask.png", img)


def test_golden_masks(segmenter):
    """Lesion expected (the panel's default): how well it outlines; whether the default path finds a lesion
    unprompted is the presence threshold's (benchmarks/results/leave_site_out.md: "missed")."""
    scores = {}
    for name in LESION_CASES:
        img, ref = _case(name)
        scores[name] = dice(segmenter.segment(img, expect_lesion=True).mask, ref)
    assert np.mean(list(scores.values())) >= MEAN_DICE_FLOOR, scores


def test_sample_case_against_reference(segmenter, sample_dicom, sample_mask):
    img = load_image(sample_dicom)
    result = segmenter.segment(img)
    assert result.mask.shape == img.array.shape and result.probability.dtype == np.float32
    assert dice(result.mask, load_mask(sample_mask, img)) >= SAMPLE_DICE_FLOOR


def test_normal_image_gives_empty_mask(segmenter):
    img, ref = _case("normal_003")
    assert not ref.any()
    assert not segmenter.segment(img).lesion_found


def test_expect_lesion_recovers_a_lesion_the_presence_threshold_drops(segmenter):
    # benign_351 (val split): the model's peak (~0.5) is below the presence threshold (0.9), so the default
    # returns nothing; told that there is a lesion, it returns the right region
    img, ref = _case("benign_351")
    assert not segmenter.segment(img).lesion_found
    result = segmenter.segment(img, expect_lesion=True)
    assert result.low_confidence
    assert dice(result.mask, ref) >= 0.85


def test_expect_lesion_candidate_keeps_to_the_lesion_not_a_caliper_mark():
    # bus_0622-l (BUS-BRA L5, train split): the BUSI-only segmenter's whole-image peak (~0.9) sits on the lesion
    # but below presence; re-segmented in its box, the sharpest response is a caliper mark at the lesion's edge.
    # The candidate is what connects to the first-pass region (before: the mark alone, Dice 0.06)

    seg = LesionSegmenter.from_registry(device="cpu", models_dir=BUSI_ONLY)
    img = load_image(MODULE_DIR / "Testing" / "Data" / "busbra_l5" / "bus_0622-l.png")
    ref = load_mask(MODULE_DIR / "Testing" / "Data" / "busbra_l5" / "bus_0622-l_mask.png", img)
    assert not seg.segment(img).lesion_found
    result = seg.segment(img, expect_lesion=True)
    assert result.low_confidence
    assert ndimage.label(result.mask[0])[1] == 1
    assert dice(result.mask, ref) >= 0.8


def test_best_candidate_passes_over_regions_too_small_to_be_a_lesion():
    from BreastCADxLib.analysis.segmentation import best_candidate

    prob = np.zeros((64, 64), np.float32)
    prob[:2, :2] = 0.05  # a corner response, the highest in the map
    prob[30:40, 20:32] = 0.03  # a weaker blob of lesion size
    assert best_candidate(prob, 0.3).sum() == 4  # without a size floor: the corner
    blob = best_candidate(prob, 0.3, min_area=20)
    assert blob.sum() == 120 and blob[35, 25]
    assert not best_candidate(prob, 0.3, min_area=500).any()  # nothing plausible: empty, not the corner
    prob[:, 63] = 0.06  # a line along the image edge, long enough but one pixel thick
    assert best_candidate(prob, 0.3, min_area=20).sum() == 120


def test_expect_lesion_candidate_is_not_a_corner_response():
    # bus_0421-l (BUS-BRA L5, val split): the BUSI-only segmenter sees little (peak 0.04), and its strongest
    # response is a 3-pixel spot in the image corner; the candidate was that spot (radiomics refused it, the case
    # went unclassified). Regions below the post-processing's island size are passed over for the next peak.

    seg = LesionSegmenter.from_registry(device="cpu", models_dir=BUSI_ONLY)
    img = load_image(MODULE_DIR / "Testing" / "Data" / "busbra_l5" / "bus_0421-l.png")
    ref = load_mask(MODULE_DIR / "Testing" / "Data" / "busbra_l5" / "bus_0421-l_mask.png", img)
    result = seg.segment(img, expect_lesion=True)
    assert result.low_confidence and not result.mask[0, :4, :4].any()
    assert result.mask.sum() >= 0.003 * result.mask.size
    assert dice(result.mask, ref) >= 0.8  # measured 0.886


def test_candidate_in_a_drawn_box_covers_the_lesion_not_a_caliper_mark():
    # bus_0698-s (BUS-BRA L5, train split), box = lesion box + 30 %: the BUSI-only segmenter's response in the box
    # is weak (peak < 0.3) and sharpest on a caliper mark; the candidate reaches down to 0.1 x the peak
    # (roi_candidate_relative; before: 0.3 x, the mark alone, Dice 0.04)
    from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox

    seg = LesionSegmenter.from_registry(device="cpu", models_dir=BUSI_ONLY)
    img = load_image(MODULE_DIR / "Testing" / "Data" / "busbra_l5" / "bus_0698-s.png")
    ref = load_mask(MODULE_DIR / "Testing" / "Data" / "busbra_l5" / "bus_0698-s_mask.png", img)
    result = seg.segment(img, roi=expand_box(mask_bbox(ref[0]), 0.3, ref[0].shape), expect_lesion=True)
    assert result.low_confidence
    assert dice(result.mask, ref) >= 0.65


def test_expect_lesion_keeps_confident_results_and_marks_candidates(segmenter):
    img, _ = _case("malignant_001")
    default, expected = segmenter.segment(img), segmenter.segment(img, expect_lesion=True)
    assert not expected.low_confidence
    np.testing.assert_array_equal(default.mask, expected.mask)
    normal, _ = _case("normal_003")
    stack = Image(array=np.concatenate([normal.array] * 2))
    result = segmenter.segment(stack, expect_lesion=True)
    assert result.low_confidence
    frames = result.mask.reshape(2, -1).any(axis=1)
    assert frames.sum() == 1  # one candidate region in the most probable frame, not one per frame
    k = int(np.argmax(frames))
    assert ndimage.label(result.mask[k])[1] == 1
    assert result.mask[k][np.unravel_index(np.argmax(result.probability[k]), result.mask[k].shape)]


def test_same_mask_and_grid_for_png_dicom_nrrd(segmenter, tmp_path):
    png = load_image(DATA / "malignant_001.png")
    dcm = load_image(f.us(tmp_path / "m.dcm", png.plane(), spacing_mm=(0.08, 0.08)))
    rot = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    nrrd = load_image(save_image(png.with_array(png.array, origin=(5.0, -3.0, 2.0), direction=rot,
                                                spacing=(0.1, 0.1, 1.0), spacing_known=True), tmp_path / "m.nrrd"))
    masks = []
    for img, out in ((png, "a.png"), (dcm, "b.nrrd"), (nrrd, "c.nrrd")):
        mask = segmenter.segment(img).mask
        written = load_image(save_mask(mask, img, tmp_path / out))
        assert written.array.shape == img.array.shape
        if out.endswith(".nrrd"):
            assert written.same_grid(img)
        masks.append(mask)
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[0], masks[2])


def test_roi_prompt_limits_mask_to_box(segmenter):
    img, ref = _case("malignant_001")
    ys, xs = np.nonzero(ref[0])
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int((ys.min() + ys.max()) // 2))  # upper half only
    mask = segmenter.segment(img, roi=box).mask[0]
    x0, y0, x1, y1 = box
    assert mask[y0:y1, x0:x1].any()
    outside = mask.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()


def test_roi_outside_image(segmenter):
    img, _ = _case("benign_004")
    with pytest.raises(RoiError):
        segmenter.segment(img, roi=(2000, 2000, 2100, 2100))


def test_stack_slice_by_slice_with_progress_and_cancel(segmenter):
    img, _ = _case("malignant_001")
    stack = Image(array=np.concatenate([img.array] * 3))
    seen = []
    result = segmenter.segment(stack, progress=lambda frac, msg: seen.append(frac))
    assert seen == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert result.mask.shape == stack.array.shape
    np.testing.assert_array_equal(result.mask[0], result.mask[2])
    calls = iter([False, True])
    with pytest.raises(Cancelled):
        segmenter.segment(stack, should_cancel=lambda: next(calls))


def test_wrong_dimensional_input(segmenter):
    with pytest.raises(UnsupportedImageError):
        segmenter.segment(Image(array=np.zeros((1, 4, 4), np.uint8)))
    with pytest.raises(ValueError):
        Image(array=np.zeros((2, 3, 4, 5), np.uint8))


def _copy_models(tmp_path):
    dst = tmp_path / "models"
    shutil.copytree(MODELS_DIR, dst)
    return dst


def test_corrupt_weights_rejected_by_sha256(tmp_path):
    models = _copy_models(tmp_path)
    card = json.loads((models / "lesion_seg_lite0.json").read_text())
    weights = models / card["weights"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA256 mismatch"):
        LesionSegmenter.from_registry(models_dir=models)


def test_missing_weights_and_unknown_model(tmp_path):
    models = _copy_models(tmp_path)
    with pytest.raises(ModelError, match="no model card"):
        LesionSegmenter.from_registry("nonexistent", models_dir=models)
    (models / "lesion_seg_lite0.pt").unlink()
    with pytest.raises(ModelError, match="missing") as e:
        LesionSegmenter.from_registry(models_dir=models)
    assert "lesion_seg_lite0.pt" in str(e.value)


def test_one_loader_refuses_an_incomplete_or_changed_model_set_naming_the_file(tmp_path):
    """modelset.json lists every file of a set with its SHA256: a set without it, with a file missing, with any
    file altered (the input guard too) or with a card added by hand is refused before any model runs, by the
    same check whichever model is asked for; the batch fingerprint changes with any file."""
    from BreastCADxLib.analysis.classifier import load_classifier
    from BreastCADxLib.analysis.guard import GUARD_ID
    from BreastCADxLib.analysis.registry import load_card, verify_model_set, write_modelset

    models = _copy_models(tmp_path)
    assert set(verify_model_set(models)["files"]) >= {"image_guard.npz", "lesion_seg_lite0.pt",
                                                      "lesion_cls_fusion.npz", "lesion_whole_cnn.pt"}
    guard = models / f"{GUARD_ID}.npz"
    before = (models / "modelset.json").read_bytes()
    guard.write_bytes(guard.read_bytes() + b"\0")
    for load in (lambda: load_card(GUARD_ID, models), lambda: load_classifier(models_dir=models),
                 lambda: LesionSegmenter.from_registry(models_dir=models)):
        with pytest.raises(ModelError, match="SHA256 mismatch") as e:
            load()
        assert "image_guard.npz" in str(e.value)
    write_modelset(models)  # what the training side does after writing a file
    assert (models / "modelset.json").read_bytes() != before
    (models / "extra.json").write_text(json.dumps({"id": "extra", "weights": "x.pt", "sha256": "0"}))
    with pytest.raises(ModelError, match="not listed"):
        load_card("lesion_seg_lite0", models)
    (models / "extra.json").unlink()
    (models / "modelset.json").unlink()
    with pytest.raises(ModelError, match="not a complete model set"):
        load_card("lesion_seg_lite0", models)


def test_device_choice(monkeypatch):
    monkeypatch.setenv("BREASTCADX_DEVICE", "cpu")
    assert choose_device("auto").type == "cpu"
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA"):
            choose_device("cuda")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_cli_segment_dicom_and_png(tmp_path, sample_dicom, sample_mask):
    out = tmp_path / "lesion.nrrd"
    r = _cli("segment", sample_dicom, "--out", out, "--prob", tmp_path / "prob.nrrd", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    img = load_image(sample_dicom)
    mask_img = load_image(out)
    assert mask_img.same_grid(img)
    assert dice(mask_img.array > 0, load_mask(sample_mask, img)) >= SAMPLE_DICE_FLOOR
    assert load_image(tmp_path / "prob.nrrd").array.max() <= 1.0
    r = _cli("segment", DATA / "normal_003.png", "--out", tmp_path / "n.png", "--expect-lesion")
    assert r.returncode == 0 and "low-confidence candidate" in r.stdout, r.stdout + r.stderr
    assert (load_image(tmp_path / "n.png").array > 0).any()
    r = _cli("segment", DATA / "malignant_001.png", "--out", tmp_path / "m.png", "--roi", "10,10,400,500")
    assert r.returncode == 0, r.stderr
    assert load_image(tmp_path / "m.png").array.shape == load_image(DATA / "malignant_001.png").array.shape


def test_cli_segment_never_overwrites_and_reports_bad_input(tmp_path, sample_dicom):
    existing = tmp_path / "edited.nrrd"
    existing.write_bytes(b"user's corrected segmentation")
    r = _cli("segment", sample_dicom, "--out", existing)
    assert r.returncode == 2 and "exists" in r.stderr and "Traceback" not in r.stderr
    assert existing.read_bytes() == b"user's corrected segmentation"
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    r = _cli("segment", bad, "--out", tmp_path / "x.nrrd")
    assert r.returncode == 2 and str(bad) in r.stderr and "Traceback" not in r.stderr
    for roi in ("1,2,3", "inf,0,10,10", "nan,0,10,10", "1e999,0,10,10"):  # not four finite numbers
        r = _cli("segment", sample_dicom, "--out", tmp_path / "y.nrrd", "--roi", roi)
        assert r.returncode == 2 and "x0,y0,x1,y1" in r.stderr and "internal error" not in r.stderr, roi


def test_a_drawn_box_always_yields_an_outline_without_expect_lesion(segmenter):
    """Inside a box the user drew there is a lesion by definition: a box on lesion-free tissue of a held-out BUSI
    normal image (nothing passes presence there) still gives the best candidate, inside the box, flagged."""
    img, _ = _case("normal_003")
    rows, cols = img.array.shape[1:]
    box = (cols // 4, rows // 3, cols // 4 + 120, rows // 3 + 90)
    plain = segmenter.segment(img)
    result = segmenter.segment(img, roi=box)
    assert not plain.lesion_found  # the default path finds nothing on this image
    assert result.lesion_found and result.low_confidence and not result.box_fallback
    x0, y0, x1, y1 = box
    assert result.mask[0, y0:y1, x0:x1].sum() == result.mask.sum() >= 20
    assert result.outcome == "low-confidence candidate"


def test_a_box_where_the_network_sees_nothing_gets_its_inscribed_ellipse_flagged():
    """A network answering 0 everywhere (no usable region at all) still gives an outline inside a drawn box: the
    ellipse inscribed in the box, flagged box_fallback; without a box, nothing."""
    card = SegmenterCard.from_json(json.loads((MODELS_DIR / "lesion_seg_lite0.json").read_text()))
    blind = LesionSegmenter(card, None, "cpu", engine=lambda x: torch_full(x, -1e4))
    img = Image(array=np.random.default_rng(0).integers(0, 255, (1, 200, 300)).astype(np.uint8))
    assert not blind.segment(img).lesion_found
    result = blind.segment(img, roi=(40, 30, 140, 90))
    assert result.box_fallback and result.low_confidence and "ellipse" in result.outcome
    ys, xs = np.nonzero(result.mask[0])
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (40, 30, 140, 90)
    assert 0.7 < result.mask.sum() / (100 * 60) < 0.85  # pi/4 of the box


def torch_full(x, value):
    import torch

    return torch.full((x.shape[0], 1, *x.shape[2:]), value)


def test_told_a_lesion_is_there_a_blind_segmenter_asks_for_a_box_never_answers_normal(monkeypatch, sample_dicom):
    """Lesion expected and no usable region anywhere (BUS-UCLM test: 5 benign views of one patient, peak < 0.04):
    "no lesion found (normal)" would be a confident wrong answer, so the error names the file and asks for a box;
    without the prompt the default path still says no lesion found."""
    from BreastCADxLib.analysis import pipeline
    from BreastCADxLib.errors import MaskError

    card = SegmenterCard.from_json(json.loads((MODELS_DIR / "lesion_seg_lite0.json").read_text()))
    blind = LesionSegmenter(card, None, "cpu", engine=lambda x: torch_full(x, -1e4))
    monkeypatch.setattr(pipeline, "get_segmenter", lambda **kw: blind)
    image = load_image(sample_dicom)
    with pytest.raises(MaskError, match="a lesion was expected.*draw a box") as err:
        pipeline.analyze(image, expect_lesion=True, heatmap=False)
    assert str(sample_dicom) in str(err.value)
    assert not pipeline.analyze(image, heatmap=False).lesion_found
