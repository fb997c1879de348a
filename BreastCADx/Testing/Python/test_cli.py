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


def test_base_install_runs_info_and_names_the_extra_for_pacs(tmp_path, sample_dicom):
    """Without the [dicom] extra (highdicom, dicomweb-client, requests) `info` works and `pacs` says what to
    install, instead of failing on import while the parser is built."""
    import subprocess
    import sys

    code = ("import sys; sys.modules.update(highdicom=None, dicomweb_client=None, requests=None); "
            "from BreastCADxLib.cli.main import main; sys.exit(main(sys.argv[1:]))")
    info = subprocess.run([sys.executable, "-c", code, "info", str(sample_dicom)], capture_output=True, text=True)
    assert info.returncode == 0 and "US" in info.stdout, info.stderr
    pacs = subprocess.run([sys.executable, "-c", code, "pacs", "query", "--url", "http://127.0.0.1:9"],
                          capture_output=True, text=True)
    assert pacs.returncode == 2 and "pip install 'breastcadx[dicom]'" in pacs.stderr, pacs.stderr
    assert "Traceback" not in pacs.stderr


def test_pacs_password_variable_is_the_same_in_cli_and_client():
    from BreastCADxLib.cli import pacs
    from BreastCADxLib.io import dicomweb

    assert pacs.PASSWORD_ENV == dicomweb.PASSWORD_ENV
