"""The image-members stage of `breastcadx train` (train/members.py): members trained on the classifier's patient
folds and judged out of fold against the features alone, kept only where they pass the train gate (the
high-sensitivity band and the AUC: pipeline.no_worse), written in the
model-set contract and used by the product; training that resumes to the same weights; --from starting from a
set's members.

Small sizes on the committed cases (one epoch, two folds): whether members help is measured on real data in
benchmarks/results/ (train_minimias.md); an epoch on eighteen crops proves nothing about accuracy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from test_train import DATA, manifest

from BreastCADxLib.analysis.box_classifier import MemberScorer
from BreastCADxLib.analysis.cards import ImageCnnCard
from BreastCADxLib.analysis.registry import load_card, verify_model_set
from BreastCADxLib.image import Image
from BreastCADxLib.train import members as mem
from BreastCADxLib.train.pipeline import GATE_AUC_SLACK, TrainError, fold_splits, no_worse, read_manifest


def train(*args):
    return subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", "train", *map(str, args),
                           "--segmenter-epochs", "0", "--folds", "2", "--device", "cpu"],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def findings(tmp_path_factory):
    return read_manifest(manifest(tmp_path_factory.mktemp("m")))[0]


@pytest.fixture(scope="module")
def member_set(tmp_path_factory):
    """A set with both members (one epoch each) on the committed ultrasound findings, made as `breastcadx train`
    makes it. One epoch on eighteen crops ranks them at chance, which train holds at weight 0 (members.above_chance,
    tested on its own below): that rule is lifted here, so that the contract of a set with members is tested."""
    from BreastCADxLib.train.pipeline import train as make_set

    folder = tmp_path_factory.mktemp("mem")
    out, log = folder / "with-members", []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mem, "above_chance", lambda *a, **k: True)
        make_set(manifest(folder), "US", out, "cpu", folds=2, segmenter_epochs=0, member_epochs=1, say=log.append)
    return out, "\n".join(log)


def test_a_set_with_members_carries_them_in_the_contract_and_the_product_fuses_them(member_set, tmp_path):
    out, log = member_set
    assert "stage 4/7 image members (box, whole)" in log and "whole member fold 2/2: epoch 1/1" in log
    verify_model_set(out)
    fusion = load_card("lesion_cls_fusion", out)
    kept = "kept" in log.split("image members out of fold:")[1].splitlines()[0]
    cv = json.loads((out / ".work" / "cv.json").read_text())
    gate = cv["member_gate"]
    assert kept == gate["kept"] == gate_passes(gate)
    assert gate["candidate"]["auc"] == pytest.approx(cv["models"]["fusion_with_members"]["auc"])
    assert {"box_cnn", "whole_cnn", "fusion_with_members"} <= set(cv["models"])
    if not kept:
        assert fusion.box_member is None and not (out / "lesion_box_cnn.json").exists()
        pytest.skip("the members did not pass the gate on these findings: left out (as they should be)")
    w = gate["weights"]  # chosen out of fold among the grid; a view at 0 is left out of the bundle
    assert all(x in mem.WEIGHT_GRID[v] for v, x in w.items()) and "box" in w
    assert fusion.box_member == {"model": "lesion_box_cnn", "weight": w["box"]}
    assert fusion.image_member == ({"model": "lesion_whole_cnn", "weight": w["whole"]} if "whole" in w else None)
    for view in w:
        card = load_card(mem.VIEWS[view], out)
        assert isinstance(card, ImageCnnCard) and card.view == view and card.training["kept"]
    assert "| fusion_with_members |" in (out / "card.md").read_text()
    r = subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", "analyze", str(DATA / "busi/malignant_001.png"),
                        "--mask", str(DATA / "busi/malignant_001_mask.png"), "--model-set", str(out), "--out",
                        str(tmp_path / "a")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["provenance"]["box_model"]["sha256"] == load_card("lesion_box_cnn", out).sha256
    fused = {"box_cnn"} | ({"whole_image_cnn"} if "whole" in w else set())  # the drawn-outline bundle's own
    assert (result["provenance"]["whole_image_model"] or {}).get("id") == ("lesion_whole_cnn" if "whole" in w else None)
    assert fused <= set(result["member_probabilities"]) and ("whole" in w) == ("whole_image_cnn" in
                                                                                result["member_probabilities"])


def test_the_out_of_fold_score_is_the_products_score_of_the_written_member(findings, tmp_path):
    """What the stage records for a held-out finding is what the product's scorer gives with the set's weights."""
    images = mem.member_images(findings[:6])
    weights = mem.fit(images, tmp_path / "box", "box", epochs=1, device=torch.device("cpu"), deadline=float("inf"),
                      say=lambda m: None, label="test")
    p = mem.score("box", weights, images[:2], torch.device("cpu"))
    tmp_path.joinpath("set").mkdir()
    written = tmp_path / "set" / "lesion_box_cnn.pt"
    written.write_bytes(weights.read_bytes())
    from BreastCADxLib.analysis.registry import save_card

    save_card(tmp_path / "set", mem.card_for("box", written, "set", {"command": "test"}, "US"))
    product = MemberScorer.from_registry("lesion_box_cnn", "cpu", tmp_path / "set")
    q = [product.probability(Image(array=im.plane[None]), im.mask[None]) for im in images[:2]]
    assert np.allclose(p, q, atol=1e-5) and np.all((p > 0) & (p < 1))


def test_on_automatic_outlines_each_fold_member_scores_its_held_out_findings_from_their_outlines_box(member_set):
    """The automatic-outline stage's member scores: each held-out finding scored by its fold's box member (never one
    that trained on it) from the box of the outline given (here the reference grown by 8 px), as the product's
    scorer gives it; an empty outline gets no score; a rerun reads the cache."""
    from scipy import ndimage

    from BreastCADxLib.train.outlines import member_scores

    out, _ = member_set
    found = read_manifest(out.parent / "findings.csv")[0]
    y, groups = np.array([f.label for f in found]), np.array([f.patient for f in found])
    splits = fold_splits(y, groups, 2)
    images = mem.member_images(found)
    outlines = {str(f.image): ndimage.binary_dilation(im.mask, iterations=8) for f, im in zip(found, images)}
    empty = str(found[0].image)
    outlines[empty] = np.zeros_like(outlines[empty])
    got = member_scores(found, outlines, splits, out / ".work", "cpu")
    for k, (_, te) in enumerate(splits, 1):
        fold = out / ".work" / f"member_box_fold{k}"
        keep = [i for i in te if str(found[i].image) != empty]
        auto = [mem.MemberImage(images[i].key, images[i].plane, outlines[str(found[i].image)], images[i].label,
                                images[i].patient) for i in keep]
        assert np.allclose(got[keep], mem.score("box", fold / "model.pt", auto, torch.device("cpu")), atol=1e-5)
        assert (fold / "scored_auto.json").is_file()
    assert np.isnan(got[[i for i, f in enumerate(found) if str(f.image) == empty]]).all()
    assert not np.isnan(np.delete(got, [i for i, f in enumerate(found) if str(f.image) == empty])).any()
    assert np.array_equal(member_scores(found, outlines, splits, out / ".work", "cpu"), got, equal_nan=True)


def test_each_bundle_takes_the_members_only_when_they_did_not_lower_its_own_outlines_ranking(tmp_path):
    """With a segmenter (here the shipped set's, kept by --from), the members are judged twice out of fold: on the
    findings' own outlines for the set's fusion, on the segmenter's outlines for its bundle for automatic masks;
    each bundle names them only where they did not lower the AUC, and the product scores with what it names."""
    out = tmp_path / "from-members"
    r = train(manifest(tmp_path), "--modality", "US", "--out", out, "--from", "three-site", "--members", "box",
              "--member-epochs", "1")
    assert r.returncode == 0, r.stderr
    verify_model_set(out)
    cv = json.loads((out / ".work" / "cv.json").read_text())
    auto = cv["automatic_outlines"]
    chosen = "both_fit" if auto["kept"] else "reference_fit"
    assert auto["kept"] == gate_passes(auto["gate"])
    assert auto["members_kept"] == gate_passes(auto["members_gate"])
    assert auto["members_gate"]["base"]["auc"] == pytest.approx(auto["models"][chosen]["auc"])
    main = load_card("lesion_cls_fusion", out)
    assert (main.box_member is not None) == cv["member_gate"]["kept"] == gate_passes(cv["member_gate"])
    has_auto = (out / "lesion_cls_fusion_auto.json").is_file()
    same_members = auto["members_kept"] == (main.box_member is not None) and (
        not auto["members_kept"] or auto["member_weights"] == cv["member_gate"]["weights"])
    assert has_auto == (auto["kept"] or not same_members)
    assert main.automatic_masks == ("lesion_cls_fusion_auto" if has_auto else None)
    bundle = load_card("lesion_cls_fusion_auto", out) if has_auto else main
    assert (bundle.box_member is not None) == auto["members_kept"]
    if auto["members_kept"]:  # at the weights chosen on the segmenter's own outlines
        assert bundle.box_member["weight"] == auto["member_weights"]["box"]
    kept_any = main.box_member is not None or auto["members_kept"]
    assert (out / "lesion_box_cnn.json").is_file() == kept_any == (out / ".work" / "member_box_final").is_dir()
    if kept_any:
        assert load_card("lesion_box_cnn", out).training["kept_automatic"] == auto["members_kept"]


def test_a_member_run_cut_by_its_time_box_goes_on_to_the_same_weights(findings, tmp_path):
    images = mem.member_images(findings[:6])

    def fit(folder, **kw):
        return mem.fit(images, folder, "whole", epochs=2, device=torch.device("cpu"), say=lambda m: None,
                       label="test", **{"deadline": float("inf"), **kw})

    whole = torch.load(fit(tmp_path / "whole"), weights_only=True)
    with pytest.raises(TrainError, match="--max-minutes reached in the image-members stage .*epoch 1 of 2"):
        fit(tmp_path / "cut", deadline=0.0)
    resumed = torch.load(fit(tmp_path / "cut"), weights_only=True)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert json.loads((tmp_path / "cut" / "fit.json").read_text())["starts"] == 2


def test_a_finished_network_of_another_run_is_refused_not_reused(findings, tmp_path):
    """A fold's folder that holds a network trained on other images (an edited manifest, another fold plan) is
    never taken for this fold's: the user is told to remove it."""
    images = mem.member_images(findings[:6])
    kw = {"epochs": 1, "device": torch.device("cpu"), "deadline": float("inf"), "say": lambda m: None,
          "label": "test"}
    first = mem.fit(images[:4], tmp_path / "fold", "box", **kw)
    assert mem.fit(images[:4], tmp_path / "fold", "box", **kw) == first  # the same run: reused
    with pytest.raises(TrainError, match="of another run"):
        mem.fit(images, tmp_path / "fold", "box", **kw)


def gate_passes(gate: dict) -> bool:
    """The gate's rule, read again from the figures it recorded (members: some view ranked above chance)."""
    c, b = gate["candidate"], gate["base"]
    return (c["specificity_0.90_1.00"] >= b["specificity_0.90_1.00"] - 1e-12
            and c["auc"] >= b["auc"] - GATE_AUC_SLACK - 1e-12 and gate.get("offered", True) != [])


def _ranked(benign_n: int, malignant: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Benign scores evenly over [0, 1) and the given malignant scores."""
    return np.r_[np.zeros(benign_n), np.ones(len(malignant))], np.r_[np.arange(benign_n) / benign_n, malignant]


def test_the_gate_judges_the_biopsy_region_not_the_auc_alone():
    """One cancer scored below every benign lesion (a confident benign call) costs the base little AUC but the whole
    band above sensitivity 0.95; a candidate that ranks every cancer above 94.5 % of the benign lesions has 0.005 less
    AUC and passes; the reverse does not; nor does a candidate that pays more than the slack in AUC."""
    y, base = _ranked(200, [2.0] * 19 + [-1.0])  # AUC 0.95, specificity 1.0 up to sensitivity 0.95, then 0
    _, near = _ranked(200, [0.9425] * 20)  # above 189 of 200 benign: AUC 0.945, specificity 0.945 everywhere
    _, far = _ranked(200, [0.9] * 20)  # AUC 0.90
    assert roc_auc_score(y, base) == pytest.approx(0.95) and roc_auc_score(y, near) == pytest.approx(0.945)
    kept, g = no_worse(y, near, base)
    assert kept and g["candidate"]["specificity_0.90_1.00"] == pytest.approx(0.945)
    assert g["base"]["specificity_0.90_1.00"] == pytest.approx(51 / 101)
    assert not no_worse(y, base, near)[0]  # more AUC, but the band lost
    assert not no_worse(y, far, base)[0]  # the band won, but 0.05 of AUC paid


def _level(benign_n: int, below: int, malignant_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every cancer just above `below` of the benign lesions: AUC and specificity at any sensitivity below/n."""
    return _ranked(benign_n, [(below - 0.5) / benign_n] * malignant_n)


def test_leaving_sites_out_gains_at_two_sites_do_not_buy_a_lower_floor_at_the_third():
    """Sites a and b gain 0.10 of specificity in the band, site c, already among the weakest, loses 0.005 (its AUC
    too, within the slack): averaged over the sites the candidate wins; the gate takes each measure at the worst
    held-out site, so it does not pass."""
    (ya, base_a), (_, cand_a) = _level(200, 160, 40), _level(200, 180, 40)
    (yb, base_b), (_, cand_b) = _level(200, 160, 20), _level(200, 180, 20)
    (yc, base_c), (_, cand_c) = _level(200, 160, 20), _level(200, 159, 20)
    y = np.r_[ya, yb, yc]
    sites = ["a"] * len(ya) + ["b"] * len(yb) + ["c"] * len(yc)
    base, cand = np.r_[base_a, base_b, base_c], np.r_[cand_a, cand_b, cand_c]
    kept, g = no_worse(y, cand, base, sites)
    assert not kept
    assert g["candidate"]["specificity_0.90_1.00"] == pytest.approx(0.795)
    assert g["base"]["specificity_0.90_1.00"] == pytest.approx(0.80)
    assert g["candidate"]["auc"] == pytest.approx(0.795) and g["base"]["auc"] == pytest.approx(0.80)
    assert g["per_site_band"]["a"] == pytest.approx({"candidate": 0.90, "base": 0.80})
    mean = {k: np.mean([v[k] for v in g["per_site_band"].values()]) for k in ("candidate", "base")}
    assert mean["candidate"] > mean["base"]  # an average would have taken it


def test_leaving_sites_out_no_site_may_lose_beyond_noise_even_above_the_floor():
    """Site a is the floor and does not move; site b, well above it, loses 0.20 of band; site c gains 0.05. The
    worst site alone would keep the candidate (benchmarks/results/classifier_candidates.md: a member that cost
    BUS-UCLM significantly passed that way); with the patients given, b's paired bootstrap interval lies wholly below
    0 and the gate refuses it. A loss within noise (b's 200 benign and 40 cancers, 0.005 lost) is still let
    through."""
    (ya, base_a), (_, cand_a) = _level(200, 100, 40), _level(200, 100, 40)
    (yb, base_b), (_, cand_b) = _level(200, 190, 40), _level(200, 150, 40)
    (yc, base_c), (_, cand_c) = _level(200, 160, 40), _level(200, 170, 40)
    y = np.r_[ya, yb, yc]
    sites = np.array(["a"] * len(ya) + ["b"] * len(yb) + ["c"] * len(yc))
    patients = np.arange(len(y))
    base, cand = np.r_[base_a, base_b, base_c], np.r_[cand_a, cand_b, cand_c]
    assert no_worse(y, cand, base, sites)[0]
    kept, g = no_worse(y, cand, base, sites, patients)
    assert not kept
    assert g["per_site_band_gain_ci95"]["b"][1] < 0 <= g["per_site_band_gain_ci95"]["c"][0]
    _, small = _level(200, 189, 40)
    kept, g = no_worse(y, np.r_[cand_a, small, cand_c], base, sites, patients)
    assert kept and g["per_site_band_gain_ci95"]["b"][0] < 0 <= g["per_site_band_gain_ci95"]["b"][1]


@pytest.mark.parametrize("right", [True, False])
def test_members_are_kept_only_when_they_pass_the_gate(findings, tmp_path, monkeypatch, right):
    y = np.array([f.label for f in findings])
    groups = np.array([f.patient for f in findings])
    rng = np.random.default_rng(0)
    features = np.clip(0.5 + 0.3 * (y - 0.5) + 0.3 * rng.standard_normal(len(y)), 0.01, 0.99)  # an imperfect ranker
    members = (y if right else 1 - y) * 0.98 + 0.01  # perfectly right, or perfectly wrong
    monkeypatch.setattr(mem, "train_members", lambda *a, **k: {"box": members.copy()})
    monkeypatch.setattr(mem, "final_members", lambda *a, **k: {"box": tmp_path / "final.pt"})
    cv = {"models": {"fusion": {"auc": roc_auc_score(y, features)}},
          "oof": {"fusion": features.tolist()}}
    out = mem.members_stage(findings, y, groups, cv, ("box",), tmp_path, folds=2, epochs=1, device="cpu",
                            deadline=float("inf"), say=lambda m: None)
    assert out["training"]["kept"] is right and (out["weights"] is not None) is right
    assert (cv["models"]["fusion_with_members"]["auc"] > cv["models"]["fusion"]["auc"]) is right


def test_members_use_the_classifiers_folds():
    y = np.array([0, 1] * 10)
    groups = np.repeat(np.arange(10), 2)
    a, b = fold_splits(y, groups, 5), fold_splits(y, groups, 5)
    assert all(np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    for _, test in a:  # whole patients in each held-out fold
        assert set(groups[test]).isdisjoint(set(groups[np.setdiff1d(np.arange(20), test)]))


def test_a_training_crop_is_in_the_products_range_and_shows_the_image(findings):
    im = mem.member_images(findings[:1])[0]
    rng = np.random.default_rng(0)
    for view in mem.VIEWS:
        t = mem.train_view(im, view, rng)
        assert t.shape == (3, 224, 224) and t.min() >= -127 / 128 - 1e-6 and t.max() <= 1 + 1e-6
        assert t.std() > 0.05 and torch.equal(t[0], t[2])  # image content, grey in all three channels


def test_ultrasound_members_train_on_another_scanners_look_and_film_does_not(findings, tmp_path):
    """The scanner-imitating augmentation (train/augment.py) changes the training crop, keeps it in the product's
    range, is recorded in the run (a folder trained without it is not reused) and is off for mammography."""
    from BreastCADxLib.train.augment import ScannerAugment

    im = mem.member_images(findings[:1])[0]
    plain = mem.train_view(im, "box", np.random.default_rng(3))
    seen = mem.train_view(im, "box", np.random.default_rng(3), ScannerAugment(1.0, seed=0))
    assert seen.shape == plain.shape and not torch.equal(seen, plain)
    assert seen.min() >= -127 / 128 - 1e-6 and seen.max() <= 1 + 1e-6
    assert mem.SCANNER_AUG["US"] > 0 and mem.SCANNER_AUG["MG"] == 0
    images = mem.member_images(findings[:4])
    kw = {"epochs": 1, "device": torch.device("cpu"), "deadline": float("inf"), "say": lambda m: None,
          "label": "test"}
    mem.fit(images, tmp_path / "f", "box", **kw)
    with pytest.raises(TrainError, match="of another run"):
        mem.fit(images, tmp_path / "f", "box", scanner_aug=0.5, **kw)


@pytest.mark.parametrize("option", [("--members", "lesion"), ("--members", "box,box"), ("--member-epochs", "-1")])
def test_member_options_outside_their_range_are_refused_before_any_work(tmp_path, option):
    r = train(manifest(tmp_path), "--modality", "US", "--out", tmp_path / "x", *option)
    assert r.returncode == 2 and "--members takes box, whole" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_from_a_set_with_members_fine_tunes_them_and_reports_the_source_with_its_members(member_set, tmp_path):
    src, _ = member_set
    if load_card("lesion_cls_fusion", src).box_member is None:
        pytest.skip("the source set left its members out")
    import shutil

    out = tmp_path / "local"
    out.mkdir()
    shutil.copytree(src / ".work", out / ".work", ignore=shutil.ignore_patterns("member_*"))  # features kept
    r = train(manifest(tmp_path), "--modality", "US", "--out", out, "--member-epochs", "1", "--from", src)
    assert r.returncode == 0, r.stderr
    assert "source_as_is: AUC" in r.stderr
    fit = json.loads((out / ".work" / "member_box_fold1" / "fit.json").read_text())
    assert fit["init"] == str(load_card("lesion_box_cnn", src).weights_path)
    cv = json.loads((out / ".work" / "cv.json").read_text())
    assert cv["oof"]["fusion_with_members"] and "source_as_is" in cv["models"]


def test_the_help_states_the_members_defaults_as_the_code_has_them():
    from BreastCADxLib.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    text = " ".join(sub.format_help().split())
    assert f"(default {mem.EPOCHS})" in text and "box,whole (default)" in text


def test_each_bundle_takes_the_weights_that_do_best_at_the_worst_held_out_site():
    """choose_weights: an informative member is fused at the grid weights with the best worst-site band (among
    those the gate keeps; near-ties by the AUC); a member that is noise at one site is left out (the gate is per
    held-out site)."""
    from BreastCADxLib.train.pipeline import no_worse

    rng = np.random.default_rng(3)
    sites = np.repeat(["a", "b", "c"], 200)
    y = (rng.random(600) < 0.35).astype(int)
    logit_of = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731
    features = logit_of(1.2 * (2 * y - 1) + rng.normal(0, 1.5, 600))
    box = logit_of(1.5 * (2 * y - 1) + rng.normal(0, 1.2, 600))
    kept, w, gate, fused = mem.choose_weights(y, features, {"box": box}, sites)
    assert kept and set(w) == {"box"} and w["box"] in mem.WEIGHT_GRID["box"]
    bands = {x: no_worse(y, mem.fuse(features, {"box": box}, {"box": x}), features, sites)
             for x in mem.WEIGHT_GRID["box"]}
    top = max(g["candidate"]["specificity_0.90_1.00"] for o, g in bands.values() if o)
    ties = [x for x, (o, g) in bands.items() if o and g["candidate"]["specificity_0.90_1.00"] >= top - mem.BAND_TIE]
    best = max(ties, key=lambda x: bands[x][1]["candidate"]["auc"])
    assert w["box"] == best and gate == {**bands[best][1], "at_chance": [], "offered": ["box"]}
    np.testing.assert_allclose(fused, mem.fuse(features, {"box": box}, w))
    noise = np.where(sites == "c", rng.random(600), box)  # useless at one hospital
    kept, w, _, _ = mem.choose_weights(y, features, {"box": noise}, sites)
    assert not kept and w == {"box": mem.WEIGHTS["box"]}


def test_a_member_that_ranks_at_chance_is_held_at_zero():
    """A view whose own out-of-fold AUC CI reaches 0.5 never joins, even where the gate's band would let it (the
    mini-MIAS whole-film member: AUC 0.47); an informative view beside it still does. Patients bootstrap whole."""
    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.4).astype(int)
    groups = np.arange(300) // 2  # two findings per patient
    logit_of = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731
    features = logit_of(1.0 * (2 * y - 1) + rng.normal(0, 1.5, 300))
    box = logit_of(1.5 * (2 * y - 1) + rng.normal(0, 1.2, 300))
    whole = rng.random(300)
    assert mem.above_chance(y, box, groups=groups) and not mem.above_chance(y, whole, groups=groups)
    kept, w, gate, fused = mem.choose_weights(y, features, {"box": box, "whole": whole}, groups=groups)
    assert kept and set(w) == {"box"} and gate["at_chance"] == ["whole"]
    np.testing.assert_allclose(fused, mem.fuse(features, {"box": box}, w))
    kept, w, gate, _ = mem.choose_weights(y, features, {"whole": whole}, groups=groups)
    assert not kept and gate["at_chance"] == ["whole"] and gate["offered"] == [] and not gate_passes(gate)
    # per site: informative at two hospitals, chance at the third -> held at 0
    sites = np.repeat(["a", "b", "c"], 100)
    assert not mem.above_chance(y, np.where(sites == "c", whole, box), sites, groups)



def test_the_card_names_members_held_at_chance_on_either_bundle():
    """card.md says which views were held at 0 for ranking at chance: in the set's fusion and, apart, in the bundle
    for the segmenter's own masks (its own gate, on automatic outlines)."""
    from BreastCADxLib.train.outlines import automatic_text

    record = {"outlines": "lesion expected", "dice_mean": 0.7, "dice_below_0.1": 0.1, "unclassifiable": 0,
              "models": {}, "members": ["box", "whole"], "kept": True, "members_kept": True, "rule": "gate",
              "members_gate": {"at_chance": ["whole"], "offered": ["box"]}}
    text = automatic_text(record)
    assert "Out of fold on these outlines, whole alone ranked the findings no better than chance" in text
    record["members_gate"]["at_chance"] = []
    assert "no better than chance" not in automatic_text(record)
    assert mem.chance_text(["box", "whole"]) == (" Out of fold, box and whole alone ranked the findings no better "
                                                 "than chance (AUC CI reaching 0.5): held at 0.")

def test_site_balanced_sampling_weighs_every_site_the_same():
    """members.fit(balance=sites): a site with a third of the images is drawn as often as the others."""
    sites = ["busi"] * 60 + ["busbra_l5"] * 30 + ["busuclm"] * 10
    p = mem.site_balanced(sites)
    assert p.sum() == pytest.approx(1.0)
    for s in set(sites):
        assert p[np.array(sites) == s].sum() == pytest.approx(1 / 3)
    draws = np.random.default_rng(0).choice(len(sites), 30000, p=p)
    assert np.bincount(draws, minlength=100)[90:].sum() / 30000 == pytest.approx(1 / 3, abs=0.01)


def test_the_gate_refuses_more_confident_benign_calls_on_cancers_at_any_site():
    """Same ranking, same band and AUC everywhere, but eight cancers of eight patients at one hospital moved from
    10 % to 4 % (below 5 %: a confident benign call): refused once patients are known, as the site-balanced box
    member that doubled them at BUS-UCLM should have been; the mirror image (fewer such calls) passes."""
    rng = np.random.default_rng(7)
    sites = np.repeat(["a", "b", "c"], 100)
    y = np.tile(np.r_[np.zeros(60), np.ones(40)], 3).astype(int)
    base = np.where(y == 1, rng.uniform(0.5, 1.0, 300), rng.uniform(0.2, 0.9, 300))
    low = np.flatnonzero((sites == "c") & (y == 1))[:8]
    base[low] = 0.10  # below every benign lesion at c: the ranking does not see 10 % vs 4 %
    candidate = base.copy()
    candidate[low] = 0.04
    groups = np.arange(300)
    kept, gate = no_worse(y, candidate, base, sites)
    assert kept and gate["candidate"] == gate["base"]  # without patients: the band and AUC cannot tell
    kept, gate = no_worse(y, candidate, base, sites, groups)
    assert not kept and gate["confident_benign_rise_ci95"]["c"][0] > 0
    assert gate["confident_benign_rise_ci95"]["a"] == [0.0, 0.0]
    kept, gate = no_worse(y, base, candidate, sites, groups)
    assert kept and gate["confident_benign_rise_ci95"]["c"][1] < 0
    kept, gate = no_worse(y, candidate, base, None, groups)  # patient folds: over all findings
    assert not kept and set(gate["confident_benign_rise_ci95"]) == {"all"}
