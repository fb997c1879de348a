"""Score a finished `breastcadx batch` against biopsy results: how the models do at *this* site.

A hospital checks the models on its own cases before relying on them (the models were trained at two hospitals;
elsewhere they may rank and calibrate worse). Every case counts: one the product did not classify is scored 0.5
(neither way), as in the project's own benchmarks; the CIs resample whole patients when a group column is given.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from BreastCADxLib.analysis.calibration import INCOMPLETE, birads_suggestion, expected_calibration_error
from BreastCADxLib.errors import BreastCADxError

LABELS = {"benign": 0, "malignant": 1, "0": 0, "1": 1}
BIOPSY_CATEGORIES = {"4A", "4B", "4C", "5"}  # the suggestion "4A or above": > 2 % malignancy probability
N_BOOT = 2000


def group_bootstrap(groups: np.ndarray, stat, n: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """95 % percentile CI of stat(index array), resampling whole groups (patients, duplicate groups)."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in uniq}
    vals = []
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.choice(uniq, len(uniq))])
        v = stat(idx)
        if np.isfinite(v):
            vals.append(v)
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks (0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def specificity_at(y: np.ndarray, p: np.ndarray, sensitivity: float) -> float:
    """The best specificity among thresholds whose sensitivity reaches `sensitivity`."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    return float(1 - fpr[tpr >= sensitivity - 1e-12].min())


def high_sensitivity_specificity(y: np.ndarray, p: np.ndarray, low: float = 0.90, steps: int = 101) -> float:
    """The mean specificity over sensitivities `low`..1 (a partial AUC over that band, divided by its width): the
    region a biopsy decision works in, less noisy than one point of it. specificity_at over the band, one ROC."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    return float(np.mean([1 - fpr[tpr >= s - 1e-12].min() for s in np.linspace(low, 1.0, steps)]))


def auc_ci(y: np.ndarray, p: np.ndarray, groups: np.ndarray, n: int = N_BOOT) -> dict:
    def stat(idx):
        return roc_auc_score(y[idx], p[idx]) if len(set(y[idx].tolist())) == 2 else np.nan

    return {"auc": float(roc_auc_score(y, p)), "ci95": group_bootstrap(groups, stat, n), "n": int(len(y)),
            "malignant": int(y.sum())}


def _read_csv(path: Path, needed: tuple[str, ...], what: str) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BreastCADxError(f"{what} cannot be read ({e})", path) from None
    if not rows or any(c not in rows[0] for c in needed):
        raise BreastCADxError(f"{what} needs the columns {','.join(needed)}", path)
    return rows


def read_labels(path: Path) -> dict[str, tuple[int, str]]:
    """case_id -> (1 malignant / 0 benign, group); group = the `group` column (e.g. the patient), else the case."""
    out = {}
    for n, r in enumerate(_read_csv(path, ("case_id", "label"), "labels file"), start=2):
        label = (r["label"] or "").strip().lower()
        if label not in LABELS:
            raise BreastCADxError(f"line {n}: label {label[:20]!r} must be benign or malignant (or 0 / 1)", path)
        case = (r["case_id"] or "").strip()
        if case in out:
            raise BreastCADxError(f"line {n}: case_id {case[:40]!r} appears twice", path)
        out[case] = (LABELS[label], (r.get("group") or "").strip() or case)
    return out


def evaluate(results: Path, labels: Path, n_boot: int = N_BOOT) -> dict:
    """AUC with every case and over the classified ones, ECE, sensitivity / specificity at the suggestion "4A or
    above" and at 50 %, why cases were not classified, and the flags given."""
    every = _read_csv(results, ("case_id", "status", "malignancy_probability", "error", "flags"), "results file")
    truth = read_labels(labels)
    rows = [r for r in every if r["case_id"] in truth]
    unlabelled = len({r["case_id"] for r in every} - truth.keys())
    y = np.array([truth[r["case_id"]][0] for r in rows])
    if len(set(y.tolist())) < 2:
        raise BreastCADxError(f"{len(rows)} cases of the results have a label; at least one benign and one "
                              "malignant are needed", labels)
    groups = np.array([truth[r["case_id"]][1] for r in rows])
    done = np.array([r["status"] == "ok" and r["malignancy_probability"] != "" for r in rows])
    p = np.array([float(r["malignancy_probability"]) if d else 0.5 for r, d in zip(rows, done)])
    report: dict = {"results": str(results), "labels": str(labels), "cases": len(rows), "malignant": int(y.sum()),
                    "classified": int(done.sum()), "results_without_label": unlabelled,
                    "labels_without_result": len(truth.keys() - {r["case_id"] for r in rows}),
                    "auc_all": auc_ci(y, p, groups, n_boot)}
    if len(set(y[done].tolist())) == 2:
        report["auc_classified"] = auc_ci(y[done], p[done], groups[done], n_boot)
        report["ece_classified"] = expected_calibration_error(p[done], y[done])
        report["mean_probability_classified"] = float(p[done].mean())
        report["malignant_share_classified"] = float(y[done].mean())
    # the product's own suggestion where the batch gave one (0, incomplete: referred for review, as a biopsy-level
    # category), else the one the probability gives
    given = [r.get("birads_suggestion") or (birads_suggestion(v) if d else "") for r, v, d in zip(rows, p, done)]
    biopsy = np.array([g in BIOPSY_CATEGORIES or g == INCOMPLETE for g in given]) & done
    for name, positive in (("suggestion_4a_or_above", biopsy), ("probability_0_5", (p >= 0.5) & done)):
        report[name] = {"sensitivity": float(positive[y == 1].mean()),
                        "specificity": float(1 - positive[y == 0].mean())}
    report["not_classified"] = dict(Counter((r.get("error_code") or "error") if r["status"] != "ok" else
                                            "no_lesion_found" for r, d in zip(rows, done) if not d))
    report["flags"] = dict(Counter(code.strip() for r in rows for code in (r["flags"] or "").split(";")
                                   if code.strip()))
    return report


def _ci(a: dict) -> str:
    return f"{a['auc']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]"


def to_markdown(report: dict) -> str:
    lines = ["| cases (malignant) | classified | AUC, every case (not classified = 0.5) [95 % CI] | AUC, classified | "
             "ECE, classified |", "|---|---|---|---|---|",
             f"| {report['cases']} ({report['malignant']}) | {report['classified']} | {_ci(report['auc_all'])} | "
             + (f"{_ci(report['auc_classified'])} | {report['ece_classified']:.3f} |" if "auc_classified" in report
                else "n/a | n/a |"), ""]
    if "mean_probability_classified" in report:
        lines.append(f"Mean malignancy probability {report['mean_probability_classified']:.3f} against a malignant "
                     f"share of {report['malignant_share_classified']:.3f} (classified cases).")
    for key, name in (("suggestion_4a_or_above", "suggestion 4A or above (> 2 %)"), ("probability_0_5", "p >= 0.5")):
        s = report[key]
        lines.append(f"At {name}: sensitivity {s['sensitivity']:.2f}, specificity {s['specificity']:.2f} "
                     "(not classified counts as negative).")
    nc = report["not_classified"]
    lines.append("Not classified: " + ("; ".join(f"{v} x {k}" for k, v in sorted(nc.items(), key=lambda t: -t[1]))
                                       or "none") + ".")
    lines.append("Flags: " + ("; ".join(f"{k} {v}" for k, v in sorted(report["flags"].items())) or "none") + ".")
    if report["results_without_label"] or report["labels_without_result"]:
        lines.append(f"Left out: {report['results_without_label']} results without a label, "
                     f"{report['labels_without_result']} labels without a result.")
    return "\n".join(lines) + "\n"
