"""`breastcadx batch`: many cases from a manifest, resumable, one bad case never stops the rest; in this process,
or on a Dask cluster (`cli/cluster.py`) with the same tasks and the same results contract."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET
from BreastCADxLib.analysis.result import AnalysisResult
from BreastCADxLib.errors import BreastCADxError, ImageReadError
from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.io.files import fingerprint
from BreastCADxLib.results.batch_manifest import CASE_ID, read_manifest

COLUMNS = ["case_id", "status", "error", "error_code", "lesion_found", "malignancy_probability", "predicted_label",
           "birads_suggestion", "mask_path", "heatmap_path", "seconds", "flags", "presence_score", "reader_birads",
           "site_profile"]
OLDER_COLUMNS = COLUMNS[:12]  # results.csv of a batch before site profiles: its folder is still a batch's


MARKER = ".breastcadx-batch"  # written in --out by the first run: the folder is a batch's, and resumable


class OutputFolderError(BreastCADxError):
    """--out holds files this batch did not make."""

    code = "output_not_empty"


def foreign_entries(out: Path) -> list[str]:
    """What in `out` a batch did not make: anything but results.csv with the batch's header and case folders
    holding only case files (a folder of an earlier version's batch, before the marker, is recognised)."""
    from BreastCADxLib.results.case_files import CASE_FILES

    own_files = {*CASE_FILES, ATTEMPTS}
    header = ",".join(COLUMNS)
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.name == MARKER:
            continue
        if entry.is_symlink():
            foreign.append(entry.name)
        elif entry.name == "results.csv" and entry.is_file():
            with open(entry, encoding="utf-8", errors="replace") as f:
                if f.readline().strip() not in (header, ",".join(OLDER_COLUMNS)):
                    foreign.append(entry.name)
        elif entry.is_dir() and CASE_ID.match(entry.name):
            if any(f.is_symlink() or (f.name not in own_files and not f.name.startswith("."))
                   for f in entry.iterdir()):
                foreign.append(entry.name)
        else:
            foreign.append(entry.name)
    return foreign


def prepare_out(out: Path, overwrite: bool) -> None:
    """--out is new, empty, a batch's own (marker) or made of batch files only; else refused unless --overwrite.
    Checked writable before any case runs."""
    from BreastCADxLib.io.atomic import check_writable_folder, write_atomic

    if out.is_dir() and not (out / MARKER).is_file() and not overwrite:
        foreign = foreign_entries(out)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise OutputFolderError(f"--out holds files this batch did not make ({shown}); choose a new or empty "
                                    "folder, or pass --overwrite to write there anyway (results.csv and the case "
                                    "folders named in the manifest are then replaced)", out)
    check_writable_folder(out)
    if not (out / MARKER).is_file():
        write_atomic(out / MARKER, lambda tmp: tmp.write_text(json.dumps(
            {"made_by": "breastcadx batch", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"))


def _row(case_id: str, result: AnalysisResult) -> dict:
    files = result.extra.get("files", {})
    p = result.probability
    return {"case_id": case_id, "status": "ok", "error": "",
            "lesion_found": "true" if result.lesion_found else "false",
            "malignancy_probability": "" if p is None else f"{p:.6f}",
            "predicted_label": result.predicted_label, "birads_suggestion": result.birads_suggestion or "",
            "flags": ";".join(f.code for f in result.flags),  # codes (analysis.values.FLAG_CODES); texts in result.json
            "mask_path": f"{case_id}/{files['mask']}" if "mask" in files else "",
            "heatmap_path": f"{case_id}/{files['heatmap']}" if "heatmap" in files else "",
            "seconds": f"{result.extra.get('batch', {}).get('seconds', 0.0):.3f}",
            "presence_score": "" if result.presence_score is None else f"{result.presence_score:.4f}",
            "reader_birads": result.reader.category if result.reader else "",
            "site_profile": f"{site.id}:{site.sha256}" if (site := result.provenance.site) else ""}


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
    """The model set's verified manifest (every file, the input guard included): a finished case made with other
    models is redone."""
    from BreastCADxLib.analysis.registry import model_set_fingerprint

    return model_set_fingerprint(model_set)


@dataclass(frozen=True)
class BatchOptions:
    """What every case of a batch is computed with (also what a finished case must match to be reused)."""

    device: str = "auto"
    expect_lesion: bool = False
    model_set: str = DEFAULT_MODEL_SET
    allow_unvalidated: bool = False
    heatmap: bool = False
    site: str | None = None  # a site profile folder (verified once per process, against the model set)


# the shipped set's own `--folds site` record: its presence threshold, at each hospital held out of training, called
# 33-45 % of the lesion images lesion-free (README, benchmarks/results/train_three_sites.md)
HELD_OUT_MISSED = "33-45 %"


def presence_note(rows: list[dict], options: BatchOptions) -> str | None:
    """After a batch on the default path (no lesion expected, no site profile): how many cases were called
    lesion-free, and what to do when they show a lesion (a presence threshold transfers poorly to a new hospital)."""
    if options.expect_lesion or options.site:
        return None
    ok = [r for r in rows if r["status"] == "ok"]
    free = sum(r["lesion_found"] == "false" for r in ok)
    if not free:
        return None
    return (f"{free} of {len(ok)} analysed cases were called lesion-free at the model set's presence threshold, "
            "which transfers poorly to a hospital a set never saw (the shipped set, held out: "
            f"{HELD_OUT_MISSED} of lesions missed). If these images show a lesion, run them again with "
            "--expect-lesion (or a box), or fit this hospital's threshold with `breastcadx adapt`.")


class ResultsTable:
    """results.csv in manifest order, replaced atomically (written beside, then renamed): a killed batch leaves a
    whole file with the cases finished by the last write, never a torn one. Rewritten at most while the time
    since the last write is ten times what that write took (so 10,000 rows cost no more than 10 % extra), and
    always by `write(final=True)`. Cases finished but not yet in the file are found again on resume (their
    result.json), so nothing is recomputed."""

    def __init__(self, out: Path, order: list[str], records: list[dict]) -> None:
        self.out, self.order = out, {c: i for i, c in enumerate(order)}
        self.records = {r["case_id"]: r for r in records}
        self._next = 0.0
        self.write(final=True)

    def add(self, record: dict) -> None:
        self.records[record["case_id"]] = record
        self.write()

    def rows(self) -> list[dict]:
        return sorted(self.records.values(), key=lambda r: self.order[r["case_id"]])

    def write(self, final: bool = False) -> None:
        from BreastCADxLib.io.atomic import write_atomic

        now = time.perf_counter()
        if not final and now < self._next:
            return

        def table(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=COLUMNS)
                w.writeheader()
                w.writerows(self.rows())

        write_atomic(self.out / "results.csv", table)
        self._next = time.perf_counter() + 10 * (time.perf_counter() - now)


def error_record(case_id: str, e: Exception, seconds: float) -> dict:
    """A failed case's row: the message (naming the file and the cause) and its stable code."""
    ours = isinstance(e, BreastCADxError)
    return {**dict.fromkeys(COLUMNS, ""), "case_id": case_id, "status": "error",
            "error": str(e) if ours else f"internal error: {e.__class__.__name__}: {e}",
            "error_code": e.code if ours else "internal_error", "seconds": f"{seconds:.3f}"}


@dataclass
class Pending:
    """A manifest row that needs computing, with the settings its result will be stamped with."""

    case_id: str
    inputs: list[str]
    settings: dict


def plan(rows: list[dict], base: Path, out: Path, options: BatchOptions, models: str
         ) -> tuple[list[dict], list[Pending]]:
    """Split the manifest into records already final (a reusable finished case, or a missing input) and the
    cases to compute. Runs where the manifest is (the client), so finished cases never travel to a worker."""
    from BreastCADxLib.results.case_files import NAMES

    final, todo = [], []
    for row in rows:
        case_id, t0 = row["case_id"], time.perf_counter()
        try:
            inputs = [base / row["image"]] + ([base / row["mask"]] if (row.get("mask") or "").strip() else [])
            missing = [p for p in inputs if not p.exists()]
            if missing:
                raise ImageReadError("file or folder not found", missing[0])
            special = [p for p in inputs if not p.is_file() and not p.is_dir()]
            if special:  # a pipe or a device would block or never end the fingerprint
                raise ImageReadError("is a pipe, device or socket, not an image file", special[0])
            settings = {"inputs_sha256": fingerprint(*inputs), "model_set": options.model_set,
                        "models_sha256": models, "expect_lesion": options.expect_lesion and len(inputs) == 1,
                        "allow_unvalidated": options.allow_unvalidated, "heatmap": options.heatmap,
                        "site_sha256": site_seal(options), "reader_birads": row.get("birads") or None,
                        "roi": row.get("roi") or None}
            done = _finished(out / case_id / NAMES["result"], settings)
        except Exception as e:
            final.append(error_record(case_id, e, time.perf_counter() - t0))
            continue
        if done is not None:
            final.append(_row(case_id, done))
        else:
            todo.append(Pending(case_id, [str(p) for p in inputs], settings))
    return final, todo


ATTEMPTS = "batch_attempts.log"


def site_profile(options: BatchOptions):
    """The batch's site profile, verified (once per process) against its model set; None without one."""
    return _verified_site(options.site, options.model_set) if options.site else None


@lru_cache(maxsize=2)
def _verified_site(folder: str, model_set: str):
    from BreastCADxLib.analysis.site import load_site_profile

    return load_site_profile(folder, model_set)


def site_seal(options: BatchOptions) -> str | None:
    profile = site_profile(options)
    return profile.sha256 if profile else None


def compute(case: Pending, out: Path, options: BatchOptions) -> dict:
    """One case into out/<case_id>/ (the one case writer) -> its results.csv record. Never raises: an error is a
    record. Each start is appended to the case's batch_attempts.log, so a case retried after a lost worker says
    so in its result.json (`batch.attempts`)."""
    from BreastCADxLib.analysis.pipeline import analyze
    from BreastCADxLib.analysis.radiomics_features import check_lesion_mask
    from BreastCADxLib.analysis.segmentation import parse_roi
    from BreastCADxLib.io.atomic import append_line
    from BreastCADxLib.results.case_files import write_case

    t0 = time.perf_counter()
    folder = out / case.case_id
    try:
        if folder.is_symlink():
            raise BreastCADxError("the case folder is a symbolic link; BreastCADx does not write through links it "
                                  "did not make (remove it)", folder)
        folder.mkdir(parents=True, exist_ok=True)
        append_line(folder / ATTEMPTS,
                    f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()} host {os.uname().nodename}\n")
        attempts = len((folder / ATTEMPTS).read_text().splitlines())
        inputs = [Path(p) for p in case.inputs]
        image = load_image(inputs[0])
        mask = load_mask(inputs[1], image) if len(inputs) > 1 else None
        if mask is not None:
            check_lesion_mask(mask, inputs[1])
        roi = parse_roi(case.settings["roi"]) if case.settings.get("roi") else None
        result = analyze(image, mask=mask, roi=roi, device=options.device, expect_lesion=options.expect_lesion,
                         model_set=options.model_set, allow_unvalidated=options.allow_unvalidated,
                         heatmap=options.heatmap, site=site_profile(options),
                         reader_birads=case.settings.get("reader_birads"))
        result.extra["batch"] = {**case.settings, "seconds": round(time.perf_counter() - t0, 3),
                                 "attempts": attempts}
        result.extra["files"] = {k: p.name for k, p in write_case(result, image, folder).paths.items()}
        (folder / ATTEMPTS).unlink(missing_ok=True)  # the case is whole; a later rerun starts counting again
        return _row(case.case_id, result)
    except Exception as e:  # one bad case is recorded and the batch goes on
        return error_record(case.case_id, e, time.perf_counter() - t0)


class Progress:
    """A bar on a terminal; otherwise a log line every `every` seconds (and at the end)."""

    def __init__(self, total: int, show_bar: bool, every: float = 30.0) -> None:
        self.total, self.done, self.errors, self.every = total, 0, 0, every
        self.t0 = self._last = time.perf_counter()
        self.bar = None
        if show_bar:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, record: dict) -> None:
        self.done += 1
        self.errors += record["status"] == "error"
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(errors=self.errors, refresh=False)
        elif time.perf_counter() - self._last >= self.every:
            self.log()

    def log(self) -> None:
        self._last = time.perf_counter()
        rate = self.done / max(self._last - self.t0, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        print(f"batch: {self.done}/{self.total} computed, {self.errors} errors, {rate:.2f} cases/s, "
              f"about {eta / 60:.0f} min left", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.total:
            self.log()


def run_batch(manifest: Path, out: Path, options: BatchOptions | None = None, show_progress: bool | None = None,
              workers: int = 0, scheduler: str | None = None, overwrite: bool = False) -> list[dict]:
    """Each case into out/<case_id>/; results.csv in manifest order. A rerun redoes only what is missing or
    changed (inputs, settings or model weights). workers > 0: a Dask LocalCluster of that many processes;
    scheduler: the address of a running Dask scheduler (tcp://host:8786). An --out holding files a batch did not
    make is refused unless overwrite. Returns the rows."""
    options = options or BatchOptions()
    rows = read_manifest(manifest)
    manifest, out = manifest.resolve(), out.resolve()  # workers elsewhere see the same absolute paths
    prepare_out(out, overwrite)
    site_profile(options)  # a profile that is altered or made for another model set stops the batch here
    final, todo = plan(rows, manifest.parent, out, options, models_fingerprint(options.model_set))
    table = ResultsTable(out, [r["case_id"] for r in rows], final)
    progress = Progress(len(todo), sys.stderr.isatty() if show_progress is None else show_progress)

    def finished(record: dict) -> None:
        table.add(record)
        progress.update(record)

    if todo and (workers or scheduler):
        from BreastCADxLib.cli.cluster import run_on_dask

        run_on_dask(todo, out, options, finished, compute, error_record, workers=workers, scheduler=scheduler)
    else:
        for case in todo:
            finished(compute(case, out, options))
    progress.close()
    table.write(final=True)
    return table.rows()
