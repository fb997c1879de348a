"""Validate the lexicon categories against biopsy truth at both hospitals, and our BI-RADS-style suggestion
against the senior ultrasonographer's category (BUS-BRA L5).

    python -m benchmarks.lexicon      # -> benchmarks/results/lexicon.{md,json}

Association of each category with malignancy (odds ratio with Woolf 95 % CI, PPV or NPV with Wilson 95 % CI),
beside the published lexicon values (Hong et al., AJR 2005;184:1260-5: 403 solid masses, 35 % malignant).
Two settings, both on reference outlines: `val` = the val split of each site, cut-points from both sites' train
split (the shipped ones); `unseen` = every non-test row of a site, cut-points chosen on the other site's train
split alone (how the categories transfer). A category whose association runs the wrong way is marked.
Agreement with the reader: the shipped three-site classifier's suggestion on the L5 test split (read for this final
report only), categories 4A-4C pooled as 4 since the reader used 2, 3, 4, 5; weighted kappa.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from benchmarks.machine import machine
from BreastCADxLib.analysis.lexicon import categories, thresholds
from training.data import SITES
from training.lexicon_thresholds import choose, rows

OUT = Path("benchmarks/results")
# sign -> (feature, the categories that show it, True if the lexicon calls it a malignant sign); read from the
# categories the product reports (lexicon.categories), so what is validated is what the reader sees
SIGNS = {
    "irregular shape": ("shape", ("irregular",), True),
    "not parallel": ("orientation", ("not parallel",), True),
    "not circumscribed margin": ("margin", ("not circumscribed",), True),
    "hypoechoic": ("echo pattern", ("hypoechoic",), True),
    "heterogeneous": ("echo pattern", ("heterogeneous",), True),
    "posterior shadowing": ("posterior features", ("shadowing",), True),
    "oval or round shape": ("shape", ("oval", "round"), False),
    "parallel": ("orientation", ("parallel",), False),
    "circumscribed margin": ("margin", ("circumscribed",), False),
    "anechoic": ("echo pattern", ("anechoic",), False),
    "posterior enhancement": ("posterior features", ("enhancement",), False),
}
PUBLISHED = {"irregular shape": "PPV 62 %", "not parallel": "PPV 69 %", "not circumscribed margin":
             "spiculated PPV 86 %", "oval or round shape": "NPV 84 % (oval)", "parallel": "NPV 78 %",
             "circumscribed margin": "NPV 90 %"}


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def association(sign: np.ndarray, malignant: np.ndarray, malignant_sign: bool) -> dict:
    a = int((sign & malignant).sum())  # sign, malignant
    b = int((sign & ~malignant).sum())
    c = int((~sign & malignant).sum())
    d = int((~sign & ~malignant).sum())
    odds = ((a + 0.5) * (d + 0.5)) / ((b + 0.5) * (c + 0.5))
    se = np.sqrt(1 / (a + 0.5) + 1 / (b + 0.5) + 1 / (c + 0.5) + 1 / (d + 0.5))
    n = a + b
    k = a if malignant_sign else b  # PPV for a malignant sign, NPV (benign among sign) for a benign one
    lo, hi = wilson(k, n)
    wrong = (odds < 1) if malignant_sign else (odds > 1)
    return {"n_sign": n, "n": a + b + c + d, "odds_ratio": odds, "or_ci": [odds * np.exp(-1.96 * se),
            odds * np.exp(1.96 * se)], "predictive_value": k / n if n else float("nan"), "pv_ci": [lo, hi],
            "pv_kind": "PPV" if malignant_sign else "NPV", "wrong_direction": bool(wrong)}


def category_rows(d: dict[str, np.ndarray], t: dict) -> list[dict[str, str]]:
    n = len(next(iter(d.values())))
    return [{i.feature: i.category for i in categories({k: float(v[r]) for k, v in d.items()}, None, t)}
            for r in range(n)]


def shows(cats: list[dict[str, str]], sign: str) -> np.ndarray:
    feature, values, _ = SIGNS[sign]
    return np.array([c[feature].split(":")[0] in values for c in cats])


def table(d: dict[str, np.ndarray], malignant: np.ndarray, t: dict) -> dict:
    cats = category_rows(d, t)
    return {name: association(shows(cats, name), malignant, mal) for name, (_, _, mal) in SIGNS.items()}


def calibration_text() -> str:
    """How the shipped probability is calibrated, in words (the card says)."""
    from BreastCADxLib.analysis.classifier import DEFAULT_CLASSIFIER
    from BreastCADxLib.analysis.registry import load_card

    if load_card(DEFAULT_CLASSIFIER).calibration.get("kind") == "identity":
        return ("with the fused score as it is (no calibration: one fitted at one hospital moved the other's "
                "probabilities the wrong way, `leave_site_out_fusion.md`)")
    return "calibrated for a hospital the model has not seen (Platt on leave-site-out predictions)"


def reader_agreement() -> dict:
    """Our suggestion vs the ultrasonographer's category on the L5 test split, per mask kind."""
    from benchmarks.operating_point import test_probabilities
    from BreastCADxLib.analysis.calibration import birads_suggestion

    out = {}
    for kind, name in (("reference outline", "busbra_l5__reference__test"),
                       ("automatic, lesion expected", "busbra_l5__expect__three-site__test")):
        p, malignant, reader = test_probabilities(name, "three-site")
        ours = [birads_suggestion(float(v)) for v in p]
        theirs = [str(int(b)) for b in reader]
        pooled = [b[0] if b.startswith("4") else b for b in ours]
        cats = ["2", "3", "4", "5"]
        m = np.array(malignant)
        ours_biopsy, reader_biopsy = np.isin(pooled, ["4", "5"]), np.isin(theirs, ["4", "5"])
        out[kind] = {
            "n": len(ours), "malignant": int(m.sum()),
            "ours_4a_or_above": {"sensitivity": float(ours_biopsy[m].mean()),
                                 "specificity": float((~ours_biopsy[~m]).mean())},
            "reader_4_or_above": {"sensitivity": float(reader_biopsy[m].mean()),
                                  "specificity": float((~reader_biopsy[~m]).mean())},
            "kappa_linear": float(cohen_kappa_score(pooled, theirs, labels=cats, weights="linear")),
            "kappa_biopsy": float(cohen_kappa_score([b in ("4", "5") for b in pooled],
                                                    [b in ("4", "5") for b in theirs])),
            "confusion_ours_rows_reader_cols": [[sum(o == r and t == c for o, t in zip(pooled, theirs))
                                                 for c in cats] for r in cats]}
    return out


def main() -> int:
    shipped = thresholds()
    res: dict = {"date": str(date.today()), "machine": machine(), "cut_points": shipped["cut"], "val": {},
                 "unseen": {}, "category_share_train": {}}
    d_train, m_train = rows(list(SITES), ("train",))
    train_cats = category_rows(d_train, shipped)
    res["category_share_train"] = {k: float(shows(train_cats, k).mean()) for k in SIGNS}
    for site in SITES:
        d, m = rows([site], ("val",))
        res["val"][site] = table(d, m, shipped)
        other = [s for s in SITES if s != site]
        t_other = choose(*rows(other, ("train",)))
        d_all, m_all = rows([site], ("train", "val"))
        res["unseen"][site] = table(d_all, m_all, t_other)
    res["reader_agreement_l5_test"] = reader_agreement()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lexicon.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# Lexicon categories against biopsy truth ({res['date']})", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores. Command: "
             "`python -m benchmarks.lexicon`. " + __doc__.split("\n\n")[2].replace("\n", " "), "",
             "OR: odds of malignancy with the category vs without it (95 % CI); PV: PPV for a malignant sign, NPV "
             "(share benign) for a benign sign, with 95 % CI and the number of lesions showing it. "
             "**WRONG WAY** marks an association against the lexicon.", ""]
    for setting, title in (("val", "val split, shipped cut-points"),
                           ("unseen", "a hospital unseen by the cut-points (all non-test rows)")):
        for site in SITES:
            lines += [f"## {site}: {title}", "", "| category | lesions | OR (95 % CI) | PV (95 % CI) | published |",
                      "|---|---|---|---|---|"]
            for name, r in res[setting][site].items():
                flag = " **WRONG WAY**" if r["wrong_direction"] else ""
                pv = (f"{r['pv_kind']} {100 * r['predictive_value']:.0f} % ({100 * r['pv_ci'][0]:.0f}-"
                      f"{100 * r['pv_ci'][1]:.0f})") if r["n_sign"] else "n/a (no lesion shows it)"
                lines.append(f"| {name} | {r['n_sign']}/{r['n']} | {r['odds_ratio']:.2f} ({r['or_ci'][0]:.2f}-"
                             f"{r['or_ci'][1]:.2f}){flag} | {pv} | {PUBLISHED.get(name, '')} |")
            lines.append("")
    lines += ["## Our BI-RADS-style suggestion vs the ultrasonographer (BUS-BRA L5 test split)", "",
              "| masks | lesions | weighted kappa (2/3/4/5) | kappa, biopsy (4-5) or not | ours >= 4A: sens / spec "
              "| reader >= 4: sens / spec |", "|---|---|---|---|---|---|"]
    for kind, r in res["reader_agreement_l5_test"].items():
        o, rd = r["ours_4a_or_above"], r["reader_4_or_above"]
        lines.append(f"| {kind} | {r['n']} ({r['malignant']} malignant) | {r['kappa_linear']:.2f} | "
                     f"{r['kappa_biopsy']:.2f} | {o['sensitivity']:.2f} / {o['specificity']:.2f} | "
                     f"{rd['sensitivity']:.2f} / {rd['specificity']:.2f} |")
    for kind, r in res["reader_agreement_l5_test"].items():
        lines += ["", f"Confusion, {kind} (rows: our suggestion, 4A-4C pooled; columns: the reader):", "",
                  "| ours \\ reader | 2 | 3 | 4 | 5 |", "|---|---|---|---|---|"]
        lines += [f"| {c} | " + " | ".join(str(v) for v in row) + " |"
                  for c, row in zip(["2", "3", "4", "5"], r["confusion_ours_rows_reader_cols"])]
    first_kind, first = next(iter(res["reader_agreement_l5_test"].items()))
    conf = np.array(first["confusion_ours_rows_reader_cols"])
    low = conf[:, :2].sum()  # the lesions the reader calls 2 or 3
    lines += ["", "Share of training lesions in each category (shipped cut-points): "
              + ", ".join(f"{k} {100 * v:.0f} %" for k, v in res["category_share_train"].items()) + ".", "",
              f"Why the suggestion and the reader disagree: {calibration_text()}, the model puts "
              f"{conf[2:, :2].sum()} of the {low} lesions "
              f"the reader calls 2 or 3 at 4A or above ({first_kind}), while the "
              f"reader calls {100 * low / conf.sum():.0f} % of lesions 2 or 3. The ranking is good (AUC on these "
              "rows in `leave_site_out.md`); the fixed ACR ranges make the category a poor biopsy rule here.", "",
              "The descriptor-only classifier (these descriptors as continuous values, L2 logistic regression) "
              "scored across hospitals is in `leave_site_out_design.md` (design `descriptors`)."]
    (OUT / "lexicon.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
