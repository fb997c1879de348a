"""Outputs never replace a user's files, never follow links planted in the output folder, and an unwritable
--out is said before any analysis (exit 2, the folder named, no traceback)."""

from __future__ import annotations

import csv
import os
import shutil

import pytest

from BreastCADxLib.cli.main import main
from conftest import MODULE_DIR

DATA = MODULE_DIR / "Testing" / "Data" / "busi"


@pytest.fixture()
def manifest(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(DATA / "benign_004.png", cases / "b.png")
    path = cases / "manifest.csv"
    path.write_text("case_id,image\nbenign,b.png\n")
    return path


def test_batch_refuses_an_out_holding_the_users_files_unless_overwrite(tmp_path, manifest, capsys):
    out = tmp_path / "out"
    (out / "benign").mkdir(parents=True)
    (out / "benign" / "notes.txt").write_text("the user's notes")
    (out / "results.csv").write_text("patient,finding\n1,mass\n")
    assert main(["batch", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "did not make" in err and "--overwrite" in err and str(out) in err and "Traceback" not in err
    assert (out / "results.csv").read_text() == "patient,finding\n1,mass\n"  # nothing replaced
    assert main(["batch", str(manifest), "--out", str(out), "--overwrite"]) == 0
    assert (out / "benign" / "notes.txt").read_text() == "the user's notes"  # a file it does not write is kept
    with open(out / "results.csv", newline="") as f:
        assert next(csv.DictReader(f))["case_id"] == "benign"
    assert main(["batch", str(manifest), "--out", str(out)]) == 0  # its own folder now: a rerun resumes


def test_batch_resumes_in_a_batch_folder_made_before_the_marker(tmp_path, manifest):
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "--out", str(out)]) == 0
    (out / ".breastcadx-batch").unlink()  # as an earlier version left it: results.csv + case folders only
    assert main(["batch", str(manifest), "--out", str(out)]) == 0


def test_a_case_id_named_like_the_tables_old_temporary_file_is_just_a_case(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(DATA / "benign_004.png", cases / "b.png")
    (cases / "m.csv").write_text("case_id,image\nresults.csv.tmp,b.png\n")
    out = tmp_path / "out"
    for _ in range(2):  # the second run resumes in the same folder
        assert main(["batch", str(cases / "m.csv"), "--out", str(out)]) == 0
    assert (out / "results.csv.tmp" / "result.json").is_file()


@pytest.mark.parametrize("planted", ["mask.nrrd", "overlay.png", "result.json"])
def test_analyze_never_writes_through_a_planted_link(tmp_path, planted, capsys):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / planted).symlink_to(elsewhere / planted)  # broken: its target does not exist
    image = str(DATA / "benign_004.png")
    assert main(["analyze", image, "--out", str(out)]) == 2  # a link where a result goes is an earlier result
    assert "earlier result" in capsys.readouterr().err
    assert main(["analyze", image, "--out", str(out), "--overwrite"]) == 0
    assert list(elsewhere.iterdir()) == []  # nothing created at the link's target
    assert not (out / planted).is_symlink() and (out / planted).is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_batch_never_writes_through_a_linked_case_folder(tmp_path, manifest):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main(["batch", str(manifest), "--out", str(out)]) == 0
    shutil.rmtree(out / "benign")
    (out / "benign").symlink_to(elsewhere, target_is_directory=True)
    assert main(["batch", str(manifest), "--out", str(out)]) == 1  # that case is an error row, the batch finishes
    with open(out / "results.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["status"] == "error" and "symbolic link" in row["error"]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("command", ["analyze", "segment", "batch"])
def test_an_unwritable_out_is_refused_before_the_analysis(tmp_path, manifest, command, capsys):
    if os.access("/sys", os.W_OK) and os.geteuid() != 0:
        pytest.skip("needs a folder this user cannot write in")
    target = "/sys/breastcadx-out"  # /sys refuses new files even to root
    image = str(DATA / "benign_004.png")
    args = {"analyze": ["analyze", image, "--out", target],
            "segment": ["segment", image, "--out", target + "/mask.nrrd"],
            "batch": ["batch", str(manifest), "--out", target]}[command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "/sys" in err and "cannot write here" in err and "Traceback" not in err


def test_files_get_the_usual_permissions_not_owner_only(tmp_path):
    """Written through a temporary file, a result still gets the mode open() would give it (a shared folder's
    readers can read it)."""
    from BreastCADxLib.io.atomic import FILE_MODE, write_atomic

    path = write_atomic(tmp_path / "r.json", lambda tmp: tmp.write_text("{}"))
    assert path.stat().st_mode & 0o777 == FILE_MODE and FILE_MODE & 0o044  # group / others can read by default
