"""`breastcadx batch` contract (columns, error rows, resume) and `analyze` / `demo` from the command line."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys

import pytest
import SimpleITK as sitk

from batch_columns import EXPECTED_COLUMNS
from conftest import MG_DATA, MODULE_DIR

DATA = MODULE_DIR / "Testing" / "Data" / "busi"


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_batch_contract_errors_and_resume(tmp_path, sample_dicom, sample_mask):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(sample_dicom, cases / "s.dcm")
    shutil.copy(sample_mask, cases / "s_mask.nrrd")
    shutil.copy(DATA / "benign_004.png", cases / "b.png")
    shutil.copy(DATA / "normal_003.png", cases / "n.png")
    (cases / "broken.dcm").write_bytes(sample_dicom.read_bytes()[:3000])
    manifest = cases / "manifest.csv"
    manifest.write_text("case_id,image,mask\nsample,s.dcm,s_mask.nrrd\nbenign,b.png,\nnormal,n.png,\n"
                        "broken,broken.dcm,\n")
    out = tmp_path / "out"
    r = _cli("batch", manifest, "--out", out, "--heatmap")
    assert r.returncode == 1 and "4 cases, 1 errors" in r.stdout, r.stderr  # finished, one case failed
    with open(out / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == EXPECTED_COLUMNS
        rows = {row["case_id"]: row for row in reader}
    assert rows["broken"]["status"] == "error" and "broken.dcm" in rows["broken"]["error"]
    assert rows["broken"]["malignancy_probability"] == ""
    s = rows["sample"]
    assert s["status"] == "ok" and s["lesion_found"] == "true" and s["predicted_label"] != "benign"
    assert 0.5 <= float(s["malignancy_probability"]) <= 1.0 and s["birads_suggestion"] in ("4C", "5")
    for row, size in ((rows["sample"], (557, 457)), (rows["benign"], (555, 465))):
        if row["lesion_found"] == "true":  # the mask used, on the input grid, readable by SimpleITK
            assert sitk.ReadImage(str(out / row["mask_path"])).GetSize()[:2] == size
            assert sitk.ReadImage(str(out / row["heatmap_path"])).GetSize()[:2] == size
    n = rows["normal"]
    assert n["status"] == "ok"
    if n["lesion_found"] == "false":
        assert n["predicted_label"] == "normal" and n["malignancy_probability"] == ""
    detail = json.loads((out / "sample" / "result.json").read_text())
    assert detail["provenance"]["classifier"]["sha256"] and detail["radiomics"] and "flags" in detail
    assert detail["provenance"]["mask_origin"] == "user" and detail["provenance"]["segmenter"] is None

    stamp = (out / "sample" / "result.json").stat().st_mtime_ns
    r = _cli("batch", manifest, "--out", out, "--heatmap")
    assert r.returncode == 1, r.stderr
    assert (out / "sample" / "result.json").stat().st_mtime_ns == stamp  # resumed, not recomputed
    with open(out / "results.csv", newline="") as f:
        again = {row["case_id"]: row for row in csv.DictReader(f)}
    assert again["sample"]["malignancy_probability"] == s["malignancy_probability"]
    assert again["broken"]["status"] == "error"


def test_batch_bad_manifest(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("id,path\n1,x.png\n")
    r = _cli("batch", bad, "--out", tmp_path / "o")
    assert r.returncode == 2 and "case_id,image" in r.stderr and "Traceback" not in r.stderr


def test_analyze_with_mask_and_demo(tmp_path, sample_dicom, sample_mask):
    r = _cli("analyze", sample_dicom, "--mask", sample_mask, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    assert "Malignancy probability" in r.stdout and "BI-RADS-style suggestion" in r.stdout
    assert (tmp_path / "a" / "overlay.png").exists()
    r = _cli("demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("overlay.png", "result.json", "mask.nrrd"):
        assert (tmp_path / "breastcadx-demo" / name).exists()


def test_analyze_expect_lesion_classifies_a_flagged_candidate(tmp_path):
    image = DATA / "benign_351.png"  # the default segmentation finds nothing here (peak below presence)
    r = _cli("analyze", image, "--out", tmp_path / "plain")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "plain" / "result.json").read_text())["lesion_found"] is False
    assert "analyse it with a lesion expected, a box around it or its outline" in r.stdout  # what to do next
    r = _cli("analyze", image, "--out", tmp_path / "expect", "--expect-lesion")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "expect" / "result.json").read_text())
    assert result["lesion_found"] and result["provenance"]["mask_origin"] == "auto"
    assert result["flags"][0]["code"] == "low_confidence_segmentation"
    assert result["flags"][0]["text"].startswith("low-confidence segmentation")
    assert "FLAG low-confidence segmentation" in r.stdout
    assert result["malignancy_probability"] < 0.5  # a benign lesion


def test_batch_expect_lesion_redoes_cases_run_with_the_other_setting(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(DATA / "benign_351.png", cases / "b.png")  # missed by the default, found when expected
    manifest = cases / "manifest.csv"
    manifest.write_text("case_id,image\nb351,b.png\n")
    out = tmp_path / "out"
    r = _cli("batch", manifest, "--out", out, "--expect-lesion", "--heatmap")
    assert r.returncode == 0, r.stderr
    with open(out / "results.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["status"] == "ok" and row["lesion_found"] == "true" and float(row["malignancy_probability"]) < 0.5
    # an uncertain automatic outline gets no category: BI-RADS 0 (incomplete), asking for a box
    assert row["birads_suggestion"] == "0" and row["predicted_label"] == "incomplete"
    result = json.loads((out / "b351" / "result.json").read_text())
    assert result["flags"][0]["code"] == "low_confidence_segmentation" and result["batch"]["expect_lesion"]
    assert "draw a box" in result["birads_note"]
    assert (out / "b351" / "heatmap.nrrd").exists()
    r = _cli("batch", manifest, "--out", out)  # other settings: recomputed, not resumed
    assert r.returncode == 0, r.stderr
    with open(out / "results.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["lesion_found"] == "false" and row["heatmap_path"] == ""
    assert not (out / "b351" / "heatmap.nrrd").exists()  # no stale heatmap from the first run
    # the default path says how many it called lesion-free and what to do if they show one; told, it does not
    assert "1 of 1 analysed cases were called lesion-free" in r.stdout and "--expect-lesion" in r.stdout
    r = _cli("batch", manifest, "--out", out, "--expect-lesion")
    assert r.returncode == 0 and "lesion-free" not in r.stdout


@pytest.mark.parametrize("text,cause", [
    ("case_id,image\nresults.csv,x.png\n", "line 2: case_id 'results.csv'"),
    ("case_id,image\n" + "a" * 300 + ",x.png\n", "line 2: case_id"),
    ("case_id,image\n../up,x.png\n", "line 2: case_id '../up'"),
    ("case_id,image,mask\nc1,x.png\n", "line 2: the row has fewer cells"),
    ("case_id,image\nc1,x.png,extra\n", "line 2: the row has more cells"),
    ("case_id,image\nc1,\n", "line 2: the image cell is empty"),
    ('case_id,image,roi\nc1,x.png,"10,20,x,40"\n', "line 2: ROI must be 'x0,y0,x1,y1' in pixels"),
    ('case_id,image,roi\nc1,x.png,"inf,20,30,40"\n', "line 2: ROI must be 'x0,y0,x1,y1' in pixels"),
    ('case_id,image,mask,roi\nc1,x.png,m.png,"10,20,30,40"\n', "line 2: give the finding's mask or a roi box"),
])
def test_bad_manifest_rows_are_named(tmp_path, text, cause):
    from BreastCADxLib.cli.batch import read_manifest
    from BreastCADxLib.errors import BreastCADxError

    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(BreastCADxError, match=re.escape(cause)) as e:
        read_manifest(m)
    assert str(m) in str(e.value)


def test_blank_roi_and_birads_cells_are_empty_ones(tmp_path):
    """Spaces (a non-breaking one too) in an optional cell mean no box and no category, not a malformed one."""
    from BreastCADxLib.cli.batch import read_manifest

    m = tmp_path / "m.csv"
    m.write_text('case_id,image,roi,birads\nc1,x.png,"  ", \u00a0\nc2,x.png," 1, 2 ,30,40 ", 4a \n', encoding="utf-8")
    rows = read_manifest(m)
    assert [(r["roi"], r["birads"]) for r in rows] == [("", ""), ("1,2,30,40", "4A")]


def test_manifest_with_utf8_bom_is_read(tmp_path):
    from BreastCADxLib.cli.batch import read_manifest

    m = tmp_path / "m.csv"
    m.write_bytes("\ufeffcase_id,image\nc1,x.png\n".encode())
    assert read_manifest(m)[0]["case_id"] == "c1"


def test_analyze_never_overwrites_an_earlier_result_silently(tmp_path, sample_dicom, sample_mask):
    out = tmp_path / "case"
    assert _cli("analyze", sample_dicom, "--mask", sample_mask, "--out", out).returncode == 0
    first = (out / "result.json").read_bytes()
    r = _cli("analyze", sample_dicom, "--out", out)
    assert r.returncode == 2 and "earlier result" in r.stderr and str(out) in r.stderr and "--overwrite" in r.stderr
    assert (out / "result.json").read_bytes() == first
    assert _cli("analyze", sample_dicom, "--mask", sample_mask, "--out", out, "--overwrite").returncode == 0
    afile = tmp_path / "a-file"
    afile.write_text("mine")
    r = _cli("analyze", sample_dicom, "--out", afile)
    assert r.returncode == 2 and "must be a folder" in r.stderr and afile.read_text() == "mine"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_killed_batch_keeps_whole_rows_and_resumes_without_loss_or_duplicates(tmp_path):
    """SIGKILL midway: results.csv holds whole rows of the cases done; the rerun finishes the rest and redoes none."""
    import signal
    import time

    cases = tmp_path / "cases"
    cases.mkdir()
    names = ("benign_004", "benign_031", "malignant_001")
    for n in names:
        shutil.copy(DATA / f"{n}.png", cases / f"{n}.png")
        shutil.copy(DATA / f"{n}_mask.png", cases / f"{n}_mask.png")
    ids = [f"c{i:02d}" for i in range(8)]
    (cases / "m.csv").write_text("case_id,image,mask\n" + "".join(
        f"{c},{names[i % 3]}.png,{names[i % 3]}_mask.png\n" for i, c in enumerate(ids)))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "BreastCADxLib.cli.main", "batch", str(cases / "m.csv"),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not (out / "results.csv").exists() or len(_rows(out / "results.csv")) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _rows(out / "results.csv")
    assert 3 <= len(partial) < len(ids) and all(r["status"] == "ok" for r in partial)  # whole rows only
    done = {r["case_id"]: (out / r["case_id"] / "result.json").stat().st_mtime_ns for r in partial}
    r = _cli("batch", cases / "m.csv", "--out", out)
    assert r.returncode == 0, r.stderr
    final = _rows(out / "results.csv")
    assert [x["case_id"] for x in final] == ids and all(x["status"] == "ok" for x in final)  # none lost, none twice
    assert {c: (out / c / "result.json").stat().st_mtime_ns for c in done} == done  # finished cases not redone
    for a in partial:
        assert next(x for x in final if x["case_id"] == a["case_id"])["malignancy_probability"] \
            == a["malignancy_probability"]


def test_changed_input_is_recomputed_not_reused(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(DATA / "malignant_001.png", cases / "img.png")
    shutil.copy(DATA / "malignant_001_mask.png", cases / "mask.png")
    (cases / "m.csv").write_text("case_id,image,mask\nx,img.png,mask.png\n")
    assert _cli("batch", cases / "m.csv", "--out", tmp_path / "o").returncode == 0
    first = _rows(tmp_path / "o" / "results.csv")[0]
    shutil.copy(DATA / "benign_004.png", cases / "img.png")  # same path, other image and mask
    shutil.copy(DATA / "benign_004_mask.png", cases / "mask.png")
    assert _cli("batch", cases / "m.csv", "--out", tmp_path / "o").returncode == 0
    second = _rows(tmp_path / "o" / "results.csv")[0]
    assert second["malignancy_probability"] != first["malignancy_probability"]
    result = json.loads((tmp_path / "o" / "x" / "result.json").read_text())
    assert result["source"].endswith("img.png") and result["measurements"]["lesion_pixels"] > 0


def test_a_roi_column_is_each_cases_box_as_analyze_roi_takes_it(tmp_path, mg_set):
    """A manifest's roi: the shipped set segments inside it, a set without a segmenter takes it as the finding;
    each case's result is the one `analyze --roi` gives, and a changed box is recomputed, not reused."""
    film = MG_DATA / "films" / "mdb001_256.png"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f'case_id,image,roi\nus,{DATA / "benign_004.png"},"150,80,400,300"\nfilm,{film},'
                        '"85,100,183,199"\nnobox,' + f"{film},\n")
    r = _cli("batch", manifest, "--out", tmp_path / "mg", "--model-set", mg_set)
    assert r.returncode == 1, r.stderr
    with open(tmp_path / "mg" / "results.csv", newline="") as f:
        rows = {row["case_id"]: row for row in csv.DictReader(f)}
    assert rows["film"]["status"] == "ok" and rows["film"]["flags"].startswith("box_prompt_outline")
    assert "has no segmenter" in rows["nobox"]["error"] and "roi column" in rows["nobox"]["error"]
    assert rows["us"]["status"] == "error" and "does not look like the mammograms" in rows["us"]["error"]
    one = _cli("analyze", film, "--model-set", mg_set, "--roi", "85,100,183,199", "--out", tmp_path / "a")
    assert one.returncode == 0, one.stderr
    assert float(rows["film"]["malignancy_probability"]) == pytest.approx(
        json.loads((tmp_path / "a" / "result.json").read_text())["malignancy_probability"], abs=1e-6)

    manifest.write_text(f'case_id,image,roi\nus,{DATA / "benign_004.png"},"150,80,400,300"\n')
    assert _cli("batch", manifest, "--out", tmp_path / "us").returncode == 0
    us = json.loads((tmp_path / "us" / "us" / "result.json").read_text())
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "us" / "us" / "mask.nrrd"))).squeeze()
    ys, xs = mask.nonzero()
    assert us["batch"]["roi"] == "150,80,400,300" and xs.min() >= 150 and xs.max() < 400 and ys.min() >= 80
    assert ys.max() < 300  # segmented inside the box
    manifest.write_text(f'case_id,image,roi\nus,{DATA / "benign_004.png"},"100,60,450,320"\n')
    r = _cli("batch", manifest, "--out", tmp_path / "us")
    assert "1/1 computed" in r.stdout + r.stderr, r.stdout  # the new box is a new case
