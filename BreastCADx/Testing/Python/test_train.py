"""`breastcadx train`: a model set from located findings, in resumable stages, written in the model-set contract.

Plumbing on the committed cases (real images, their reference masks as the findings' locations); the
cross-validated figures on real data are in benchmarks/results/train_minimias.md (mini-MIAS, 119 findings)."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import numpy as np
import pytest

from BreastCADxLib.analysis.cards import card_schema
from BreastCADxLib.analysis.classifier import load_classifier
from BreastCADxLib.analysis.registry import load_card, model_set_info, verify_model_set
from conftest import MG_DATA, MODULE_DIR

DATA = MODULE_DIR / "Testing" / "Data"
MALIGNANT = ["busbra_l5/bus_0366-l", "busbra_l5/bus_0622-l", "busi/malignant_001"]
BENIGN = ["busbra_l5/bus_0368-l", "busbra_l5/bus_0421-l", "busbra_l5/bus_0698-s", "busi/benign_004",
          "busi/benign_031", "busi/benign_351"]


CITATION = {"busi": "Al-Dhabyani et al., Data in Brief 28:104863, 2020",
            "busbra_l5": "Gomez-Flores et al., Med Phys 2024"}


def manifest(tmp_path, n_malignant: int = 3) -> object:
    """Findings located by their reference masks, each case twice (the mask and its box), one patient per image."""
    rows = ["case_id,image,label,patient,mask,box,site,citation"]
    for label, names in (("malignant", MALIGNANT[:n_malignant]), ("benign", BENIGN)):
        for name in names:
            img, mask = DATA / f"{name}.png", DATA / f"{name}_mask.png"
            from PIL import Image

            ys, xs = np.nonzero(np.asarray(Image.open(mask).convert("L")) > 127)
            box = f'"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"'
            site, stem = name.split("/")
            tail = f'{site},"{CITATION[site]}"'
            rows += [f"{stem}_m,{img},{label},{stem},{mask},,{tail}", f"{stem}_b,{img},{label},{stem},,{box},{tail}"]
    rows.append(f'normal,{DATA / "busi" / "normal_003.png"},normal,n1,,,busi,"{CITATION["busi"]}"')
    path = tmp_path / "findings.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def run(*args):
    """`breastcadx train` without its segmenter (the box locates the finding) and image members unless asked: those
    stages have their own tests (test_train_segmenter.py, test_train_members.py)."""
    args = (*args, "--segmenter-epochs", "0") if "--segmenter-epochs" not in args else args
    args = (*args, "--members", "none") if "--members" not in args else args
    return subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", "train", *map(str, args)],
                          capture_output=True, text=True)


def test_train_writes_a_verified_set_the_product_loads_and_never_replaces_it(tmp_path):
    out = tmp_path / "my-set"
    r = run(manifest(tmp_path), "--modality", "US", "--out", out, "--folds", "2", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "stage 1/7" in r.stderr and "stage 7/7" in r.stderr and "segmenter: none" in r.stderr
    assert "image members: none" in r.stderr
    assert "pyradiomics_lr: AUC" in r.stderr
    verify_model_set(out)
    assert model_set_info(str(out))["modality"] == "US" and model_set_info(str(out))["sites"] == ["busbra_l5", "busi"]
    for card_id in ("lesion_cls_fusion", "image_guard"):  # every card names the data and cites it
        training = json.loads((out / f"{card_id}.json").read_text())["training"]
        assert training["data_citations"] == sorted(CITATION.values()) and training["sites"] == ["busbra_l5", "busi"]
    card = json.loads((out / "lesion_cls_fusion.json").read_text())
    jsonschema.validate(card, card_schema())
    assert card["training"]["findings"] == 18 and card["training"]["left_out"] == {"normal": 1, "no_location": 0}
    clf = load_classifier("lesion_cls_fusion", out)
    z = {k: np.load(p, allow_pickle=False) for k, p in ((p.stem, p) for p in (out / ".work").glob("*.npz"))}
    rad = np.array([z[k]["rad"] for k in sorted(z)])
    deep = np.array([z[k]["deep"] for k in sorted(z)], float)
    p = clf.raw_proba(rad, deep)[0]
    assert p.shape == (18,) and np.all((p > 0) & (p < 1))
    assert "Cross-validation by patient (2 folds" in (out / "card.md").read_text()
    again = run(manifest(tmp_path), "--modality", "US", "--out", out, "--folds", "2")
    assert again.returncode == 2 and "never replaced" in again.stderr


def test_train_stops_at_its_time_box_and_goes_on_from_there(tmp_path):
    out = tmp_path / "boxed"
    r = run(manifest(tmp_path), "--modality", "US", "--out", out, "--folds", "2", "--max-minutes", "0.0001",
            "--device", "cpu")
    assert r.returncode == 2 and "--max-minutes reached" in r.stderr and "run the same command again" in r.stderr
    cached = len(list((out / ".work").glob("*.npz")))
    assert cached < 18
    r = run(manifest(tmp_path), "--modality", "US", "--out", out, "--folds", "2", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("features: ") == 18 - cached  # the cached findings were not recomputed
    # each run, its time box and how it ended: in the log's first line, the journal and the card
    assert r.stderr.splitlines()[0].startswith("run 2 of this folder: started ")
    assert "no time box; before it: run 1 " in r.stderr.splitlines()[0]
    runs = json.loads((out / ".work" / "runs.json").read_text())
    assert [x["budget_minutes"] for x in runs] == [0.0001, None]
    assert "--max-minutes reached in the features stage" in runs[0]["outcome"] and runs[1]["outcome"] == "finished"
    assert "manifest" in runs[0]["stages"] and "features" not in runs[0]["stages"]
    assert list(runs[1]["stages"]) == ["manifest", "features", "cross-validation", "image members", "segmenter",
                                       "automatic outlines"]  # the card is written inside the last stage
    card = (out / "card.md").read_text()
    assert "Made over 2 runs of the command" in card and "time box 0.0001 min" in card
    assert json.loads((out / "lesion_cls_fusion.json").read_text())["training"]["runs"] == runs


def test_too_few_findings_are_refused_saying_how_few(tmp_path):
    r = run(manifest(tmp_path, n_malignant=1), "--modality", "US", "--out", tmp_path / "x")
    assert r.returncode == 2 and "2 malignant" in r.stderr and "at least 10 of each" in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bad", ["case_id,image\na,b.png\n", "case_id,image,label\na,b.png,cancer\n",
                                 'case_id,image,label,box\na,b.png,benign,"inf,0,10,10"\n',
                                 'case_id,image,label,circle\na,b.png,benign,"5,5,nan"\n'])
def test_a_bad_manifest_is_refused_naming_it(tmp_path, bad):
    path = tmp_path / "m.csv"
    path.write_text(bad)
    r = run(path, "--modality", "MG", "--out", tmp_path / "x")
    assert r.returncode == 2 and str(path) in r.stderr and "Traceback" not in r.stderr
    assert "internal error" not in r.stderr, r.stderr


MG = MG_DATA


def finding_box(case_id: str) -> tuple[str, str]:
    import csv

    row = next(r for r in csv.DictReader(open(MG / "findings.csv")) if r["case_id"] == case_id)
    cx, cy, rad = (float(v) for v in row["circle"].split(","))
    return str(MG / row["image"]), f"{cx - rad:.0f},{cy - rad:.0f},{cx + rad + 1:.0f},{cy + rad + 1:.0f}"


def analyze(*args):
    return subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", "analyze", *map(str, args)],
                          capture_output=True, text=True)


def test_a_mammography_set_analyses_a_film_from_the_users_box_with_the_same_contract(mg_set, tmp_path):
    """End to end on MG: the set's guard takes its modality, the box is the prompt (flagged), no ultrasound lexicon,
    the same result contract and overlay; ultrasound is refused by this set's guard, and a run without a box says
    what to do."""
    from BreastCADxLib.analysis.result import AnalysisResult

    image, box = finding_box("mdb001_1")
    r = analyze(image, "--model-set", mg_set, "--roi", box, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "a" / "result.json").read_text())
    AnalysisResult.from_json(res)
    jsonschema.validate(res, json.loads((MODULE_DIR / "Resources" / "Schemas" / "result.schema.json").read_text()))
    assert res["provenance"]["model_set"] == str(mg_set) and res["provenance"]["segmenter"] is None
    assert [f["code"] for f in res["flags"]][0] == "box_prompt_outline" and res["lexicon"] == []
    assert 0 < res["malignancy_probability"] < 1 and (tmp_path / "a" / "overlay.png").is_file()
    nobox = analyze(image, "--model-set", mg_set, "--out", tmp_path / "b")
    assert nobox.returncode == 2 and "has no segmenter" in nobox.stderr and "--roi" in nobox.stderr
    seg = subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", "segment", image, "--model-set", mg_set,
                          "--roi", box, "--out", tmp_path / "s.nrrd"], capture_output=True, text=True)
    assert seg.returncode == 2 and "has no segmenter" in seg.stderr and "analyze --roi" in seg.stderr, seg.stderr
    us = analyze(DATA / "busi" / "benign_004.png", "--model-set", mg_set, "--roi", "100,100,200,200",
                 "--out", tmp_path / "c")
    assert us.returncode == 2 and "does not look like the mammograms" in us.stderr, us.stderr


def test_a_mammogram_dicom_through_the_mammography_set_gives_a_valid_sr(mg_set, tmp_path):
    from PIL import Image

    import dicom_factory
    from BreastCADxLib.results.dicom_export import read_sr_summary
    from conftest import dciodvfy

    image, box = finding_box("mdb001_1")
    film = np.asarray(Image.open(image).convert("L")).astype(np.uint16) * 64
    dcm = dicom_factory.mammogram_for_processing(tmp_path / "mg.dcm", 16383 - film)  # MONOCHROME1
    r = analyze(dcm, "--model-set", mg_set, "--roi", box, "--out", tmp_path / "a", "--dicom-out", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    sr = next(p for p in (tmp_path / "d").iterdir() if "sr" in p.name.lower())
    summary = read_sr_summary(sr)
    assert abs(summary["probability"] - json.loads((tmp_path / "a" / "result.json").read_text())[
        "malignancy_probability"]) < 1e-6
    errors = dciodvfy(sr)[1]
    assert not errors, errors


def test_from_a_set_keeps_its_representation_and_moves_its_logistic_only_as_far_as_the_cases_ask(mg_set, tmp_path):
    """--from: the new set carries the source's scalers and deep projection, names its source, and its logistic
    fits the cases better than the source's while staying nearer the source's coefficients than a fit from zero;
    the cross-validation reports the source as it is and the fit from scratch on the same folds."""
    import shutil

    from BreastCADxLib.train.pipeline import _fusion_from, _Logistic, source_fusion

    out = tmp_path / "mg-local"
    out.mkdir()
    shutil.copytree(mg_set / ".work", out / ".work")  # the same findings: their features are not recomputed
    r = run(MG / "findings.csv", "--modality", "MG", "--out", out, "--folds", "2", "--from", mg_set,
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "features: " not in r.stderr and "source_as_is: AUC" in r.stderr and "fusion_from_scratch" in r.stderr
    card = json.loads((out / "lesion_cls_fusion.json").read_text())
    assert card["training"]["from_set"] == "mg-demo" and "--from" in card["training"]["command"]
    old = np.load(mg_set / "lesion_cls_fusion.npz")
    new = np.load(out / "lesion_cls_fusion.npz")
    for k in ("m_rad_mean", "m_rad_scale", "m_deep_pca_components"):
        assert np.array_equal(old[k], new[k]), k
    z = [np.load(p, allow_pickle=False) for p in sorted((out / ".work").glob("*.npz"))]
    rad, deep = np.array([a["rad"] for a in z]), np.array([a["deep"] for a in z], float)
    names = card["radiomics_names"]
    src = source_fusion(str(mg_set), "MG", names, deep.shape[1])
    y = np.arange(len(rad)) % 2  # labels the source never saw: the fit must move towards them
    moved = _fusion_from(src, rad, deep, y)
    x = np.hstack([(rad - src["rm"]) / src["rs"], src["pca"].transform((deep - src["dm"]) / src["ds"])])

    def loss(lr: _Logistic) -> float:
        p = lr.predict_proba(x)[:, 1].clip(1e-9, 1 - 1e-9)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    assert loss(moved["lr"]) < loss(src["lr"])
    free = _fusion_from({**src, "lr": _Logistic(np.zeros_like(src["lr"].coef_), np.zeros(1))}, rad, deep, y)
    w_src = src["lr"].coef_[0]
    assert np.linalg.norm(moved["lr"].coef_[0] - w_src) < np.linalg.norm(free["lr"].coef_[0] - w_src)


def test_from_refuses_a_set_of_another_modality_or_features_naming_it(mg_set, tmp_path):
    import shutil

    r = run(manifest(tmp_path), "--modality", "US", "--out", tmp_path / "x", "--folds", "2", "--from", mg_set,
            "--device", "cpu")
    assert r.returncode == 2 and "a MG set, this training is US" in r.stderr and str(mg_set) in r.stderr
    other = tmp_path / "relabelled"  # an MG set's features (no lexicon descriptors) declared as ultrasound
    shutil.copytree(mg_set, other, ignore=shutil.ignore_patterns(".work"))
    info = json.loads((other / "modelset.json").read_text())
    (other / "modelset.json").write_text(json.dumps({**info, "modality": "US"}))
    r = run(manifest(tmp_path), "--modality", "US", "--out", tmp_path / "y", "--folds", "2", "--from", other,
            "--device", "cpu")
    assert r.returncode == 2 and "other radiomics features" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "y" / "modelset.json").exists()


def test_from_the_shipped_set_adjusts_its_fusion_and_keeps_its_segmenter(tmp_path):
    """A hospital's own cases adjust the shipped ultrasound set: the same named features (pyradiomics + the
    lexicon descriptors, in another order), its scalers carried over feature by feature, its segmenter kept when
    none is trained, so the new set still finds the lesion itself; that segmenter outlines every finding (stage 6)."""
    from BreastCADxLib.analysis.registry import model_set_dir

    out = tmp_path / "local"
    r = run(manifest(tmp_path), "--modality", "US", "--out", out, "--folds", "2", "--from", "three-site",
            "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "the source set three-site's, unchanged" in r.stderr and "source_as_is: AUC" in r.stderr
    verify_model_set(out)
    src, new = load_card("lesion_cls_fusion", model_set_dir("three-site")), load_card("lesion_cls_fusion", out)
    assert sorted(src.radiomics_names) == sorted(new.radiomics_names) and new.training["from_set"] == "three-site"
    a, b = np.load(src.weights_path), np.load(new.weights_path)
    names = new.members[0]["branches"][0]["selected"]
    order = [src.members[0]["branches"][0]["selected"].index(n) for n in names]
    assert np.array_equal(a["m_rad_mean"][order], b["m_rad_mean"])
    assert np.array_equal(a["m_deep_mean"], b["m_deep_mean"])
    seg = load_card("lesion_seg_lite0", out)
    assert seg.sha256 == load_card("lesion_seg_lite0", model_set_dir("three-site")).sha256
    assert seg.training["carried_from_set"] == "three-site"
    # stage 6: every finding outlined by that segmenter (it never saw these images) and classified out of fold
    auto = json.loads((out / ".work" / "cv.json").read_text())["automatic_outlines"]
    assert auto["findings"] == 18 and auto["unclassifiable"] == 0 and auto["dice_mean"] > 0.7
    assert set(auto["models"]) == {"reference_fit", "both_fit"}
    assert "Automatic outlines" in (out / "card.md").read_text()
    main = load_card("lesion_cls_fusion", out)
    assert main.automatic_masks == ("lesion_cls_fusion_auto" if auto["kept"] else None)
    res = analyze(DATA / "busi" / "malignant_001.png", "--model-set", out, "--expect-lesion", "--out", tmp_path / "a")
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["provenance"]["mask_origin"] == "auto" and result["provenance"]["model_set"] == str(out)
    assert result["provenance"]["classifier"]["id"] == (main.automatic_masks or main.id)
    # ultrasound fusions are fitted on each finding's reference outline and that outline redrawn
    assert main.training["fitting_rows"] == 36 and main.training["design"]["redrawn_outlines"] is True
    if auto["kept"]:  # its own bundle: the automatic outlines' rows too
        assert load_card("lesion_cls_fusion_auto", out).training["fitting_rows"] == 54


def test_leave_one_site_out_scores_each_site_with_models_that_never_saw_it(tmp_path):
    """--folds site: one fold per site of the manifest's site column; card.md gives each held-out site's figures."""
    out = tmp_path / "by-site"
    r = run(manifest(tmp_path), "--modality", "US", "--out", out, "--folds", "site", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "cross-validation leaving one site out" in r.stderr
    cv = json.loads((out / ".work" / "cv.json").read_text())
    assert set(cv["by_site"]) == {"busbra_l5", "busi"} and cv["folds"] == "site"
    assert cv["by_site"]["busi"]["fusion"]["n"] == 8  # busi's own rows: 1 malignant + 3 benign, each twice
    text = (out / "card.md").read_text()
    assert "Leave-one-site-out" in text and "| fusion | " in text and "--folds site" in text
    # two sites: the guard also bounds the distance from its images' subspace, measured with a site held out;
    # noise lies beyond it (the Mahalanobis distance inside the subspace alone let it through)
    from BreastCADxLib.analysis.guard import ImageGuard
    from BreastCADxLib.io import load_image

    guard = ImageGuard(load_card("image_guard", out))
    assert "residual_max" in guard.params and "from that subspace" in guard.card.notes["model"]
    assert guard.score(load_image(DATA / "bad" / "noise.png")) == 0.0 < guard.threshold
    assert guard.score(load_image(DATA / "busi" / "benign_351.png")) >= guard.threshold  # not a training image
    from BreastCADxLib.train.pipeline import fold_splits

    sites = np.array(["a", "a", "b", "c", "b"])
    splits = fold_splits(np.zeros(5), np.arange(5), "site", sites=sites)
    assert [sorted(set(sites[te])) for _, te in splits] == [["a"], ["b"], ["c"]]
    assert all(not set(sites[tr]) & set(sites[te]) for tr, te in splits)


def test_leave_one_site_out_without_sites_is_refused_saying_what_it_needs(tmp_path):
    import csv

    path = tmp_path / "m.csv"
    with open(manifest(tmp_path), newline="") as f, open(path, "w", newline="") as g:
        w = csv.DictWriter(g, ["case_id", "image", "label", "patient", "mask", "box"], extrasaction="ignore")
        w.writeheader()
        w.writerows(csv.DictReader(f))  # without the site column
    r = run(path, "--modality", "US", "--out", tmp_path / "x", "--folds", "site")
    assert r.returncode == 2 and "needs a `site` column" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_a_redrawn_outline_is_another_hands_drawing_of_the_same_finding():
    """The outline the ultrasound fusions are also fitted on: near the reference (not on it), one filled region,
    the same for the same finding (a rerun reuses its features)."""
    from PIL import Image

    from BreastCADxLib.train.augment import redrawn

    ref = np.asarray(Image.open(DATA / "busi" / "benign_004_mask.png").convert("L")) > 127
    a, b = redrawn(ref, "benign_004"), redrawn(ref, "benign_004")
    assert np.array_equal(a, b) and not np.array_equal(a, redrawn(ref, "another"))
    dice = 2 * (a & ref).sum() / (a.sum() + ref.sum())
    assert 0.7 < dice < 0.99
    from scipy import ndimage

    assert ndimage.label(a)[1] == 1 and np.array_equal(ndimage.binary_fill_holes(a), a)

