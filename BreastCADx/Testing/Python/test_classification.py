"""Shipped fusion classifier: held-out AUC floor, calibration, BI-RADS, safety of the bundle, mask errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from BreastCADxLib.analysis.calibration import (
    apply_calibration,
    assessment_label,
    birads_suggestion,
    expected_calibration_error,
)
from BreastCADxLib.analysis.classifier import (
    SKOPS_TRUSTED_TYPES,
    classifier_for,
    get_classifier,
    load_classifier,
    member_flags,
)
from BreastCADxLib.analysis.pipeline import analyze
from BreastCADxLib.analysis.registry import MODELS_DIR, save_card
from BreastCADxLib.errors import MaskError, ModelError
from BreastCADxLib.io import load_image, load_mask
from conftest import BUSI_ONLY, MODULE_DIR

DATA = MODULE_DIR / "Testing" / "Data"
# floors = leave_site_out benchmark AUC with reference masks (benchmarks/results/leave_site_out.md) minus a margin
FLOORS = {("three-site", "busi"): 0.97, ("three-site", "busbra_l5"): 0.95, ("busi-only", "busbra_l5"): 0.95}
SETS = {"three-site": "three-site", "busi-only": str(BUSI_ONLY)}  # member columns are named by the set's id


def by_name(z, names: list[str]) -> np.ndarray:
    """The rows' feature columns in a bundle's order (each set names its own)."""
    have = list(z["named_names"])
    assert set(names) <= set(have)
    return z["named"][:, [have.index(n) for n in names]]


@pytest.mark.parametrize("model_set,site", list(FLOORS))
def test_heldout_test_patients_auc_floor(model_set, site):
    """Held-out test lesions of each site (never seen in training or selection), reference outlines; busi-only on
    BUS-BRA L5 is a cross-site check (that model never saw the hospital)."""
    z = np.load(DATA / "test_rows.npz", allow_pickle=False)
    clf = get_classifier(model_set=SETS[model_set])
    named = by_name(z, clf.radiomics_names)
    rows = z["site"] == site
    box = z[f"box_{model_set}"][rows].astype(float) if clf.box_member is not None else None
    whole = z[f"whole_{model_set}"][rows].astype(float) if clf.whole_member is not None else None
    p = clf.fused(named[rows], z["deep"][rows].astype(float), box, whole)[0]  # members on the same outlines
    assert rows.sum() >= 120 and 0 < z["label"][rows].sum() < rows.sum()
    assert roc_auc_score(z["label"][rows], p) >= FLOORS[model_set, site]
    assert expected_calibration_error(p, z["label"][rows]) <= 0.2  # benchmark: 0.03-0.15 with reference outlines


def test_an_attribution_is_the_change_in_the_fused_probability_recomputed_by_hand():
    """A held-out case through the shipped bundle with both image members (the one for automatic outlines): the
    top feature's contribution equals the fused probability minus the fused probability with that feature at its
    training mean (members held)."""
    z = np.load(DATA / "test_rows.npz", allow_pickle=False)
    clf = classifier_for("three-site", "auto")
    assert clf.box_member is not None and clf.whole_member is not None
    i = int(np.flatnonzero(z["site"] == "busbra_l5")[0])
    rad = dict(zip(z["named_names"].tolist(), z["named"][i].astype(float)))
    deep, box, whole = z["deep"][i].astype(float), float(z["box_three-site"][i]), float(z["whole_three-site"][i])
    pred = clf.predict(rad, deep, box_probability=box, whole_probability=whole)
    top = pred.top_features[0]
    branch = next(b for b in clf.members[0]["branches"] if b[0] == "radiomics")
    mean = float(branch[2][list(branch[1]).index(clf.radiomics_names.index(top["feature"]))])
    probe = clf.predict({**rad, top["feature"]: mean}, deep, box_probability=box, whole_probability=whole)
    assert top["contribution"] == pytest.approx(pred.probability - probe.probability, abs=1e-9)
    assert abs(top["contribution"]) > 1e-4  # a real feature that moves this case, not a zero
    contributions = [abs(f["contribution"]) for f in pred.top_features]
    assert contributions == sorted(contributions, reverse=True)


def test_end_to_end_with_reference_masks():
    """Two held-out benign lesions score below a held-out malignant one; each label follows its category."""
    probs = {}
    for case in ("benign_004", "benign_031", "malignant_001"):
        img = load_image(DATA / "busi" / f"{case}.png")
        res = analyze(img, mask=load_mask(DATA / "busi" / f"{case}_mask.png", img), heatmap=False)
        assert res.mask_origin == "user" and res.predicted_label == assessment_label(res.birads_suggestion)
        probs[case] = res.probability
    assert probs["malignant_001"] > 0.5 > max(probs["benign_004"], probs["benign_031"])


def test_sample_dicom_with_reference_mask(sample_dicom, sample_mask):
    img = load_image(sample_dicom)
    res = analyze(img, mask=load_mask(sample_mask, img))
    assert res.birads_suggestion in ("4C", "5") and res.predicted_label == assessment_label(res.birads_suggestion)
    assert res.heatmap.shape == img.array.shape and res.heatmap.max() == pytest.approx(1.0, abs=1e-3)
    assert res.heatmap.min() >= 0.0
    assert res.measurements["unit"] == "px" and res.measurements["lesion_pixels"] == 54718


def test_deterministic(sample_dicom, sample_mask):
    img = load_image(sample_dicom)
    mask = load_mask(sample_mask, img)
    a, b = analyze(img, mask=mask), analyze(img, mask=mask)
    assert a.probability == b.probability
    np.testing.assert_array_equal(a.heatmap, b.heatmap)


def test_user_mask_is_not_modified(sample_dicom, sample_mask):
    img = load_image(sample_dicom)
    mask = load_mask(sample_mask, img)
    before = mask.copy()
    analyze(img, mask=mask, heatmap=False)
    np.testing.assert_array_equal(mask, before)


def test_member_rules_read_the_probability_shown_one_flag_at_most():
    """The members against the probability the reader sees (a site profile's, when one calibrates): a member at
    50 % or more under a score below 5 % is dissent (named, and it says more than members_disagree); otherwise the
    outline's two members 0.5 apart disagree; the whole-image member is never one of that pair."""
    members = {"fusion": 0.62, "box_cnn": 0.03, "whole_image_cnn": 0.9}
    assert [f.code for f in member_flags(members, 0.30)] == ["members_disagree"]
    assert "box disagree" in member_flags(members, 0.30)[0].text
    (dissent,) = member_flags(members, 0.04)  # the same members once a site's calibration lowers the score
    assert dissent.code == "member_dissent_low_score" and "4.0 %" in dissent.text
    assert "outline features 62 %" in dissent.text and "whole-image CNN 90 %" in dissent.text
    assert member_flags({"fusion": 0.45, "box_cnn": 0.02, "whole_image_cnn": 0.99}, 0.3) == []
    assert "radiomics and deep" in member_flags({"radiomics": 0.1, "deep": 0.7}, 0.3)[0].text
    assert member_flags({"fusion": 0.9}, 0.03)[0].code == "member_dissent_low_score"
    assert member_flags({"fusion": 0.9}, 0.3) == []


def test_calibration_is_monotonic():
    cal = get_classifier().calibration
    grid = np.linspace(0.001, 0.999, 500)
    out = apply_calibration(cal, grid)
    assert np.all(np.diff(out) >= 0) and out[0] < 0.1 and out[-1] > 0.9


@pytest.mark.parametrize("p,cat", [(0.0, "3"), (0.02, "3"), (0.0201, "4A"), (0.10, "4A"), (0.11, "4B"),
                                   (0.50, "4B"), (0.51, "4C"), (0.949, "4C"), (0.95, "5"), (1.0, "5")])
def test_birads_ranges(p, cat):
    assert birads_suggestion(p) == cat


@pytest.mark.parametrize("p", np.linspace(0, 1, 101))
def test_label_never_contradicts_the_category(p):
    """'benign' only for categories 2-3; 4A-4C suspicious; 5 highly suggestive (the ACR wording)."""
    from BreastCADxLib.analysis.classifier import Prediction

    pred = Prediction(probability=float(p), raw_probability=float(p), birads=birads_suggestion(float(p)),
                      member_probabilities={}, flags=[], top_features=[], ood_distance=0.0)
    assert (pred.label == "benign") == (pred.birads in ("2", "3"))
    assert pred.label == {"3": "benign", "5": "highly suggestive of malignancy"}.get(pred.birads, "suspicious")


def test_skops_member_with_an_untrusted_type_is_refused(tmp_path):
    """A member file carrying builtins.eval (which the old prefix allow-list admitted) never loads."""
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    from BreastCADxLib.analysis.classifier import _Estimator
    from BreastCADxLib.errors import ModelError

    sio.dump(FunctionTransformer(func=eval), tmp_path / "evil.skops")
    with pytest.raises(ModelError, match="builtins.eval"):
        _Estimator({"kind": "skops", "file": "evil.skops"}, tmp_path)


def test_bundle_has_no_pickle():
    card = json.loads((MODELS_DIR / "lesion_cls_fusion.json").read_text())
    for name in card["files"]:
        assert name.endswith((".npz", ".skops", ".xgb.json", ".lgbm.txt")), name
        if name.endswith(".npz"):
            np.load(MODELS_DIR / name, allow_pickle=False)  # raises if any array needs pickle
        if name.endswith(".skops"):
            import skops.io as sio

            assert set(sio.get_untrusted_types(file=MODELS_DIR / name)) <= SKOPS_TRUSTED_TYPES
    for pt in MODELS_DIR.glob("*.pt"):
        torch.load(pt, map_location="cpu", weights_only=True)
    assert not list(MODELS_DIR.glob("*.pkl")) and not list(MODELS_DIR.glob("*.joblib"))


def test_altered_bundle_rejected(tmp_path):
    dst = tmp_path / "models"
    shutil.copytree(MODELS_DIR, dst)
    arr = dst / "lesion_cls_fusion.npz"
    arr.write_bytes(arr.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match="SHA256"):
        load_classifier(models_dir=dst)


def test_unusable_masks_give_clear_errors(sample_dicom):
    img = load_image(sample_dicom)
    empty = np.zeros(img.array.shape, bool)
    with pytest.raises(MaskError, match="empty"):
        analyze(img, mask=empty)
    tiny = empty.copy()
    tiny[0, 100:103, 100:103] = True
    with pytest.raises(MaskError, match="at least"):
        analyze(img, mask=tiny)
    line = empty.copy()
    line[0, 200, 50:400] = True
    with pytest.raises(MaskError, match="one pixel thick"):
        analyze(img, mask=line)
    with pytest.raises(MaskError, match="does not match"):
        analyze(img, mask=np.ones((1, 10, 10), bool))


def test_an_unusable_automatic_outline_says_so_and_what_to_do(sample_dicom, monkeypatch):
    """Should the segmenter ever return an outline radiomics cannot describe, the error names the file, says the
    outline was automatic and asks for a box or an outline (not "lesion mask", which reads as the user's)."""
    from BreastCADxLib.analysis import pipeline
    from BreastCADxLib.analysis.segmentation import Segmentation

    img = load_image(sample_dicom)
    line = np.zeros(img.array.shape, bool)
    line[0, 200, 50:400] = True

    class LineSegmenter:
        def segment(self, image, **kwargs):
            return Segmentation(mask=line.copy(), probability=line.astype(np.float32), seconds=0.0)

    monkeypatch.setattr(pipeline, "get_segmenter", lambda **kwargs: LineSegmenter())
    with pytest.raises(MaskError, match=r"automatic outline cannot be classified \(lesion mask is one pixel thick"
                                        r".*draw a box around the lesion") as err:
        analyze(img, heatmap=False)
    assert str(sample_dicom) in str(err.value)


def test_committed_features_match_the_library(tmp_path):
    """The held-out rows were made by the same code and deep crop as `analyze` uses now."""
    from BreastCADxLib.analysis.deep_features import get_deep_features
    from BreastCADxLib.analysis.pipeline import lesion_descriptors
    from BreastCADxLib.analysis.radiomics_features import extract

    z = np.load(DATA / "test_rows.npz", allow_pickle=False)
    clf = get_classifier()
    assert clf.card.deep_model is None  # frozen ImageNet trunk
    deep = get_deep_features("cpu", clf.card.deep_crop)
    row = [i for i, (c, s) in enumerate(zip(z["case"], z["site"])) if c == "malignant_001" and s == "busi"][0]
    img = load_image(DATA / "busi" / "malignant_001.png")
    mask = load_mask(DATA / "busi" / "malignant_001_mask.png", img)
    named = {**extract(img, mask), **lesion_descriptors(img, mask)}
    np.testing.assert_allclose([named[n] for n in z["named_names"]], z["named"][row], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(deep.features(img, mask), z["deep"][row], rtol=1e-3, atol=1e-3)
    if clf.box_member is not None:
        from BreastCADxLib.analysis.box_classifier import get_member_scorer

        box = get_member_scorer(clf.box_member["model"], "cpu", "three-site").probability(img, mask)
        assert box == pytest.approx(float(z["box_three-site"][row]), abs=1e-3)


def test_the_segmenters_own_masks_go_to_the_bundle_the_card_names_for_them(tmp_path, monkeypatch):
    """A card may name a second bundle for automatic masks (`automatic_masks`); the pipeline classifies the
    segmenter's mask with it, a drawn or corrected outline with the card's own. The second bundle here is the
    shipped one with another intercept, so the answers must differ exactly as the bundles do."""
    from BreastCADxLib.analysis import pipeline
    from BreastCADxLib.analysis.cards import FusionCard
    from BreastCADxLib.analysis.classifier import DEFAULT_CLASSIFIER, bundle_for

    for f in MODELS_DIR.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    auto = "lesion_cls_fusion_auto"
    card = json.loads((MODELS_DIR / f"{DEFAULT_CLASSIFIER}.json").read_text())
    shutil.copy(MODELS_DIR / card["arrays"], tmp_path / f"{auto}.npz")
    other = {**card, "id": auto, "weights": f"{auto}.npz", "arrays": f"{auto}.npz",
             "files": {f"{auto}.npz": card["files"][card["arrays"]]}}
    other["members"] = [{**m, "estimator": {**m["estimator"], "intercept": m["estimator"]["intercept"] + 2.0}}
                        for m in card["members"]]
    save_card(tmp_path, FusionCard.from_json(other))  # as the training side writes cards: the manifest follows
    save_card(tmp_path, FusionCard.from_json({**card, "automatic_masks": auto}))
    main = load_classifier(DEFAULT_CLASSIFIER, tmp_path)
    assert [bundle_for(main.card, o) for o in ("auto", "edited", "user")] == [auto, DEFAULT_CLASSIFIER,
                                                                              DEFAULT_CLASSIFIER]
    monkeypatch.setattr(pipeline, "classifier_for",
                        lambda model_set, origin: load_classifier(bundle_for(main.card, origin), tmp_path))

    img = load_image(DATA / "busi" / "malignant_001.png")
    automatic = analyze(img, heatmap=False, device="cpu")
    assert automatic.lesion_found and automatic.provenance.classifier.id == auto
    for origin in ("edited", "user"):
        drawn = analyze(img, mask=automatic.mask, mask_origin=origin, heatmap=False, device="cpu")
        assert drawn.provenance.classifier.id == DEFAULT_CLASSIFIER
        assert drawn.prediction.member_probabilities["fusion"] < automatic.prediction.member_probabilities["fusion"]


def test_missing_radiomics_features_name_the_card_and_the_cause():
    clf = get_classifier()
    feats = {n: 0.0 for n in clf.radiomics_names[1:]}
    with pytest.raises(ModelError) as e:
        clf.predict(feats, np.zeros(1280), box_probability=0.5, whole_probability=0.5)
    text = str(e.value)
    assert "lesion_cls_fusion.json" in text and "1 radiomics features" in text and clf.radiomics_names[0] in text
    assert "pyradiomics" in text and "parameter file changed?" not in text
