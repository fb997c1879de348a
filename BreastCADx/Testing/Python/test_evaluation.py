"""`breastcadx evaluate`: a finished batch scored against biopsy results (a site's own check of the models)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.results.evaluation import evaluate, read_labels
from conftest import MODULE_DIR

DATA = MODULE_DIR / "Testing" / "Data"
HEADER = "case_id,status,error,error_code,lesion_found,malignancy_probability,predicted_label,birads_suggestion," \
         "mask_path,heatmap_path,seconds,flags\n"


def _write(path, text):
    path.write_text(text)
    return path


def test_every_case_counts_and_the_numbers_are_the_definitions(tmp_path):
    results = _write(tmp_path / "results.csv", HEADER + "\n".join([
        "a,ok,,,true,0.900000,x,4C,a/mask.nrrd,,0.1,members_disagree;out_of_distribution",
        "b,ok,,,true,0.010000,x,3,b/mask.nrrd,,0.1,",
        "c,ok,,,true,0.300000,x,4B,c/mask.nrrd,,0.1,input_unvalidated",
        "d,error,/x/d.png: lesion mask has 3 pixels; at least 20 are needed,mask_unusable,,,,,,,0.1,",
        "e,ok,,,false,,,,e/mask.nrrd,,0.1,",
        "f,ok,,,true,0.600000,x,4C,f/mask.nrrd,,0.1,",
        "z,ok,,,true,0.500000,x,4B,z/mask.nrrd,,0.1,"]) + "\n")
    labels = _write(tmp_path / "labels.csv", "case_id,label,group\na,malignant,p1\nb,benign,p1\nc,benign,p2\n"
                                             "d,malignant,p3\ne,benign,p4\nf,1,p5\nq,0,p6\n")
    r = evaluate(results, labels, n_boot=200)
    y = np.array([1, 0, 0, 1, 0, 1])
    p = np.array([0.9, 0.01, 0.3, 0.5, 0.5, 0.6])  # d (error) and e (no lesion) count as 0.5
    assert r["cases"] == 6 and r["classified"] == 4 and r["malignant"] == 3
    assert r["auc_all"]["auc"] == pytest.approx(roc_auc_score(y, p))
    assert r["auc_classified"]["auc"] == pytest.approx(roc_auc_score(y[[0, 1, 2, 5]], p[[0, 1, 2, 5]]))
    lo, hi = r["auc_all"]["ci95"]
    assert 0 <= lo <= hi <= 1
    # 4A or above (> 2 %): a, c, f of the classified; d and e are not classified (negative)
    assert r["suggestion_4a_or_above"] == {"sensitivity": pytest.approx(2 / 3), "specificity": pytest.approx(2 / 3)}
    assert r["probability_0_5"] == {"sensitivity": pytest.approx(2 / 3), "specificity": 1.0}
    assert r["not_classified"] == {"mask_unusable": 1, "no_lesion_found": 1}
    assert r["flags"] == {"members_disagree": 1, "out_of_distribution": 1, "input_unvalidated": 1}
    assert r["results_without_label"] == 1 and r["labels_without_result"] == 1  # z, q


@pytest.mark.parametrize("text,cause", [
    ("case_id,label\na,maybe\n", "line 2: label 'maybe' must be benign or malignant"),
    ("case_id,label\na,benign\na,malignant\n", "line 3: case_id 'a' appears twice"),
    ("case_id,pathology\na,benign\n", "needs the columns case_id,label"),
])
def test_bad_label_files_are_named_with_the_cause(tmp_path, text, cause):
    path = _write(tmp_path / "labels.csv", text)
    with pytest.raises(BreastCADxError, match=cause) as err:
        read_labels(path)
    assert str(path) in str(err.value)


def test_one_class_only_is_refused(tmp_path):
    results = _write(tmp_path / "results.csv", HEADER + "a,ok,,true,0.9,x,4C,,,0.1,\nb,ok,,true,0.1,x,4A,,,0.1,\n")
    labels = _write(tmp_path / "labels.csv", "case_id,label\na,benign\nb,benign\n")
    with pytest.raises(BreastCADxError, match="at least one benign and one malignant"):
        evaluate(results, labels)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_batch_then_evaluate_from_the_command_line(tmp_path):
    """Real cases of both hospitals through `breastcadx batch`, then `evaluate`: its AUC is the AUC of the batch's
    own probabilities, the report files are written once and never replaced."""
    cases = {"benign_004": ("busi", "benign"), "benign_031": ("busi", "benign"), "malignant_001": ("busi", "malignant"),
             "bus_0366-l": ("busbra_l5", "malignant"), "bus_0368-l": ("busbra_l5", "benign")}
    (tmp_path / "cases").mkdir()
    for case, (site, _) in cases.items():
        shutil.copy(DATA / site / f"{case}.png", tmp_path / "cases" / f"{case}.png")
    manifest = _write(tmp_path / "cases" / "manifest.csv",
                      "case_id,image\n" + "".join(f"{c},{c}.png\n" for c in cases))
    labels = _write(tmp_path / "labels.csv", "case_id,label\n" + "".join(f"{c},{v[1]}\n" for c, v in cases.items()))
    r = _cli("batch", manifest, "--out", tmp_path / "out", "--expect-lesion")
    assert r.returncode == 0, r.stderr
    report_md = tmp_path / "site" / "report.md"
    r = _cli("evaluate", tmp_path / "out" / "results.csv", "--labels", labels, "--out", report_md)
    assert r.returncode == 0, r.stderr
    assert "AUC, every case" in r.stdout and report_md.read_text().startswith("# BreastCADx at this site")
    report = json.loads(report_md.with_suffix(".json").read_text())
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    y = [int(cases[row["case_id"]][1] == "malignant") for row in rows]
    assert report["classified"] == 5 and report["auc_all"]["auc"] == pytest.approx(
        roc_auc_score(y, [float(row["malignancy_probability"]) for row in rows]))
    before = report_md.read_text()
    r = _cli("evaluate", tmp_path / "out" / "results.csv", "--labels", labels, "--out", report_md)
    assert r.returncode == 2 and "output exists" in r.stderr and report_md.read_text() == before


def test_an_incomplete_suggestion_counts_as_referred_not_as_benign(tmp_path):
    """BI-RADS 0 (an uncertain automatic outline) sends the case on for review: at the suggestion's operating point
    it is a positive, whatever the probability on the doubtful outline."""
    results = _write(tmp_path / "results.csv", HEADER + "\n".join([
        "m1,ok,,,true,0.010000,incomplete,0,m1/mask.nrrd,,0.1,low_confidence_segmentation",
        "m2,ok,,,true,0.900000,suspicious,4C,m2/mask.nrrd,,0.1,",
        "b1,ok,,,true,0.005000,benign,3,b1/mask.nrrd,,0.1,",
        "b2,ok,,,true,0.010000,incomplete,0,b2/mask.nrrd,,0.1,low_confidence_segmentation"]) + "\n")
    labels = _write(tmp_path / "labels.csv", "case_id,label\nm1,malignant\nm2,malignant\nb1,benign\nb2,benign\n")
    r = evaluate(results, labels, n_boot=50)
    assert r["suggestion_4a_or_above"] == {"sensitivity": 1.0, "specificity": 0.5}
