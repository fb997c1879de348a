"""A batch's manifest (case_id, image[, mask][, roi][, birads]): the one reader, for `batch` and for the steps
that go back to a finished batch's images (`adapt --fine-tune`)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from BreastCADxLib.analysis.site import reader_category
from BreastCADxLib.errors import BreastCADxError

CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# every name the batch itself writes in --out: its temporary files start with "." (io.atomic), which no case id can
RESERVED = {"results.csv"}


def read_manifest(path: Path) -> list[dict]:
    """Rows of case_id,image[,mask][,roi][,birads]; a UTF-8 BOM is accepted; every problem names the row."""
    from BreastCADxLib.analysis.segmentation import parse_roi

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BreastCADxError(f"manifest cannot be read ({e})", path) from None
    if not rows or "case_id" not in rows[0] or "image" not in rows[0]:
        raise BreastCADxError("manifest needs the columns case_id,image (and optionally mask, roi, birads)", path)
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
        for key in ("roi", "birads"):  # a blank cell is an empty one
            if key in r:
                r[key] = r[key].strip()
        if r.get("roi"):  # a box around the finding: the segmenter's prompt, as analyze --roi
            if (r.get("mask") or "").strip():
                raise BreastCADxError(f"line {n}: give the finding's mask or a roi box, not both", path)
            try:
                r["roi"] = ",".join(map(str, parse_roi(r["roi"])))
            except BreastCADxError as e:
                raise BreastCADxError(f"line {n}: {e.cause}", path) from None
        if r.get("birads"):  # the radiologist's own category, shown beside BreastCADx's
            try:
                r["birads"] = reader_category(r["birads"])
            except BreastCADxError as e:
                raise BreastCADxError(f"line {n}: {e.cause}", path) from None
    ids = [r["case_id"] for r in rows]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise BreastCADxError(f"case_id values must be unique; repeated: {dupes[:5]}", path)
    return rows


__all__ = ["CASE_ID", "RESERVED", "read_manifest"]
