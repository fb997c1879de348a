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
from BreastCADxLib.analysis.registry import model_set_info, verify_model_set
from conftest import MODULE_DIR

DATA = MODULE_DIR / "Testing" / "Data"
MALIGNANT = ["busbra_l5/bus_0366-l", "busbra_l5/bus_0622-l", "busi/malignant_001"]
BENIGN = ["busbra_l5/bus_0368-l", "busbra_l5/bus_0421-l", "busbra_l5/bus_0698-s", "busi/benign_004",
          "busi/benign_031", "busi/benign_351"]


def manifest(tmp_path, n_malignant: int = 3) -> object:
    """Findings located by their reference masks, each case twice (the mask and its box), one patient per image."""
    rows = ["case_id,image,label,patient,mask,box"]
    for label, names in (("malignant", MALIGNANT[:n_malignant]), ("benign", BENIGN)):
        for name in names:
            img, mask = DATA / f"{name}.png", DATA / f"{name}_mask.png"
            from PIL import Image

            ys, xs = np.nonzero(np.asarray(Image.open(mask).convert("L")) > 127)
            box = f'"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"'
            stem = name.split("/")[1]
            rows += [f"{stem}_m,{img},{label},{stem},{mask},", f"{stem}_b,{img},{label},{stem},,{box}"]
    rows.append(f"normal,{DATA / 'busi' / 'normal_003.png'},normal,n1,,")
    path = tmp_path / "findings.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def run(*args):
    return subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", "train", *map(str, args)],
                          capture_output=True, text=True)


def test_train_writes_a_verified_set_the_product_loads_and_never_replaces_it(tmp_path):
    out = tmp_path / "my-set"
    r = run(manifest(tmp_path), "--modality", "US", "--out", out, "--folds", "2", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "stage 1/4" in r.stderr and "stage 4/4" in r.stderr and "pyradiomics_lr: AUC" in r.stderr
    verify_model_set(out)
    assert model_set_info(str(out))["modality"] == "US"
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


def test_too_few_findings_are_refused_saying_how_few(tmp_path):
    r = run(manifest(tmp_path, n_malignant=1), "--modality", "US", "--out", tmp_path / "x")
    assert r.returncode == 2 and "2 malignant" in r.stderr and "at least 10 of each" in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bad", ["case_id,image\na,b.png\n", "case_id,image,label\na,b.png,cancer\n"])
def test_a_bad_manifest_is_refused_naming_it(tmp_path, bad):
    path = tmp_path / "m.csv"
    path.write_text(bad)
    r = run(path, "--modality", "MG", "--out", tmp_path / "x")
    assert r.returncode == 2 and str(path) in r.stderr and "Traceback" not in r.stderr
