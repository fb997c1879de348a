"""`breastcadx adapt --fine-tune`: the site's labelled lesions adjust the model set itself, inside the profile.

The run is `breastcadx train --from SET --segmenter-epochs 0` on the batch's own outlines (each case's mask.nrrd)
and images (train.fine_tune.SiteFineTune, which `adapt` gets from its caller as a FineTuner: results does not
import train). This module is the results side: the profile's folder while the run is resumable (`.fine-tune/`,
before site.json exists: not yet a profile), which out-of-fold probability the new set gives each case, the set's
installation into the profile and the card's lines. The profile is fitted on the new set's out-of-fold
probabilities, so its calibration, biopsy threshold and reader rule describe the set it carries.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path
from typing import Protocol

FOLDS = 5
WORK = ".fine-tune"  # inside the profile's folder until site.json is written
SUFFIX = "-fine-tuned"
FINE_TUNE_CV = "fine_tune_cv.json"  # the run's per-finding record, kept in the profile (SHA256-listed)


class FineTuner(Protocol):
    """Fine-tunes the batch's model set on the site's labelled lesions (train.fine_tune.SiteFineTune). Returns
    {"cases": the cases with the probabilities the profile is fitted on, "folder": the new set, "record": for
    site.json (its "kept" decides whether the profile carries the set), "cv_text": the run record}; raises `error`
    (saying so) when it cannot run or stopped at its time box."""

    def __call__(self, cases: list, results: Path, out: Path, profile_id: str, source: dict, error) -> dict: ...


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


def write_manifest(path: Path, rows: list[list[str]], error) -> None:
    """The train manifest in the work folder; a work folder made for other cases is never reused."""
    from io import StringIO

    buf = StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([["case_id", "image", "label", "patient", "mask"], *rows])
    text = buf.getvalue().encode()
    if path.is_file():
        if path.read_bytes() != text:
            raise error("a fine-tune of other cases (or another batch) is under way in this work folder; remove it "
                        "to start again", path.parent)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)


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


def summaries(cv: dict) -> dict:
    """What the card quotes of train's cross-validation: AUC, CI and specificity at 0.96 per model."""
    def brief(models: dict, keep=None) -> dict:
        return {k: {"auc": r["auc"], "ci95": r["ci95"], "specificity_at_0.96": r["specificity_at_0.96"]}
                for k, r in models.items() if keep is None or k in keep}

    keep = ("source_as_is", "fusion", "fusion_with_members", "box_cnn", "whole_cnn", "fusion_from_scratch")
    return {"drawn_outlines": brief(cv["models"], keep),
            "automatic_outlines": brief((cv.get("automatic_outlines") or {}).get("models") or {})}


RULE = ("the fine-tuned set is kept when, on these lesions, its out-of-fold probabilities (folds by patient; each "
        "lesion scored by a set fine-tuned without its patient) do not lower the mean specificity over "
        "sensitivities 0.90-1.00, cost at most 0.01 of AUC and score no more cancers below 5 % beyond noise, "
        "against the probabilities the set as it is gave them in the batch; else the profile adapts the set as it "
        "is")


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


__all__ = ["FineTuner", "write_manifest", "RULE", "install", "in_progress", "record_sha256", "card_lines",
           "set_scores", "summaries", "work_folder", "set_name", "FINE_TUNE_CV", "SUFFIX"]
