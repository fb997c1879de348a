"""`breastcadx batch --workers N` on a Dask LocalCluster: the same rows as one process, none lost or duplicated
when a worker is killed or the whole batch is killed and resumed."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import MODULE_DIR

pytest.importorskip("distributed")
DATA = MODULE_DIR / "Testing" / "Data" / "busi"
NAMES = ("benign_004", "benign_031", "malignant_001", "benign_351")
N_CASES = 30
SAME = ["case_id", "status", "error", "lesion_found", "predicted_label", "birads_suggestion", "mask_path",
        "heatmap_path", "flags"]  # every column but `seconds` (and the probability, compared to 1e-5)


def _rows(path):
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _batch(manifest, out, *extra):
    return [sys.executable, "-m", "BreastCADxLib.cli.main", "batch", str(manifest), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """30 cases: the committed BUSI images under new case ids, two in three with their mask."""
    folder = tmp_path_factory.mktemp("dask_cases")
    for n in NAMES:
        shutil.copy(DATA / f"{n}.png", folder / f"{n}.png")
        shutil.copy(DATA / f"{n}_mask.png", folder / f"{n}_mask.png")
    lines = ["case_id,image,mask"]
    for i in range(N_CASES):
        n = NAMES[i % len(NAMES)]
        lines.append(f"case{i:03d},{n}.png,{f'{n}_mask.png' if i % 3 else ''}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    return folder / "m.csv"


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_process")
    r = subprocess.run(_batch(manifest, out), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return _rows(out / "results.csv")


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    """The Dask worker processes the batch started (its children running Python)."""
    kids = psutil.Process(proc.pid).children(recursive=True)
    return [k for k in kids if "python" in k.name().lower() and k.status() != psutil.STATUS_ZOMBIE]


def _wait_rows(proc, results, n, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline and len(_rows(results)) < n:
        assert proc.poll() is None, "the batch ended early"
        time.sleep(0.2)


def test_two_workers_give_the_rows_of_one_process_through_a_lost_worker_and_a_killed_batch(
        manifest, reference, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_batch(manifest, out, "--workers", "2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_rows(proc, out / "results.csv", 4)
        workers = _workers(proc)
        assert workers, "no worker processes found"
        workers[0].send_signal(signal.SIGKILL)  # a lost worker: its case runs again elsewhere
        _wait_rows(proc, out / "results.csv", 14)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole batch, client and workers, killed midway
        proc.wait()
    partial = _rows(out / "results.csv")
    assert 14 <= len(partial) < N_CASES and all(r["status"] == "ok" for r in partial)
    r = subprocess.run(_batch(manifest, out, "--workers", "2"), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    final = _rows(out / "results.csv")
    ids = [x["case_id"] for x in final]
    assert ids == [x["case_id"] for x in reference] and len(set(ids)) == N_CASES  # none lost, none twice
    assert [{k: x[k] for k in SAME} for x in final] == [{k: x[k] for k in SAME} for x in reference]
    for x, y in zip(final, reference):  # one thread per worker here, two in one process: the last digit may move
        assert x["malignancy_probability"] == y["malignancy_probability"] or \
            abs(float(x["malignancy_probability"]) - float(y["malignancy_probability"])) <= 1e-5
