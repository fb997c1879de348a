"""`breastcadx adapt --fine-tune`: the site's labelled lesions adjust the model set itself, inside the profile.

It is `breastcadx train --from SET --segmenter-epochs 0` on the batch's own outlines (each case's mask.nrrd, the
outline the batch classified) and its images (the batch's manifest, checked against the batch's input digests):
the fusion is pulled towards the set's coefficients, the image members are fine-tuned at a tenth of the learning
rate, the segmenter is kept. The new set keeps the source's input guard (it accepted every one of these images;
one fitted on a hundred images of one hospital would know only them). Its cross-validation by patient gives each
case an out-of-fold probability of the fine-tuned design, for the outline's origin: the calibration, biopsy
threshold and reader rule of the profile are fitted on those, so they describe the set the profile carries.

The work (train manifest, feature caches, checkpoints) lives in the profile's folder (`.fine-tune/`, before
site.json exists: not yet a profile) and is resumable under --max-minutes: the same command goes on from there;
it is removed once the profile is written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

from BreastCADxLib.errors import BreastCADxError

FOLDS = 5
WORK = ".fine-tune"  # inside the profile's folder until site.json is written
SUFFIX = "-fine-tuned"
FINE_TUNE_CV = "fine_tune_cv.json"  # the run's per-finding record, kept in the profile (SHA256-listed)


def work_folder(out: Path) -> Path:
    return out / WORK


def in_progress(out: Path) -> bool:
    """`out` is a fine-tune this command began and has not finished (its work folder, no site.json, nothing else
    but the set being copied in): the same command goes on there; anything else is never touched."""
    from BreastCADxLib.analysis.site import SITE_FILE

    if out.is_symlink() or not out.is_dir() or (out / SITE_FILE).exists() or not work_folder(out).is_dir():
        return False
    return all(p.name in (WORK, FINE_TUNE_CV, "card.md") or p.name.startswith(".") or
               (p.is_dir() and p.name.endswith(SUFFIX)) for p in out.iterdir())


def set_name(profile_id: str) -> str:
    return f"{profile_id}{SUFFIX}"


def _train_rows(cases: list, results: Path, manifest: Path, error) -> list[list[str]]:
    """Train-manifest rows (case_id, image, label, patient, mask) of the classified lesions; each image taken from
    the batch's manifest and checked to be the one the batch analysed."""
    from BreastCADxLib.cli.batch import fingerprint, read_manifest
    from BreastCADxLib.results.case_files import NAMES

    rows = {r["case_id"]: r for r in read_manifest(manifest)}
    out = []
    for c in cases:
        if c.label is None or c.probability is None:
            continue
        row = rows.get(c.case_id)
        if row is None:
            raise error(f"case {c.case_id!r} of the batch is not in this manifest: --fine-tune takes the batch's own "
                        "manifest (for its images)", manifest)
        folder = results.parent / c.case_id
        inputs = [manifest.parent / row["image"]] + (
            [manifest.parent / row["mask"]] if (row.get("mask") or "").strip() else [])
        payload = json.loads((folder / NAMES["result"]).read_text())
        try:
            same = fingerprint(*inputs) == payload.get("batch", {}).get("inputs_sha256")
        except OSError:
            same = False
        if not same:
            raise error(f"case {c.case_id!r}: its image (or mask) is not the one the batch analysed (missing, or "
                        "changed since)", inputs[0])
        mask = folder / NAMES["mask"]
        if not mask.is_file():
            raise error("the case's outline (mask.nrrd) is missing from the batch's folder", folder)
        label = "malignant" if c.label == 1 else "benign"
        out.append([c.case_id, str(inputs[0].resolve()), label, c.group, str(mask.resolve())])
    return out


def _write_manifest(path: Path, rows: list[list[str]], error) -> None:
    """The train manifest in the work folder; a work folder made for other cases is never reused."""
    lines = [["case_id", "image", "label", "patient", "mask"], *rows]
    text = "".join(",".join(_cell(v) for v in r) + "\r\n" for r in lines)
    if path.is_file():
        if path.read_bytes() != text.encode():
            raise error("a fine-tune of other cases (or another batch) is under way in this work folder; remove it "
                        "to start again", path.parent)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())


def _cell(v: str) -> str:
    from io import StringIO

    buf = StringIO()
    csv.writer(buf, lineterminator="").writerow([v])
    return buf.getvalue()


def set_scores(cv: dict) -> dict[str, dict[str, float]]:
    """Per origin ("user": drawn outlines, "auto": the segmenter's), case_id -> the out-of-fold probability of
    what the new set does with such an outline: its fusion (with the members where train kept them) for drawn
    outlines, its bundle for automatic masks (with its members where kept) for the segmenter's."""
    ids = cv["case_ids"]
    kept = (cv.get("member_gate") or {}).get("kept")
    user = cv["oof"]["fusion_with_members" if kept else "fusion"]
    out = {"user": dict(zip(ids, map(float, user)))}
    auto = cv.get("automatic_outlines")
    if auto:
        chosen = "both_fit" if auto["kept"] else "reference_fit"
        p = auto["oof"][f"{chosen}_with_members" if auto["members_kept"] else chosen]
        out["auto"] = {i: float(v) for i, v, ok in zip(ids, p, auto["oof"]["classifiable"]) if ok}
    return out


def _summaries(cv: dict) -> dict:
    keep = ("source_as_is", "fusion", "fusion_with_members", "box_cnn", "whole_cnn", "fusion_from_scratch")
    pick = {k: {"auc": r["auc"], "ci95": r["ci95"], "specificity_at_0.96": r["specificity_at_0.96"]}
            for k, r in cv["models"].items() if k in keep}
    auto = cv.get("automatic_outlines") or {}
    return {"drawn_outlines": pick, "automatic_outlines": {
        k: {"auc": r["auc"], "ci95": r["ci95"], "specificity_at_0.96": r["specificity_at_0.96"]}
        for k, r in (auto.get("models") or {}).items()}}


def fine_tune(cases: list, results: Path, manifest: Path, out: Path, profile_id: str, source: dict, *,
              device: str, max_minutes: float, member_epochs: int | None, error) -> dict:
    """Train the fine-tuned set in the work folder (resumable) and return what adapt needs: the cases with the new
    set's out-of-fold probabilities, the set's folder, its record for site.json and its cv.json. `source`: the
    batch's model set as the batch named it; it must be found here as the batch used it."""
    from BreastCADxLib.analysis.registry import model_set_fingerprint

    try:
        same = model_set_fingerprint(source["id"]) == source["sha256"]
    except BreastCADxError:
        same = False
    if not same:
        raise error(f"the batch's model set '{source['id']}' is not here as the batch used it (run adapt where the "
                    "batch ran, with the same set)", results)
    work, began = work_folder(out), not out.exists()
    rows = _train_rows(cases, results, manifest, error)
    try:
        return _run(cases, rows, work, out, profile_id, source["id"], device, max_minutes, member_epochs, error)
    except BreastCADxError as e:
        if began and "--max-minutes" not in e.cause:  # refused before anything worth keeping: leave nothing
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(cases, rows, work: Path, out: Path, profile_id: str, source: str, device: str, max_minutes: float,
         member_epochs: int | None, error) -> dict:
    from BreastCADxLib.analysis.registry import load_card, model_set_dir, model_set_info, write_modelset
    from BreastCADxLib.train.pipeline import TrainError, train

    _write_manifest(work / "findings.csv", rows, error)
    folder = work / set_name(profile_id)
    modality = model_set_info(source)["modality"]
    try:
        cv = train(work / "findings.csv", modality, folder, device, max_minutes, FOLDS, start_from=source,
                   segmenter_epochs=0, member_epochs=member_epochs) if not (folder / "modelset.json").is_file() \
            else json.loads((folder / ".work" / "cv.json").read_text())
    except TrainError as e:
        if "--max-minutes" in e.cause:  # the time box: the same adapt command goes on
            raise error(e.cause.replace("the same command", "the same `breastcadx adapt` command"), work) from None
        raise error(f"the fine-tune cannot run on these cases: {e.cause}", e.path or work) from None
    src = model_set_dir(source)  # the source's guard replaces the one fitted on these images alone
    guard = load_card("image_guard", src)
    for name in ("image_guard.json", guard.weights):
        shutil.copyfile(src / name, folder / name)
    write_modelset(folder)
    card = folder / "card.md"
    note = (f"\n`breastcadx adapt --fine-tune`: the input guard is the source set `{source}`'s (it accepted every "
            "one of these images), not one fitted on them alone.\n")
    if card.is_file() and not card.read_text(encoding="utf-8").endswith(note):
        card.write_text(card.read_text(encoding="utf-8") + note, encoding="utf-8")
    scores = set_scores(cv)
    tuned = []
    for c in cases:
        if c.label is None or c.probability is None:
            tuned.append(c)
            continue
        by_origin = scores.get("auto" if c.mask_origin == "auto" else "user") or scores["user"]
        tuned.append(replace(c, probability=by_origin.get(c.case_id)))
    kept, gate = judge(cases, tuned)
    record = {"from": None, "kept": kept, "gate": gate, "rule": RULE,
              "model_set_folder": folder.name, "lesions": len(rows),
              "command": load_card("lesion_cls_fusion", folder).training.get("command"),
              "members": (cv.get("member_gate") or {}).get("weights"),
              "cross_validation": _summaries(cv), "stage_seconds": cv.get("stage_seconds"),
              "guard": "the source set's (it accepted these images)"}
    return {"cases": tuned if kept else cases, "folder": folder, "record": record,
            "cv_text": json.dumps(cv, indent=1) + "\n"}


RULE = ("the fine-tuned set is kept when, on these lesions, its out-of-fold probabilities (folds by patient; each "
        "lesion scored by a set fine-tuned without its patient) do not lower the mean specificity over "
        "sensitivities 0.90-1.00, cost at most 0.01 of AUC and score no more cancers below 5 % beyond noise, "
        "against the probabilities the set as it is gave them in the batch; else the profile adapts the set as it "
        "is")


def judge(cases: list, tuned: list) -> tuple[bool, dict]:
    """train's gate (pipeline.no_worse, patient groups) between the batch's probabilities and the fine-tuned set's
    out-of-fold ones, on the lesions both classified."""
    import numpy as np

    from BreastCADxLib.train.pipeline import no_worse

    pairs = [(a, b) for a, b in zip(cases, tuned) if a.label is not None and a.probability is not None
             and b.probability is not None]
    y = np.array([a.label for a, _ in pairs])
    if len(set(y.tolist())) < 2:
        return False, {"reason": "the fine-tuned set classified too few of the lesions"}
    kept, gate = no_worse(y, [b.probability for _, b in pairs], [a.probability for a, _ in pairs],
                          groups=np.array([a.group for a, _ in pairs]))
    return kept, {**gate, "lesions": len(pairs)}


def record_sha256(result: dict) -> dict[str, str]:
    """The run record's entry in site.json's file list."""
    return {FINE_TUNE_CV: hashlib.sha256(result["cv_text"].encode()).hexdigest()}


def install(result: dict, out: Path, texts: dict[str, str]) -> None:
    """Into the profile's folder: the fine-tuned set when kept (cards and weights, not its caches), the run record
    and `texts` (card.md, then site.json, each written beside and renamed: a profile exists once site.json does);
    then the work folder goes."""
    from BreastCADxLib.io.atomic import write_atomic

    folder: Path = result["folder"]
    target = out / folder.name
    if target.exists():  # a copy a killed run left (no site.json yet): ours to redo
        shutil.rmtree(target)
    if result["record"]["kept"]:
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".work"))
    for name, text in [(FINE_TUNE_CV, result["cv_text"]), *texts.items()]:
        write_atomic(out / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
    shutil.rmtree(work_folder(out), ignore_errors=True)


def card_lines(body: dict) -> list[str]:
    ft = body.get("fine_tune")
    if not ft:
        return []
    d = ft["cross_validation"]["drawn_outlines"]
    a = ft["cross_validation"]["automatic_outlines"]

    def cell(r):
        return f"{r['auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}], {r['specificity_at_0.96']:.2f}" if r else "-"

    tuned = d.get("fusion_with_members") or d.get("fusion")
    auto_tuned = next((a[k] for k in ("both_fit_with_members", "reference_fit_with_members", "both_fit",
                                      "reference_fit") if k in a), None)
    g = ft["gate"]
    run = (f"`breastcadx train --from {ft['from']['id']} --segmenter-epochs 0` on {ft['lesions']} of these "
           "lesions, their batch outlines")
    if ft["kept"]:
        head = (f"Fine-tuned: the profile carries the set `{ft['model_set_folder']}` ({run}; the source's segmenter "
                f"and input guard kept). Use it with `--model-set PROFILE/{ft['model_set_folder']} --site PROFILE`; "
                "the estimates above are its own.")
    else:
        head = (f"Fine-tuning ({run}) was not kept: the profile adapts `{ft['from']['id']}` as it is.")
    lines = ["", head]
    if "candidate" in g:
        lines.append(f"On {g['lesions']} lesions, out of fold: AUC {g['candidate']['auc']:.3f} and specificity over "
                     f"sensitivities 0.90-1.00 {g['candidate']['specificity_0.90_1.00']:.2f} fine-tuned, against "
                     f"{g['base']['auc']:.3f} and {g['base']['specificity_0.90_1.00']:.2f} for the set as it is "
                     f"(rule: {ft['rule']}).")
    return lines + ["Train's own cross-validation by patient on these lesions (AUC [95 % CI], specificity at "
                    f"sensitivity 0.96): the source as it is {cell(d.get('source_as_is'))}; fine-tuned {cell(tuned)} "
                    f"(drawn outlines); fine-tuned on the source segmenter's outlines {cell(auto_tuned)}."]


__all__ = ["fine_tune", "install", "in_progress", "record_sha256", "card_lines", "set_scores", "work_folder",
           "set_name", "FINE_TUNE_CV"]
