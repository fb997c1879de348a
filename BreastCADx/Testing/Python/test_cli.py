"""`breastcadx info` on real files and bad input: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import dicom_factory as f


def run(*args):
    return subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_info_sample(sample_dicom):
    r = run("info", sample_dicom)
    assert r.returncode == 0, r.stderr
    assert "modality:    US" in r.stdout and "557 x 457 x 1" in r.stdout and "unknown" in r.stdout


def test_info_json_many(tmp_path, sample_dicom, sample_mask):
    cine = f.us(tmp_path / "cine.dcm", f.sample_pixels()[None].repeat(4, axis=0), spacing_mm=(0.1, 0.1))
    r = run("info", "--json", sample_dicom, sample_mask, cine)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["frames"] for x in rows] == [1, 1, 4]
    assert rows[2]["spacing_mm"][:2] == [1.0, 1.0] or rows[2]["spacing_mm"][:2] == [0.1, 0.1]


def test_info_bad_input_exit_2_one_line(tmp_path, sample_dicom):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(sample_dicom.read_bytes()[:5000])
    r = run("info", sample_dicom, bad)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:")
    assert "modality:    US" in r.stdout  # good files are still reported
