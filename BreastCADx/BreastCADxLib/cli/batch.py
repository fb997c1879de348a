"""`breastcadx batch`: many cases from a manifest, resumable, one bad case never stops the rest."""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from pathlib import Path

from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.io import load_image, load_mask

COLUMNS = ["case_id", "status", "error", "lesion_found", "malignancy_probability", "predicted_label",
           "birads_suggestion", "mask_path", "heatmap_path", "seconds"]


CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RESERVED = {"results.csv"}


def read_manifest(path: Path) -> list[dict]:
    """Rows of case_id,image[,mask]; a UTF-8 BOM is accepted; every problem names the row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BreastCADxError(f"manifest cannot be read ({e})", path) from None
    if not rows or "case_id" not in rows[0] or "image" not in rows[0]:
        raise BreastCADxError("manifest needs the columns case_id,image (and optionally mask)", path)
    for n, r in enumerate(rows, start=2):  # line 1 is the header
        if None in r or any(v is None for v in r.values()):
            raise BreastCADxError(f"line {n}: the row has {'more' if None in r else 'fewer'} cells than the "
                                  "header", path)
        r["case_id"] = r["case_id"].strip()
        if not CASE_ID.match(r["case_id"]) or r["case_id"].lower() in RESERVED:
            raise BreastCADxError(f"line {n}: case_id {r['case_id'][:40]!r} must be 1-100 letters, digits, '.', '_' "
                                  "or '-' (a plain folder name; not results.csv)", path)
        if not r["image"].strip():
            raise BreastCADxError(f"line {n}: the image cell is empty", path)
    ids = [r["case_id"] for r in rows]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise BreastCADxError(f"case_id values must be unique; repeated: {dupes[:5]}", path)
    return rows


def _row_from_result(case_id: str, result: dict, seconds: float, case_dir: str) -> dict:
    p = result["malignancy_probability"]
    files = result.get("files", {})
    return {"case_id": case_id, "status": "ok", "error": "",
            "lesion_found": "true" if result["lesion_found"] else "false",
            "malignancy_probability": "" if p is None else f"{p:.6f}",
            "predicted_label": result["predicted_label"], "birads_suggestion": result["birads_suggestion"] or "",
            "mask_path": f"{case_dir}/{files['mask']}" if "mask" in files else "",
            "heatmap_path": f"{case_dir}/{files['heatmap']}" if "heatmap" in files else "",
            "seconds": f"{seconds:.3f}"}


def _finished(done: Path, expect_lesion: bool, model_set: str) -> dict | None:
    """A case's stored result when it was computed with the same settings, else None (compute it)."""
    if not done.exists():
        return None
    try:
        res = json.loads(done.read_text())
    except (OSError, ValueError):
        return None  # a half-written result is recomputed
    if res.get("mask_source") == "auto" and bool(res.get("batch_expect_lesion", False)) != expect_lesion:
        return None
    if res.get("models", {}).get("model_set", "two-site") != model_set:
        return None
    return res


def run_batch(manifest: Path, out: Path, device: str = "auto", show_progress: bool | None = None,
              expect_lesion: bool = False, model_set: str = "two-site") -> list[dict]:
    """expect_lesion applies to cases without a mask; a finished case computed with the other setting is redone."""
    from BreastCADxLib.analysis.pipeline import analyze
    from BreastCADxLib.results.case_files import write_case

    rows = read_manifest(manifest)
    base = manifest.parent
    out.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if show_progress is None else show_progress
    table = []
    for i, row in enumerate(rows):
        case_id = row["case_id"]
        case_dir = out / case_id
        done = case_dir / "result.json"
        res = _finished(done, expect_lesion, model_set)
        if res is not None:  # resumable: finished cases are kept as they are
            table.append(_row_from_result(case_id, res, res.get("batch_seconds", 0.0), case_id))
        else:
            t0 = time.perf_counter()
            try:
                image = load_image(base / row["image"])
                mask = load_mask(base / row["mask"], image) if (row.get("mask") or "").strip() else None
                result = analyze(image, mask=mask, device=device, expect_lesion=expect_lesion, model_set=model_set)
                write_case(result, image, case_dir)
                seconds = time.perf_counter() - t0
                res = json.loads(done.read_text())
                res["batch_seconds"] = seconds
                res["batch_expect_lesion"] = expect_lesion
                done.write_text(json.dumps(res, indent=1) + "\n")
                table.append(_row_from_result(case_id, res, seconds, case_id))
            except Exception as e:  # one bad case is recorded and the batch goes on
                msg = str(e) if isinstance(e, BreastCADxError) else f"internal error: {e.__class__.__name__}: {e}"
                table.append({**dict.fromkeys(COLUMNS, ""), "case_id": case_id, "status": "error",
                              "error": msg, "seconds": f"{time.perf_counter() - t0:.3f}"})
        if show:
            frac = (i + 1) / len(rows)
            print(f"\r[{'#' * int(frac * 30):<30}] {i + 1}/{len(rows)} {case_id[:30]:<30}", end="",
                  file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(table)
    return table
