"""`breastcadx adapt`: fit a site profile (analysis.site) from a finished batch on a hospital's labelled cases.

What is fitted, each only when the cases are enough (else refused, saying how few and why):
- a calibration of the fused probability per mask origin: by default Platt pulled toward the identity (a prior of
  PLATT_PRIOR on a = 1, b = 0: the set's own probability until the cases show otherwise); `--calibration cv`
  chooses among none, Platt and isotonic by cross-validated log loss instead. At 25-100 cases drawn by patient at
  three held-out sites the fixed rule calibrated better than the choice, which mostly kept "none" or overfitted
  (benchmarks/results/site_adaptation.md). Its effect is estimated by nested cross-validation (outer folds by
  patient), the rule applied inside every fold;
- the biopsy threshold at the sensitivity the site asks for (default 0.98): the empirical quantile of the malignant
  lesions' probabilities (against a normal fit on their logits, or the lower of the two, in
  benchmarks/results/site_adaptation.md: those keep 0.01-0.03 more sensitivity on L5 for 0.09-0.15 less
  specificity; the quantile alone meets both targets, sensitivity >= 0.95 and specificity near the oracle's);
- the lesion-presence threshold when lesion-free images are given (the batch must record presence scores);
- with the radiologist's BI-RADS: a logistic rule on (reader category, BreastCADx logit), its threshold set for the
  reader's own sensitivity, reported against the reader alone.
Nothing changes until a profile is passed with --site.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.calibration import (
    apply_calibration,
    expected_calibration_error,
    fit_platt,
    fit_platt_toward_identity,
    logit,
)
from BreastCADxLib.analysis.site import (
    READER_BIOPSY_LEVEL,
    SITE_FILE,
    SITE_SCHEMA,
    calibration_for,
    combined,
    content_sha256,
    reader_level,
)
from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.io.atomic import DIR_MODE
from BreastCADxLib.results import site_fine_tune

MIN_PER_CLASS = 10  # lesions of each class (benign, malignant) a calibration or a threshold needs
MIN_LESION_FREE = 10  # lesion-free images the presence threshold needs
FOLDS = 5
LABELS = {"benign": 0, "malignant": 1, "normal": None, "0": 0, "1": 1}
CALIBRATIONS = ("none", "platt", "isotonic", "platt_toward_identity")
CHOSEN_BY_CV = ("none", "platt", "isotonic")  # what `--calibration cv` chooses among
CALIBRATION_RULES = ("platt_toward_identity", "cv")
PLATT_PRIOR = 10.0  # chosen on draws 100-119 of the three held-out sites (the benchmark reports draws 0-19)
P_CLIP = (0.002, 0.998)  # an isotonic step never says 0 or 1


class AdaptError(BreastCADxError):
    """The cases cannot support what adapt was asked to fit."""

    code = "adapt_refused"


@dataclass
class SiteCase:
    case_id: str
    label: int | None  # 1 malignant, 0 benign, None lesion-free
    group: str
    probability: float | None  # the model set's, where the batch classified a lesion
    mask_origin: str | None
    presence_score: float | None
    reader: float | None  # the radiologist's category on analysis.site.READER_LEVELS
    inputs_sha256: str | None = None  # what the batch analysed (its result.json), for fine-tune's check


# -- fitting: arrays in, JSON-able dicts out (the benchmark calls these too) ----------------------------------------
def _clip(p):
    return np.clip(np.asarray(p, float), *P_CLIP)


def fit_calibration(method: str, p: np.ndarray, y: np.ndarray) -> dict:
    if method == "none":
        return {"kind": "identity"}
    if method == "platt":
        return fit_platt(_clip(p), y)
    if method == "platt_toward_identity":
        return fit_platt_toward_identity(_clip(p), y, PLATT_PRIOR)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=P_CLIP[0], y_max=P_CLIP[1]).fit(p, y)
    return {"kind": "isotonic", "x": [float(v) for v in iso.X_thresholds_],
            "y": [float(v) for v in iso.y_thresholds_]}


def log_loss(p, y) -> float:
    p = _clip(p)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def group_folds(y: np.ndarray, groups: np.ndarray, k: int = FOLDS, seed: int = 0) -> list[np.ndarray]:
    """Test indices of k folds, whole groups per fold, stratified by label where the groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = max(2, min(k, len(np.unique(groups)), int(min(np.bincount(y.astype(int), minlength=2)))))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in cv.split(np.zeros(len(y)), y, groups)]


def cv_log_losses(p: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict:
    """Each calibration method's cross-validated log loss (folds by group)."""
    losses = {}
    folds = group_folds(y, groups, seed=seed)
    for method in CALIBRATIONS:
        out = np.empty(len(p))
        for test in folds:
            train = np.setdiff1d(np.arange(len(p)), test)
            if len(set(y[train].tolist())) < 2:
                out[test] = p[test]
                continue
            out[test] = apply_calibration(fit_calibration(method, p[train], y[train]), p[test])
        losses[method] = log_loss(out, y)
    return losses


def choose_calibration(p: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0,
                       rule: str = "platt_toward_identity", losses: dict | None = None) -> str:
    """The rule's method; for "cv" the one of CHOSEN_BY_CV with the lowest cross-validated log loss (`losses`
    when already computed on these cases)."""
    if rule not in CALIBRATION_RULES:
        raise ValueError(f"calibration rule must be one of {CALIBRATION_RULES}")
    if rule != "cv":
        return rule
    losses = losses or cv_log_losses(p, y, groups, seed)
    return min(CHOSEN_BY_CV, key=losses.get)


def threshold_at_sensitivity(p_malignant: np.ndarray, sensitivity: float) -> float:
    """The highest probability threshold that keeps `sensitivity` of these cancers (with fewer than
    1 / (1 - sensitivity) of them: the lowest-scoring cancer)."""
    s = np.sort(np.asarray(p_malignant, float))
    return float(s[min(int(np.floor((1 - sensitivity) * len(s))), len(s) - 1)])


N_BOOT = 1000


def _with_ci(values: np.ndarray, y: np.ndarray, groups: np.ndarray, stat, n_boot: int = N_BOOT) -> list[float]:
    """[value, 95 % CI low, high] (patient bootstrap; n_boot 0: the value alone, CI NaN)."""
    from BreastCADxLib.results.evaluation import group_bootstrap

    if not n_boot:
        return [float(stat(values, y)), float("nan"), float("nan")]
    lo, hi = group_bootstrap(groups, lambda idx: stat(values[idx], y[idx]), n=n_boot)
    return [float(stat(values, y)), lo, hi]


def _auc(p, y):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, p) if len(set(np.asarray(y).tolist())) == 2 else np.nan


def _sens(pos, y):
    return float(pos[y == 1].mean()) if (y == 1).any() else np.nan


def _spec(pos, y):
    return float(1 - pos[y == 0].mean()) if (y == 0).any() else np.nan


def fit_origin(p: np.ndarray, y: np.ndarray, groups: np.ndarray, sensitivity: float, seed: int = 0,
               n_boot: int = N_BOOT, rule: str = "platt_toward_identity") -> dict:
    """Calibration + biopsy threshold for one mask origin, with nested-CV estimates (before / after, 95 % CIs)."""
    losses = cv_log_losses(p, y, groups, seed)  # for the record, and the "cv" rule's choice
    method = choose_calibration(p, y, groups, seed, rule, losses)
    cal = fit_calibration(method, p, y)
    p_all = apply_calibration(cal, p)
    oof, oof_pos = np.empty(len(p)), np.zeros(len(p), bool)
    for test in group_folds(y, groups, seed=seed + 1):
        train = np.setdiff1d(np.arange(len(p)), test)
        m = choose_calibration(p[train], y[train], groups[train], seed, rule)
        c = fit_calibration(m, p[train], y[train])
        oof[test] = apply_calibration(c, p[test])
        t = threshold_at_sensitivity(apply_calibration(c, p[train])[y[train] == 1], sensitivity)
        oof_pos[test] = oof[test] >= t
    before_pos = p > 0.02  # the set's own "4A or above"
    ece = expected_calibration_error
    est = {"before": {"auc": _with_ci(p, y, groups, _auc, n_boot), "ece": _with_ci(p, y, groups, ece, n_boot),
                      "sensitivity_4a": _with_ci(before_pos, y, groups, _sens, n_boot),
                      "specificity_4a": _with_ci(before_pos, y, groups, _spec, n_boot)},
           "after": {"auc": _with_ci(oof, y, groups, _auc, n_boot), "ece": _with_ci(oof, y, groups, ece, n_boot),
                     "sensitivity_at_threshold": _with_ci(oof_pos, y, groups, _sens, n_boot),
                     "specificity_at_threshold": _with_ci(oof_pos, y, groups, _spec, n_boot)}}
    return {"method": method, "cv_log_loss": losses, "fit": cal, "n": int(len(y)), "malignant": int(y.sum()),
            "threshold": threshold_at_sensitivity(p_all[y == 1], sensitivity), "estimates": est}


def found(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Images the default path finds a lesion in: a candidate region (score > 0) reaching the threshold."""
    return (scores > 0) & (scores >= threshold)


def fit_presence(score_lesion: np.ndarray, score_free: np.ndarray, found_share: float) -> dict:
    """The highest presence threshold that still finds `found_share` of the site's lesions (a lesion image
    without any candidate region is missed at every threshold: then the lowest candidate's score)."""
    s = np.sort(score_lesion)
    t = float(s[int(np.floor((1 - found_share) * len(s)))])
    if t <= 0:
        t = float(s[s > 0].min()) if (s > 0).any() else 1.0
    return {"threshold": t, "found_share": found_share, "lesions": int(len(s)), "lesion_free": int(len(score_free)),
            "lesions_found": float(found(score_lesion, t).mean()),
            "false_lesion_rate": float(found(score_free, t).mean())}


def fit_reader_rule(level: np.ndarray, p: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
                    seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """Logistic rule on (reader level, BreastCADx logit); its threshold keeps the reader's own sensitivity."""
    from sklearn.linear_model import LogisticRegression

    def fit(idx):
        lr = LogisticRegression(C=1.0, max_iter=1000).fit(np.column_stack([level[idx], logit(p[idx])]), y[idx])
        rule = {"coef_reader": float(lr.coef_[0, 0]), "coef_logit": float(lr.coef_[0, 1]),
                "intercept": float(lr.intercept_[0])}
        target = float((level[idx][y[idx] == 1] >= READER_BIOPSY_LEVEL).mean())
        rule["threshold"] = threshold_at_sensitivity(combined(rule, level[idx], p[idx])[y[idx] == 1], target)
        rule["reader_sensitivity"] = target
        return rule

    rule = fit(np.arange(len(y)))
    if groups is not None:
        pos = np.zeros(len(y), bool)
        for test in group_folds(y, groups, seed=seed + 2):
            r = fit(np.setdiff1d(np.arange(len(y)), test))
            pos[test] = combined(r, level[test], p[test]) >= r["threshold"]
        reader_pos = level >= READER_BIOPSY_LEVEL
        rule["estimates"] = {
            "reader": {"sensitivity": _with_ci(reader_pos, y, groups, _sens, n_boot),
                       "specificity": _with_ci(reader_pos, y, groups, _spec, n_boot)},
            "combined": {"sensitivity": _with_ci(pos, y, groups, _sens, n_boot),
                         "specificity": _with_ci(pos, y, groups, _spec, n_boot)}}
    return rule


# -- reading a finished batch ---------------------------------------------------------------------------------------
def read_site_cases(results: Path, labels: Path) -> tuple[list[SiteCase], dict]:
    """The labelled cases of a batch (results.csv + each case's result.json) and the model set they were made with."""
    from BreastCADxLib.results.evaluation import _read_csv

    rows = {r["case_id"]: r for r in _read_csv(results, ("case_id", "status", "malignancy_probability"),
                                                "results file")}
    cases, made_with, not_analysed = [], set(), {}
    for n, r in enumerate(_read_csv(labels, ("case_id", "label"), "labels file"), start=2):
        label = (r["label"] or "").strip().lower()
        if label not in LABELS:
            raise AdaptError(f"line {n}: label {label[:20]!r} must be benign, malignant or normal", labels)
        reader = (r.get("birads") or "").strip()
        level = reader_level(reader, labels) if reader else None
        row = rows.get((r["case_id"] or "").strip())
        if row is None or row["status"] != "ok":  # not analysed: counted in the card by cause, not fitted
            cause = "no result" if row is None else row.get("error_code") or "error"
            not_analysed[cause] = not_analysed.get(cause, 0) + 1
            continue
        payload = _case_result(results.parent / row["case_id"])
        prov = payload.get("provenance", {})
        if prov.get("site"):
            raise AdaptError("this batch ran with a site profile (--site); adapt needs a batch without one",
                             results.parent / row["case_id"])
        made_with.add((prov.get("model_set"), payload.get("batch", {}).get("models_sha256")))
        p = row["malignancy_probability"]
        cases.append(SiteCase(row["case_id"], LABELS[label], (r.get("group") or "").strip() or row["case_id"],
                              float(p) if p else None, prov.get("mask_origin"), payload.get("presence_score"), level,
                              payload.get("batch", {}).get("inputs_sha256")))
    if len(made_with) > 1:
        raise AdaptError(f"the cases were analysed with different model sets {sorted(map(str, made_with))}", results)
    if not cases:
        raise AdaptError("no labelled case of the labels file was analysed in this batch", labels)
    model_set, sha = made_with.pop()
    return cases, {"id": model_set, "sha256": sha, "not_analysed": not_analysed}


def _case_result(folder: Path) -> dict:
    from BreastCADxLib.results.case_files import NAMES

    try:
        return json.loads((folder / NAMES["result"]).read_text())
    except (OSError, ValueError) as e:
        raise AdaptError(f"the case's result.json cannot be read ({e.__class__.__name__}); is this the "
                         "results.csv of a finished batch?", folder) from None


# -- the profile ----------------------------------------------------------------------------------------------------
def fit_profile(cases: list[SiteCase], sensitivity: float = 0.98, presence_found: float = 0.95,
                use_reader: bool = True, seed: int = 0, n_boot: int = N_BOOT,
                calibration: str = "platt_toward_identity") -> tuple[dict, list[str]]:
    """The fitted parts of a profile and what was left out (and why); refuses when nothing can be fitted."""
    body: dict = {"calibration": {}, "estimates": {}}
    skipped: list[str] = []
    lesions = [c for c in cases if c.label is not None and c.probability is not None]
    for origin in ("auto", "user"):
        sub = [c for c in lesions if (c.mask_origin == "auto") == (origin == "auto")]
        y = np.array([c.label for c in sub], int)
        n_mal, n_ben = int(y.sum()), int(len(y) - y.sum())
        if not sub:
            continue
        if min(n_mal, n_ben) < MIN_PER_CLASS:
            skipped.append(f"{origin} outlines: {n_mal} malignant and {n_ben} benign classified lesions; a calibration"
                           f" and a biopsy threshold need at least {MIN_PER_CLASS} of each (with fewer, the fit "
                           "follows a handful of cases and its threshold cannot be checked)")
            continue
        p = np.array([c.probability for c in sub])
        groups = np.array([c.group for c in sub])
        fitted = fit_origin(p, y, groups, sensitivity, seed, n_boot, calibration)
        body["calibration"][origin] = {"method": fitted["method"], "fit": fitted["fit"], "n": fitted["n"],
                                       "malignant": fitted["malignant"]}
        body["estimates"][origin] = {"cv_log_loss": fitted["cv_log_loss"], **fitted["estimates"]}
        body.setdefault("biopsy", {"sensitivity": sensitivity, "threshold": fitted["threshold"],
                                   "fitted_on": origin})
    if not body["calibration"]:
        raise AdaptError("too few cases to adapt: " + "; ".join(skipped or ["no classified benign or malignant "
                                                                          "lesion"]))
    scored = [c for c in cases if c.presence_score is not None]
    free = np.array([c.presence_score for c in scored if c.label is None])
    with_lesion = np.array([c.presence_score for c in scored if c.label is not None])
    if len(free) >= MIN_LESION_FREE and len(with_lesion) >= 2 * MIN_PER_CLASS:
        body["presence"] = fit_presence(with_lesion, free, presence_found)
    elif any(c.label is None for c in cases):
        skipped.append(f"presence threshold: {len(free)} lesion-free and {len(with_lesion)} lesion images with a "
                       f"presence score; it needs at least {MIN_LESION_FREE} and {2 * MIN_PER_CLASS} (batches "
                       "before this version record no presence score)")
    read = [c for c in lesions if c.reader is not None]
    if use_reader and read:
        y = np.array([c.label for c in read], int)
        if min(int(y.sum()), int(len(y) - y.sum())) < MIN_PER_CLASS:
            skipped.append(f"reader rule: {len(read)} lesions with the radiologist's BI-RADS ({int(y.sum())} "
                           f"malignant); it needs at least {MIN_PER_CLASS} of each class")
        else:
            origin = body["biopsy"]["fitted_on"]
            p = np.array([site_probability(body, c) for c in read])
            body["reader_rule"] = fit_reader_rule(np.array([c.reader for c in read]), p, y,
                                                  np.array([c.group for c in read]), seed, n_boot)
            body["reader_rule"]["fitted_on"] = origin
    return body, skipped


def site_probability(body: dict, case: SiteCase) -> float:
    """A case's probability through the profile's calibration for its outline's origin."""
    cal = calibration_for(body["calibration"], case.mask_origin or "auto")
    return float(apply_calibration(cal["fit"], [case.probability])[0])


def adapt(results: Path, labels: Path, out: Path, sensitivity: float = 0.98, presence_found: float = 0.95,
          name: str | None = None, command: str | None = None, calibration: str = "platt_toward_identity",
          fine_tune: site_fine_tune.FineTuner | None = None) -> dict:
    """Fit and write a profile into `out` (a new folder: an existing one is never replaced). Returns site.json.
    fine_tune (train.fine_tune.SiteFineTune): the set is fine-tuned on the labelled lesions first and, where it is
    kept, the profile is fitted on that set's out-of-fold probabilities and carries it (results.site_fine_tune)."""
    if os.path.lexists(out) and not (fine_tune is not None and site_fine_tune.in_progress(out)):
        raise AdaptError("exists: a site profile is never replaced; choose a new folder", out)
    if not 0.5 <= sensitivity < 1.0 or not 0.5 <= presence_found < 1.0:
        raise AdaptError(f"--sensitivity {sensitivity} and --presence-found {presence_found} must lie in [0.5, 1)")
    cases, model_set = read_site_cases(Path(results), Path(labels))
    not_analysed = model_set.pop("not_analysed")
    if model_set["id"] is None or model_set["sha256"] is None:
        raise AdaptError("the batch's results do not name their model set (made by an older version?)", results)
    if calibration not in CALIBRATION_RULES:
        raise AdaptError(f"--calibration must be one of {', '.join(CALIBRATION_RULES)}")
    tuned = None
    if fine_tune is not None:
        y = [c.label for c in cases if c.label is not None and c.probability is not None]
        if min(sum(y), len(y) - sum(y)) < MIN_PER_CLASS:  # before hours of training, not after
            raise AdaptError(f"too few cases to fine-tune: {sum(y)} malignant and {len(y) - sum(y)} benign "
                             f"classified lesions; the fine-tune and the profile fitted on it need at least "
                             f"{MIN_PER_CLASS} of each")
        tuned = fine_tune(cases, Path(results), out, name or out.name, model_set, AdaptError)
        cases = tuned["cases"]
        tuned["record"]["from"] = dict(model_set)
        if tuned["record"]["kept"]:
            from BreastCADxLib.analysis.registry import model_set_fingerprint, model_set_info

            model_set = {"id": model_set_info(str(tuned["folder"]))["id"],
                         "sha256": model_set_fingerprint(str(tuned["folder"]))}
    body, skipped = fit_profile(cases, sensitivity, presence_found, calibration=calibration)
    if tuned is not None:
        body["fine_tune"] = tuned["record"]
    n_lesion = sum(c.label is not None for c in cases)
    body = {"schema": SITE_SCHEMA, "id": name or out.name, "model_set": model_set,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command or " ".join(["breastcadx", *sys.argv[1:]]),
            "cases": {"analysed": len(cases), "lesions": n_lesion, "malignant": sum(c.label == 1 for c in cases),
                      "lesion_free": sum(c.label is None for c in cases),
                      "with_reader_birads": sum(c.reader is not None for c in cases),
                      "patients": len({c.group for c in cases}), "labelled_not_analysed": not_analysed},
            **body, "not_fitted": skipped}
    card = card_text(body)
    body["files"] = {"card.md": hashlib.sha256(card.encode()).hexdigest()}
    if tuned is not None:
        body["files"].update(site_fine_tune.record_sha256(tuned))
    body["content_sha256"] = content_sha256(body)
    if tuned is not None:  # written into `out`, where the run was resumable; site.json last
        site_fine_tune.install(tuned, out, {"card.md": card, SITE_FILE: json.dumps(body, indent=1) + "\n"})
        return body
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        (tmp / "card.md").write_text(card, encoding="utf-8")
        (tmp / SITE_FILE).write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        os.chmod(tmp, DIR_MODE)  # mkdtemp makes it owner-only
        if os.path.lexists(out):
            raise AdaptError("exists: a site profile is never replaced; choose a new folder", out)
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return body


def _fmt(v: list[float]) -> str:
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def card_text(body: dict) -> str:
    c = body["cases"]
    lines = [f"# Site profile `{body['id']}`", "",
             f"Adapts the model set `{body['model_set']['id']}` (manifest SHA256 {body['model_set']['sha256']}).",
             f"Made {body['created']} by `{body['command']}`.", "",
             f"Cases: {c['analysed']} analysed ({c['patients']} patients): {c['lesions']} lesions, {c['malignant']} "
             f"malignant, {c['lesion_free']} lesion-free; {c['with_reader_birads']} with the radiologist's BI-RADS."
             + (" Labelled but not analysed (left out of every fit): " + ", ".join(
                 f"{n} x {k}" for k, n in c["labelled_not_analysed"].items()) + "." if c["labelled_not_analysed"]
                else ""),
             "", "Estimates by nested cross-validation (folds by patient), 95 % CIs by patient bootstrap:", "",
             "| outlines | method | n (malignant) | AUC before | AUC after | ECE before | ECE after | sensitivity / "
             "specificity at 4A before | at the site threshold after |", "|---|---|---|---|---|---|---|---|---|"]
    for origin, cal in body["calibration"].items():
        e = body["estimates"][origin]
        b, a = e["before"], e["after"]
        lines.append(f"| {origin} | {cal['method']} | {cal['n']} ({cal['malignant']}) | {_fmt(b['auc'])} | "
                     f"{_fmt(a['auc'])} | {_fmt(b['ece'])} | {_fmt(a['ece'])} | {b['sensitivity_4a'][0]:.2f} / "
                     f"{b['specificity_4a'][0]:.2f} | {a['sensitivity_at_threshold'][0]:.2f} / "
                     f"{a['specificity_at_threshold'][0]:.2f} |")
    bio = body["biopsy"]
    lines += ["", f"Biopsy threshold: {100 * bio['threshold']:.2f} % (asked sensitivity {bio['sensitivity']:.2f}; "
                  f"fitted on {bio['fitted_on']} outlines)."]
    if "presence" in body:
        pr = body["presence"]
        lines.append(f"Presence threshold: {pr['threshold']:.3f} (finds {pr['lesions_found']:.2f} of {pr['lesions']} "
                     f"lesions; false lesions on {pr['false_lesion_rate']:.2f} of {pr['lesion_free']} lesion-free "
                     "images, on the fitting cases).")
    if "reader_rule" in body:
        e = body["reader_rule"]["estimates"]
        lines.append(f"Reader + BreastCADx rule (cross-validated): sensitivity {_fmt(e['combined']['sensitivity'])}, "
                     f"specificity {_fmt(e['combined']['specificity'])}; the reader alone (BI-RADS >= 4A): "
                     f"{_fmt(e['reader']['sensitivity'])}, {_fmt(e['reader']['specificity'])}.")
    for s in body["not_fitted"]:
        lines.append(f"Not fitted: {s}.")
    lines += site_fine_tune.card_lines(body)
    lines += ["", "Research use only. The profile changes nothing until it is passed with `--site`."]
    return "\n".join(lines) + "\n"
