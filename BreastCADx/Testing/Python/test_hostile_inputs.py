"""The hostile-input corpus (Testing/Data/bad, kinds.json): every kind gives its exit code and a one-line message
naming the file and the cause, never a traceback or an internal error, and changes nothing outside --out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from BreastCADxLib.cli.main import main

BAD = Path(__file__).resolve().parents[1] / "Data" / "bad"
KINDS = json.loads((BAD / "kinds.json").read_text())
US_IMAGE = BAD.parent / "busi" / "benign_004.png"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_corpus_has_at_least_sixty_kinds():
    assert len(KINDS) >= 60


@pytest.mark.parametrize("name", sorted(KINDS))
def test_hostile_input(name, tmp_path, capsys):
    spec = KINDS[name]
    path = BAD / name
    if spec.get("empty_dir"):
        path.mkdir(exist_ok=True)
    out = tmp_path / "out"
    args = {"analyze": ["analyze", str(path), "--out", str(out)],
            "analyze-mask": ["analyze", str(US_IMAGE), "--mask", str(path), "--out", str(out)],
            "batch": ["batch", str(path), "--out", str(out)]}[spec["command"]]
    before_corpus, before_tmp = snapshot(BAD.parent), snapshot(tmp_path)
    code = main(args)
    err = capsys.readouterr().err
    assert code == spec["exit"], err
    assert "Traceback" not in err and "internal error" not in err
    if spec["exit"] == 2:
        assert err.startswith("error: ") and str(path) in err, err
        for word in spec["words"]:
            assert word in err.lower(), (word, err)
    if spec.get("flag"):  # analysed, with the reader's correction said
        result = json.loads((out / "result.json").read_text())
        assert spec["flag"] in [f["code"] for f in result["flags"]] or \
            spec["flag"] == "input_corrected" and result["input_check"]["notes"], result["flags"]
    if spec.get("row_error"):
        with open(out / "results.csv", newline="") as f:
            row = next(csv.DictReader(f))
        assert row["status"] == "error" and spec["row_error"] in row["error"]
    assert snapshot(BAD.parent) == before_corpus  # the inputs are untouched
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before_tmp  # nothing beside --out
    if spec["exit"] == 2 and spec["command"] != "batch":
        assert not out.exists()  # refused before anything was written
