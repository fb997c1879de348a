"""`breastcadx batch`: many cases from a manifest, resumable, one bad case never stops the rest."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

from BreastCADxLib.analysis.result import AnalysisResult
from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.io import load_image, load_mask

COLUMNS = ["case_id", "status", "error", "lesion_found", "malignancy_probability", "predicted_label",
           "birads_suggestion", "mask_path", "heatmap_path", "seconds", "flags"]


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


def _row(case_id: str, result: AnalysisResult) -> dict:
    files = result.extra.get("files", {})
    p = result.probability
    return {"case_id": case_id, "status": "ok", "error": "",
            "lesion_found": "true" if result.lesion_found else "false",
            "malignancy_probability": "" if p is None else f"{p:.6f}",
            "predicted_label": result.predicted_label, "birads_suggestion": result.birads_suggestion or "",
            "flags": "; ".join(result.flags),
            "mask_path": f"{case_id}/{files['mask']}" if "mask" in files else "",
            "heatmap_path": f"{case_id}/{files['heatmap']}" if "heatmap" in files else "",
            "seconds": f"{result.extra.get('batch', {}).get('seconds', 0.0):.3f}"}


def fingerprint(*paths: Path) -> str:
    """SHA256 over the input files' bytes (a folder: every file in it, by relative name), so a rerun after the
    manifest or a file changed recomputes the case instead of reusing a result made from other inputs."""
    h = hashlib.sha256()
    for path in paths:
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def _finished(done: Path, settings: dict) -> AnalysisResult | None:
    """A case's stored result when it was computed from the same inputs with the same settings, else None."""
    if not done.exists():
        return None
    try:
        res = AnalysisResult.from_json(json.loads(done.read_text()))
    except (OSError, ValueError, KeyError, TypeError, BreastCADxError):
        return None  # half-written, older format or foreign: recomputed
    stored = res.extra.get("batch", {})
    return res if all(stored.get(k) == v for k, v in settings.items()) else None


def models_fingerprint(model_set: str) -> str:
    """The SHA256 of the weights a case would be computed with: a finished case made with other models is redone."""
    from BreastCADxLib.analysis.classifier import DEFAULT_CLASSIFIER
    from BreastCADxLib.analysis.registry import load_card, model_set_dir
    from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL

    folder = model_set_dir(model_set)
    return "/".join(load_card(m, folder)["sha256"][:16] for m in (DEFAULT_CLASSIFIER, DEFAULT_MODEL))


def write_table(out: Path, table: list[dict]) -> None:
    """results.csv replaced atomically (written beside, then renamed): a killed batch leaves a whole file with
    every case finished so far, never a torn one."""
    tmp = out / "results.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(table)
    os.replace(tmp, out / "results.csv")


def run_batch(manifest: Path, out: Path, device: str = "auto", show_progress: bool | None = None,
              expect_lesion: bool = False, model_set: str = "two-site", allow_unvalidated: bool = False
              ) -> list[dict]:
    """Each case into out/<case_id>/ (the one case writer); results.csv is rewritten atomically after every case,
    so a killed batch leaves the rows done so far, and a rerun redoes only what is missing or changed (inputs,
    settings or model weights)."""
    from BreastCADxLib.analysis.pipeline import analyze
    from BreastCADxLib.analysis.radiomics_features import check_lesion_mask
    from BreastCADxLib.results.case_files import NAMES, write_case

    rows = read_manifest(manifest)
    base = manifest.parent
    out.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if show_progress is None else show_progress
    models = models_fingerprint(model_set)
    table: list[dict] = []
    write_table(out, table)
    for i, row in enumerate(rows):
        case_id = row["case_id"]
        t0 = time.perf_counter()
        try:
            inputs = [base / row["image"]] + ([base / row["mask"]] if (row.get("mask") or "").strip() else [])
            missing = [p for p in inputs if not p.exists()]
            if missing:
                raise BreastCADxError("file or folder not found", missing[0])
            settings = {"inputs_sha256": fingerprint(*inputs), "model_set": model_set, "models_sha256": models,
                        "expect_lesion": expect_lesion and len(inputs) == 1, "allow_unvalidated": allow_unvalidated}
            result = _finished(out / case_id / NAMES["result"], settings)
            if result is None:
                image = load_image(inputs[0])
                mask = load_mask(inputs[1], image) if len(inputs) > 1 else None
                if mask is not None:
                    check_lesion_mask(mask, inputs[1])
                result = analyze(image, mask=mask, device=device, expect_lesion=expect_lesion,
                                 model_set=model_set, allow_unvalidated=allow_unvalidated)
                result.extra["batch"] = {**settings, "seconds": round(time.perf_counter() - t0, 3)}
                result.extra["files"] = {k: p.name for k, p in write_case(result, image, out / case_id).paths.items()}
            record = _row(case_id, result)
        except Exception as e:  # one bad case is recorded and the batch goes on
            msg = str(e) if isinstance(e, BreastCADxError) else f"internal error: {e.__class__.__name__}: {e}"
            record = {**dict.fromkeys(COLUMNS, ""), "case_id": case_id, "status": "error", "error": msg,
                      "seconds": f"{time.perf_counter() - t0:.3f}"}
        table.append(record)
        write_table(out, table)
        if show:
            frac = (i + 1) / len(rows)
            print(f"\r[{'#' * int(frac * 30):<30}] {i + 1}/{len(rows)} {case_id[:30]:<30}", end="",
                  file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    return table
