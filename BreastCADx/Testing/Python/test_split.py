"""The committed BUSI split is duplicate-aware: no near-twin crosses test and train/val."""

from __future__ import annotations

import csv
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO

SPLITS = REPO / "training" / "splits"


def _split() -> dict[str, dict]:
    return {r["case"]: r for r in csv.DictReader(open(SPLITS / "busi.csv"))}


def test_every_case_assigned_and_stratified():
    rows = _split()
    assert len(rows) == 780
    counts = Counter((r["split"], r["label"]) for r in rows.values())
    for label, total in (("benign", 437), ("malignant", 210), ("normal", 133)):
        assert abs(counts[("test", label)] / total - 0.2) < 0.03
    assert {r["fold"] for r in rows.values() if r["split"] != "test"} == {"0", "1", "2", "3", "4"}
    assert {r["fold"] for r in rows.values() if r["split"] == "test"} == {"-1"}


def test_groups_never_span_splits_or_folds():
    by_group: dict[str, set] = {}
    for r in _split().values():
        by_group.setdefault(r["group"], set()).add((r["split"] == "test", r["fold"]))
    assert all(len(v) == 1 for v in by_group.values())


def test_committed_duplicate_pairs_do_not_cross_test():
    rows = _split()
    pairs = list(csv.DictReader(open(SPLITS / "busi_duplicate_pairs.csv")))
    assert len(pairs) > 100  # BUSI has ~1 in 5 images with a near twin
    for p in pairs:
        a, b = rows[p["case_a"]], rows[p["case_b"]]
        assert (a["split"] == "test") == (b["split"] == "test"), p
        assert a["group"] == b["group"]


def test_no_test_image_has_a_near_twin_in_train_recomputed():
    """Recomputes the similarity scores from the images when the data folder is present."""
    data = Path(os.environ.get("BUSI_DATA", REPO.parent / "shared" / "data" / "busi"))
    if not (data / "manifest.csv").exists():
        pytest.skip(f"BUSI data not found at {data} (set BUSI_DATA)")
    sys.path.insert(0, str(REPO / "training"))
    import split as S

    rows = sorted(csv.DictReader(open(data / "manifest.csv")), key=lambda r: r["case"])
    whole, lesion, bbox = S.load_descriptors(data, rows)
    assigned = _split()
    is_test = [assigned[r["case"]]["split"] == "test" for r in rows]
    for i, j, _, _ in S.duplicate_pairs(rows, whole, lesion, bbox):
        assert is_test[i] == is_test[j], (rows[i]["case"], rows[j]["case"])
