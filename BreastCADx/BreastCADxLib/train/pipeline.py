"""`breastcadx train MANIFEST --modality US|MG --out SET`: a classifier of located findings, in stages.

Stages, each resumable (its output is kept in SET/.work and reused on a rerun with the same inputs):
1. manifest: case_id, image, label (benign / malignant / normal), patient, and where the finding is: a mask file,
   a box "x0,y0,x1,y1" or a circle "cx,cy,r" in pixels (mini-MIAS's centre_col, centre_row, radius read as a
   circle; its `pathology` as the label). Normal rows and findings without a location are counted, not used.
2. features: per finding, the radiomics the shipped sets use and the frozen ImageNet Lite0 features of its crop;
   for ultrasound also of its outline redrawn as another hand would draw it (every fusion is fitted on both, as
   the shipped sets are; DESIGN).
3. cross-validation by patient (5 folds, whole patients per fold; or --folds site: one fold per site of the
   manifest's site column, each scored by models trained on the others): the fusion (radiomics z-scores + deep PCA,
   L2 logistic) against default pyradiomics + logistic regression on the same folds; AUC with a 95 % patient
   bootstrap CI, specificity at sensitivity 0.96, both out of fold (and per held-out site).
4. the image members (train/members.py; --members none leaves them out): the box-crop and whole-image CNNs
   (EfficientNet-Lite0 fine-tuned) trained on the same patient folds and fused with the features as the shipped
   design fuses them; each bundle takes them when, out of fold, the fusion with them ranks its outlines at least as
   well as the features alone (the findings' own outlines here, the segmenter's in stage 6); then trained on every
   finding.
5. the segmenter (train/segmenter.py; --segmenter-epochs 0 leaves it out): the set's own finding detector,
   trained on every image (findings' masks, circles or boxes; normal images empty), judged as a detector by
   patient folds through the product's path, its presence threshold chosen on those out-of-fold passes; then
   trained on every image, unless it found too few findings out of fold (--segmenter-min-found). With it,
   `analyze --model-set SET` finds the finding itself; without, the user's box (or outline) locates it (`--roi`).
6. automatic outlines (train/outlines.py; with a segmenter in the set): each finding outlined as the panel
   outlines it by a segmenter that never saw its image, classified out of fold (the default path's held-out
   figures); a second fusion fitted on reference and automatic outlines goes into the set for the segmenter's own
   masks when it passes the gate (no_worse: not lower in the high-sensitivity band, at most 0.01 of AUC), with
   the image members when they pass it too.
7. the set: the fusion refitted on every finding, written as the shipped bundles are (card through
   registry.save_card, arrays, OOD statistics, the deep explainer), the members and the segmenter with their
   cards, the set's input guard (a one-class model of its own images on the whole-image Lite0 embedding, so
   another modality's image is refused by it; with two or more sites also a bound, measured leave-site-out, on
   the distance from their principal subspace, where noise and patterns lie), modelset.json with the modality and
   data, and card.md with the figures; the fusion reloaded through the product's loader to check it reproduces
   the fit.

`--from SET` starts from a set this command made (same modality and features): its scalers and deep PCA (the
representation fitted on its larger data) are kept, and the logistic is fitted with its L2 pull towards that
set's coefficients instead of towards zero, so a few local cases adjust the set rather than replace it; its image
members start from the source's (fine-tuned, not from ImageNet). The cross-validation then also reports the
source set as it is (with its members) and the fit from scratch, on the same folds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.cards import FusionCard, GuardCard
from BreastCADxLib.errors import BreastCADxError

LABELS = {"benign": 0, "malignant": 1, "normal": None}
MODALITIES = ("US", "MG")
FOLDS = 5
SITE_FOLDS = "site"  # --folds site: leave one site out
PCA_DIMS = 32
C_FUSION = 0.1
# per modality: the lexicon descriptors among the named features, the logistic's C, and whether every fusion is
# also fitted on each finding's outline redrawn (train/augment.redrawn). US: the shipped three-site design
# (rad_all+desc+deep_mask, C 0.01, fitted on reference + perturbed outlines, chosen leave-site-out), so a set made
# here and the shipped sets share their features (--from the shipped sets); the redrawn rows measured leaving one
# site out (benchmarks/results/train_redrawn.md: mean held-out AUC 0.933 -> 0.941). MG: the mini-MIAS
# demonstration's (circles, not outlines: no redraw)
DESIGN = {"US": {"descriptors": True, "c": 0.01, "redrawn": True},
          "MG": {"descriptors": False, "c": C_FUSION, "redrawn": False}}


class TrainError(BreastCADxError):
    """A manifest, or findings, that cannot make the set asked for."""

    code = "train_refused"


@dataclass(frozen=True)
class Finding:
    case_id: str
    image: Path
    label: int
    patient: str
    mask: Path | None = None
    box: tuple[int, int, int, int] | None = None
    circle: tuple[float, float, float] | None = None
    site: str = ""
    citation: str = ""  # the data's citation (the manifest's optional column; every card of the set carries it)


@dataclass(frozen=True)
class Normal:
    """An image without a finding: the segmenter's lesion-free example, the guard's image of the modality."""

    image: Path
    patient: str
    site: str = ""
    citation: str = ""


def read_manifest(path: Path) -> tuple[list[Finding], dict, list[Normal]]:
    """The located, labelled findings of a training manifest, what was left out (counts), and the images
    without a finding (normal: with their patient, so a patient's lesion-free views stay in its fold)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TrainError(f"manifest cannot be read ({e.__class__.__name__})", path) from None
    if not rows or not {"case_id", "image"} <= set(rows[0]) or not ({"label", "pathology"} & set(rows[0])):
        raise TrainError("a training manifest needs case_id, image, label (or pathology) and patient", path)
    out, skipped, normals = [], {"normal": 0, "no_location": 0}, []
    for n, r in enumerate(rows, start=2):
        label = (r.get("label") or r.get("pathology") or "").strip().lower()
        if label not in LABELS:
            raise TrainError(f"line {n}: label {label[:20]!r} must be benign, malignant or normal", path)
        if LABELS[label] is None:  # not classified; an image of the modality for the input guard
            skipped["normal"] += 1
            normals.append(Normal(path.parent / r["image"].strip(), (r.get("patient") or r["case_id"]).strip(),
                                  (r.get("site") or "").strip(), (r.get("citation") or "").strip()))
            continue
        base = path.parent
        mask = (r.get("mask") or "").strip()
        box = (r.get("box") or "").strip()
        circle = (r.get("circle") or "").strip() or (
            ",".join(r[k] for k in ("centre_col", "centre_row", "radius")) if (r.get("radius") or "").strip() else "")
        if not (mask or box or circle):
            skipped["no_location"] += 1
            continue
        try:
            box_v = [float(v) for v in box.split(",")] if box else []
            circle_v = [float(v) for v in circle.split(",")] if circle else []
            if not np.isfinite(box_v + circle_v).all():
                raise ValueError("not finite")
            out.append(Finding(r["case_id"].strip(), base / r["image"].strip(), LABELS[label],
                               (r.get("patient") or r["case_id"]).strip(), base / mask if mask else None,
                               tuple(int(v) for v in box_v) or None, tuple(circle_v) or None,
                               (r.get("site") or "").strip(), (r.get("citation") or "").strip()))
        except ValueError:
            raise TrainError(f"line {n}: box must be x0,y0,x1,y1 and circle cx,cy,r (pixels)", path) from None
    if len({f.case_id for f in out}) != len(out):
        raise TrainError("case_id values must be unique", path)
    return out, skipped, normals


def data_record(rows: list, manifest: Path) -> dict:
    """What every card of the set says of its data: the sites its rows name (without a site column, the
    manifest's folder) and their citations, when given (data licences ask for them)."""
    sites = sorted({r.site for r in rows} - {""}) or [manifest.parent.name]
    citations = sorted({r.citation for r in rows} - {""})
    return {"sites": sites, **({"data_citations": citations} if citations else {})}


def finding_mask(f: Finding, image) -> np.ndarray:
    """The finding's mask on its image's grid: the mask file, else the circle or the box's inscribed ellipse."""
    from BreastCADxLib.analysis.segmentation import box_ellipse
    from BreastCADxLib.io import load_mask

    if f.mask is not None:
        return load_mask(f.mask, image)
    shape = image.array.shape
    if f.circle is not None:
        cx, cy, r = f.circle
        yy, xx = np.ogrid[:shape[1], :shape[2]]
        plane = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    else:
        plane = box_ellipse(shape[1:], f.box)
    return np.broadcast_to(plane, shape).copy()


def _digest(f: Finding, descriptors: bool = False) -> str:
    h = hashlib.sha256(json.dumps([f.case_id, str(f.label), f.box, f.circle] + (["descriptors"] if descriptors
                                                                              else [])).encode())
    for p in (f.image, f.mask):
        if p is not None:
            h.update(p.read_bytes())
    return h.hexdigest()


def on_grid(f: Finding):
    """The finding's image and mask on the product's working grid (large films are analysed reduced)."""
    from BreastCADxLib.analysis.preprocessing import working_grid
    from BreastCADxLib.io import load_image

    image = load_image(f.image)
    mask = finding_mask(f, image)
    grid = working_grid(image.array.shape)
    if grid.resized:  # large films: analysed on the working grid, as `analyze` does
        image, mask = image.with_array(grid.down(image.array)), grid.down(mask, is_mask=True)
    return image, mask


def feature_row(image, mask: np.ndarray, deep_model, descriptors: bool) -> dict:
    """What `analyze` computes of a finding on the working grid: radiomics (+ the lexicon descriptors) and the
    deep features of its crop."""
    from BreastCADxLib.analysis.pipeline import lesion_descriptors
    from BreastCADxLib.analysis.radiomics_features import extract

    rad = extract(image, mask)
    names = sorted(rad)
    if descriptors:
        desc = lesion_descriptors(image, mask)
        rad, names = {**rad, **desc}, names + list(desc)
    return {"names": names, "rad": np.array([rad[n] for n in names]), "deep": deep_model.features(image, mask)}


def features(findings: list[Finding], work: Path, device: str, deadline: float, say, descriptors: bool = False,
             redrawn: bool = False) -> dict:
    """Radiomics (+ the lexicon descriptors, as `analyze` computes them) and deep features of each finding, cached
    per finding in work/ (a rerun reuses them). redrawn: of its outline as another hand would draw it
    (train/augment.redrawn, cached in work/redrawn/)."""
    from BreastCADxLib.analysis.deep_features import get_deep_features
    from BreastCADxLib.train.augment import redrawn as redraw

    work = work / "redrawn" if redrawn else work
    work.mkdir(parents=True, exist_ok=True)
    deep_model = get_deep_features(device, "mask")
    rows, t0 = {}, time.perf_counter()
    for i, f in enumerate(findings):
        cache = work / f"{f.case_id}.npz"
        digest = _digest(f, descriptors) + ("-redrawn" if redrawn else "")
        if cache.is_file():
            z = np.load(cache, allow_pickle=False)
            if str(z["digest"]) == digest:
                rows[f.case_id] = {"names": list(z["names"]), "rad": z["rad"], "deep": z["deep"]}
                continue
        if time.time() > deadline:
            raise TrainError(f"--max-minutes reached in the features stage ({i} of {len(findings)} findings done; "
                             "run the same command again to go on)", work)
        image, mask = on_grid(f)
        if redrawn:
            mask = np.stack([redraw(plane, f.case_id) if plane.any() else plane for plane in mask])
        row = feature_row(image, mask, deep_model, descriptors)
        np.savez(cache, digest=digest, names=np.array(row["names"]), rad=row["rad"], deep=row["deep"])
        rows[f.case_id] = row
        done = i + 1
        left = (time.perf_counter() - t0) / done * (len(findings) - done)
        say(f"features{' (redrawn outlines)' if redrawn else ''}: {done}/{len(findings)} findings, about "
            f"{left / 60:.0f} min left")
    return rows


def _fusion(rad, deep, y, seed: int = 0, c: float = C_FUSION, sample_weight=None):
    """Fitted (scalers, PCA, logistic) of the fusion on these rows (classes balanced, or by `sample_weight`)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    rm, rs = rad.mean(0), rad.std(0) + 1e-8
    dm, ds = deep.mean(0), deep.std(0) + 1e-8
    pca = PCA(n_components=min(PCA_DIMS, len(y) - 1, deep.shape[1]), random_state=seed).fit((deep - dm) / ds)
    x = np.hstack([(rad - rm) / rs, pca.transform((deep - dm) / ds)])
    lr = LogisticRegression(C=c, max_iter=5000, class_weight=None if sample_weight is not None else "balanced"
                            ).fit(x, y, sample_weight=sample_weight)
    return {"rm": rm, "rs": rs, "dm": dm, "ds": ds, "pca": pca, "lr": lr}


@dataclass(frozen=True)
class _Projection:
    """A fitted PCA's projection, read from a set's arrays (what _fusion_proba and write_set use of a PCA)."""

    mean_: np.ndarray
    components_: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) @ self.components_.T


@dataclass(frozen=True)
class _Logistic:
    coef_: np.ndarray  # (1, features)
    intercept_: np.ndarray  # (1,)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        p = expit(x @ self.coef_[0] + self.intercept_[0])
        return np.column_stack([1 - p, p])


def source_fusion(source: str, modality: str, names: list[str], deep_dims: int) -> dict:
    """A verified set of this design (made by this command, or a shipped ultrasound set: the same features), as
    _fusion returns a fit with its named features in this training's order: --from's starting point."""
    from BreastCADxLib.analysis.registry import load_card, model_set_dir, model_set_info

    folder = model_set_dir(source)  # ModelError (exit 2) for an unknown name or folder
    info = model_set_info(source)
    if info["modality"] != modality:
        raise TrainError(f"--from: a {info['modality']} set, this training is {modality}", folder)
    card = load_card("lesion_cls_fusion", folder)
    members = card.members
    kinds = [b["kind"] for b in members[0]["branches"]] if len(members) == 1 else []
    if kinds != ["radiomics", "deep"]:
        raise TrainError("--from needs a set of this design (one logistic over radiomics and deep features, as "
                         "`breastcadx train` makes); this set's classifier has several blocks",
                         folder / "lesion_cls_fusion.json")
    selected = members[0]["branches"][0]["selected"]
    if sorted(selected) != sorted(names):
        raise TrainError("--from: the set was made with other radiomics features", folder / "lesion_cls_fusion.json")
    order = np.array([selected.index(n) for n in names])
    with np.load(folder / card.arrays, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    if a["m_deep_mean"].shape[0] != deep_dims:
        raise TrainError("--from: the set was made with other deep features", folder / "lesion_cls_fusion.json")
    est = members[0]["estimator"]
    coef = np.asarray(est["coef"], float)
    coef = np.r_[coef[:len(names)][order], coef[len(names):]]
    own = {view: ref for view, ref in (("box", card.box_member), ("whole", card.image_member)) if ref}
    member_weights = {v: load_card(r["model"], folder).weights_path for v, r in own.items()}  # a verified set
    from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL

    seg = load_card(DEFAULT_MODEL, folder) if (folder / f"{DEFAULT_MODEL}.json").is_file() else None
    return {"rm": a["m_rad_mean"][order], "rs": a["m_rad_scale"][order], "dm": a["m_deep_mean"],
            "ds": a["m_deep_scale"], "pca": _Projection(a["m_deep_pca_mean"], a["m_deep_pca_components"]),
            "lr": _Logistic(coef[None], np.array([est["intercept"]], float)),
            "id": info["id"], "members": member_weights,
            "member_weights": {v: float(r["weight"]) for v, r in own.items()}, "segmenter": seg}


def _fusion_from(src: dict, rad, deep, y, c: float = C_FUSION):
    """The source's representation; the logistic fitted with its L2 penalty centred on the source's coefficients
    (sklearn's objective and class balance otherwise: C x sum of weighted log-losses + |w - w_src|^2 / 2)."""
    from scipy.optimize import minimize

    x = np.hstack([(rad - src["rm"]) / src["rs"], src["pca"].transform((deep - src["dm"]) / src["ds"])])
    w0 = np.r_[src["lr"].coef_[0], src["lr"].intercept_[0]]
    sw = np.where(y == 1, len(y) / (2 * max(y.sum(), 1)), len(y) / (2 * max(len(y) - y.sum(), 1)))

    def objective(w):
        z = x @ w[:-1] + w[-1]
        p = 1 / (1 + np.exp(-z))
        loss = np.sum(sw * (np.logaddexp(0, z) - y * z))
        d = w[:-1] - w0[:-1]
        g = sw * (p - y)
        return c * loss + 0.5 * d @ d, np.r_[c * (x.T @ g) + d, c * g.sum()]

    w = minimize(objective, w0, jac=True, method="L-BFGS-B", options={"maxiter": 5000}).x
    return {**src, "lr": _Logistic(w[None, :-1], w[-1:])}


def fit_rows(rad, deep, y, idx, redrawn: tuple | None = None) -> tuple:
    """The fitting rows of the findings `idx`: each with its reference outline's features and, with `redrawn` (the
    same findings' features from their redrawn outlines, DESIGN's "redrawn"), that outline's too."""
    if redrawn is None:
        return rad[idx], deep[idx], y[idx]
    return np.vstack([rad[idx], redrawn[0][idx]]), np.vstack([deep[idx], redrawn[1][idx]]), np.r_[y[idx], y[idx]]


def fit_fusion(rows: tuple, c: float, source: dict | None = None) -> dict:
    """The fusion fitted on these (rad, deep, y) rows: from `source` with --from, else from scratch."""
    return _fusion_from(source, *rows, c) if source else _fusion(*rows, c=c)


def _fusion_proba(m, rad, deep):
    x = np.hstack([(rad - m["rm"]) / m["rs"], m["pca"].transform((deep - m["dm"]) / m["ds"])])
    return m["lr"].predict_proba(x)[:, 1]


def _baseline(rad, y):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(rad, y)


def fold_splits(y, groups, folds: int | str = FOLDS, seed: int = 0, sites=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) index pairs of the cross-validation: whole patients per fold, stratified by label; or,
    with folds "site", one fold per site (trained on the others: held-out-site figures). Every stage that is
    cross-validated (features, image members, segmenter) uses these."""
    if folds == SITE_FOLDS:
        sites = np.asarray(sites)
        return [(np.flatnonzero(sites != s), np.flatnonzero(sites == s)) for s in sorted(set(sites))]
    from sklearn.model_selection import StratifiedGroupKFold

    return list(StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(y, y, groups))


def summary(y, p, groups) -> dict:
    from BreastCADxLib.results.evaluation import auc_ci, high_sensitivity_specificity, specificity_at

    return {**auc_ci(y, p, groups), "specificity_at_0.96": specificity_at(y, p, 0.96),
            "specificity_at_0.98": specificity_at(y, p, 0.98),
            "specificity_0.90_1.00": high_sensitivity_specificity(y, p)}


METRIC_HEAD = "AUC [95 % CI] | specificity at sensitivity 0.96 / 0.98 | mean specificity, sensitivity 0.90-1.00"


def metric_cells(r: dict) -> str:
    """A summary() as card-table cells (METRIC_HEAD); a record from before the 0.98 / band columns shows '-'."""
    extra = " / ".join(f"{r[k]:.2f}" if k in r else "-" for k in ("specificity_at_0.96", "specificity_at_0.98"))
    band = f"{r['specificity_0.90_1.00']:.2f}" if "specificity_0.90_1.00" in r else "-"
    return f"{r['auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {extra} | {band}"


GATE_AUC_SLACK = 0.01  # well inside every CV AUC's 95 % CI here (+-0.02..0.05)
GATE_BOOT = 500  # paired patient-bootstrap draws of each held-out site's band change
GATE_RULE = ("kept when, out of fold, it does not lower the mean specificity over sensitivities 0.90-1.00 (the "
             f"biopsy decision's region) and lowers the AUC by at most {GATE_AUC_SLACK}; with --folds site both "
             "are the worst held-out site's (the design is judged by the hospital where it does worst), and no "
             "held-out site may lose band beyond noise (its paired patient-bootstrap 95 % CI wholly below 0) nor "
             "score more cancers below 5 % beyond noise (the rise's paired patient-bootstrap 95 % CI wholly above "
             "0; over all findings with patient folds)")


def band_gain_ci(y, candidate, base, groups, n: int = GATE_BOOT) -> tuple[float, float]:
    """95 % CI of the candidate's band (mean specificity over sensitivity 0.90-1.00) minus the base's on the same
    findings, resampling whole patients (paired: both scored on each draw)."""
    from BreastCADxLib.results.evaluation import group_bootstrap, high_sensitivity_specificity

    y, candidate, base = np.asarray(y), np.asarray(candidate), np.asarray(base)

    def gain(i):
        if len(set(y[i].tolist())) < 2:
            return np.nan
        return high_sensitivity_specificity(y[i], candidate[i]) - high_sensitivity_specificity(y[i], base[i])
    return group_bootstrap(np.asarray(groups), gain, n=n)


def confident_benign_rise_ci(y, candidate, base, groups, n: int = GATE_BOOT) -> tuple[float, float]:
    """95 % CI of how many more cancers the candidate scores below LOW_SCORE (a confident benign call) than the
    base on the same findings, resampling whole patients (paired)."""
    from BreastCADxLib.analysis.values import LOW_SCORE
    from BreastCADxLib.results.evaluation import group_bootstrap

    cancer = np.asarray(y) == 1
    rise = ((np.asarray(candidate) < LOW_SCORE).astype(int) - (np.asarray(base) < LOW_SCORE)) * cancer
    return group_bootstrap(np.asarray(groups), lambda i: float(rise[i].sum()), n=n)


def no_worse(y, candidate, base, sites=None, groups=None) -> tuple[bool, dict]:
    """The gate of every choice `train` makes between two out-of-fold scorings of the same findings (image members,
    the automatic-outline bundle): judged where a biopsy decision is made, not by AUC alone (a candidate that
    trades AUC in the low-sensitivity region for specificity at high sensitivity passes; one that loses the
    high-sensitivity region fails whatever its AUC). With `sites` (leave one site out) each measure is its worst
    held-out site's (maximin: gains at two hospitals do not buy a lower floor at the third; the targets are "at
    every held-out site"; benchmarks/results/member_gate_three_sites.md), and with `groups` (patients) too no site
    may lose band beyond noise: the worst site alone let a candidate through that cost another site significantly
    (benchmarks/results/classifier_candidates.md); and with `groups` no site (all findings, without sites) may
    score more cancers below LOW_SCORE beyond noise: the maximin band passed a box member that doubled them at
    BUS-UCLM (benchmarks/results/balanced_members.md; the issue: no confident benign call on a cancer). Returns
    (kept, {"candidate" / "base": {"auc", "specificity_0.90_1.00"}, and with sites "per_site_band": {site:
    {"candidate", "base"}}, with groups too "per_site_band_gain_ci95" (with sites) and
    "confident_benign_rise_ci95": {site or "all": [low, high]}})."""
    from sklearn.metrics import roc_auc_score

    from BreastCADxLib.results.evaluation import high_sensitivity_specificity

    y = np.asarray(y)
    parts = {None: np.ones(len(y), bool)} if sites is None else {s: np.asarray(sites) == s for s in sorted(set(sites))}
    parts = {s: m for s, m in parts.items() if len(set(y[m].tolist())) == 2}
    measured = {k: {s: (roc_auc_score(y[m], np.asarray(p)[m]), high_sensitivity_specificity(y[m], np.asarray(p)[m]))
                    for s, m in parts.items()} for k, p in (("candidate", candidate), ("base", base))}
    c, b = ({"auc": float(min(a for a, _ in v.values())), "specificity_0.90_1.00": float(min(h for _, h in v.values()))}
            for v in (measured["candidate"], measured["base"]))
    kept = (c["specificity_0.90_1.00"] >= b["specificity_0.90_1.00"] - 1e-12
            and c["auc"] >= b["auc"] - GATE_AUC_SLACK - 1e-12)
    per_site = {s: {k: float(measured[k][s][1]) for k in measured} for s in parts} if sites is not None else {}
    record = {"candidate": c, "base": b, **({"per_site_band": per_site} if per_site else {})}
    if per_site and groups is not None and kept:  # a gate already failed needs no bootstrap
        cand, bas, g = np.asarray(candidate), np.asarray(base), np.asarray(groups)
        gains = {s: list(band_gain_ci(y[m], cand[m], bas[m], g[m])) for s, m in parts.items()}
        record["per_site_band_gain_ci95"] = gains
        kept = all(hi >= 0 for _, hi in gains.values())
    if groups is not None and kept:
        cand, bas, g = np.asarray(candidate), np.asarray(base), np.asarray(groups)
        rises = {s or "all": list(confident_benign_rise_ci(y[m], cand[m], bas[m], g[m])) for s, m in parts.items()}
        record["confident_benign_rise_ci95"] = rises
        kept = all(lo <= 0 for lo, _ in rises.values())
    return bool(kept), record


def cross_validate(rad, deep, y, groups, folds: int | str = FOLDS, seed: int = 0, source: dict | None = None,
                   c: float = C_FUSION, sites=None, redrawn: tuple | None = None) -> dict:
    """Out-of-fold probabilities of the fusion and of the baseline, folds by patient; AUC with CIs. With a
    `source` set (--from): the fusion from it ("fusion"), the source as it is and the fusion from scratch too.
    redrawn: the fusions are fitted on the training findings' redrawn outlines too (fit_rows); every fold scores
    its held-out findings' reference outlines."""
    names = ["fusion", "pyradiomics_lr"] + (["source_as_is", "fusion_from_scratch"] if source else [])
    oof = {k: np.zeros(len(y)) for k in names}
    for train, test in fold_splits(y, groups, folds, seed, sites):
        rows = fit_rows(rad, deep, y, train, redrawn)
        scratch = _fusion(*rows, c=c)
        fit = _fusion_from(source, *rows, c) if source else scratch
        oof["fusion"][test] = _fusion_proba(fit, rad[test], deep[test])
        oof["pyradiomics_lr"][test] = _baseline(rad[train], y[train]).predict_proba(rad[test])[:, 1]
        if source:
            oof["source_as_is"][test] = _fusion_proba(source, rad[test], deep[test])
            oof["fusion_from_scratch"][test] = _fusion_proba(scratch, rad[test], deep[test])
    return {"folds": folds, "by_patient": True, "models": {k: summary(y, p, groups) for k, p in oof.items()},
            "oof": {k: v.tolist() for k, v in oof.items()}, **({"sites": list(sites)} if folds == SITE_FOLDS else {})}


def by_site(cv: dict, y, groups) -> dict:
    """Leave-one-site-out: each model's figures on each held-out site's own rows."""
    sites = np.asarray(cv["sites"])
    return {s: {k: summary(y[sites == s], np.asarray(p)[sites == s], groups[sites == s]) for k, p in cv["oof"].items()}
            for s in sorted(set(sites))}


def write_fusion(out: Path, bundle_id: str, names: list[str], rad, deep, y, modality: str, training: dict,
                 source: dict | None, refs: dict, automatic_masks: str | None = None) -> FusionCard:
    """One fusion bundle fitted on these rows (from `source` with --from), as the product loads it, with the image
    members `refs` fused; checked to reproduce the fit on reload."""
    from BreastCADxLib.train.bundle import ood_statistics, write_bundle

    c = DESIGN[modality]["c"]
    m = fit_fusion((rad, deep, y), c, source)
    arrays = {"m_rad_mean": m["rm"], "m_rad_scale": m["rs"], "m_deep_mean": m["dm"], "m_deep_scale": m["ds"],
              "m_deep_pca_mean": m["pca"].mean_, "m_deep_pca_components": m["pca"].components_}
    zr = (rad - m["rm"]) / m["rs"]
    zd = m["pca"].transform((deep - m["dm"]) / m["ds"])
    fused = np.hstack([zr, zd])
    arrays["ood_mean"], arrays["ood_precision"], ood_threshold = ood_statistics(fused)
    coef = m["lr"].coef_[0]
    v = m["pca"].components_.T @ coef[len(names):]  # the deep part folded back onto the trunk features
    arrays["explain_deep_weight"] = v / m["ds"]
    bias = float(m["lr"].intercept_[0] - m["pca"].mean_ @ v - (m["dm"] / m["ds"]) @ v)
    card = FusionCard(
        id=bundle_id, task=f"malignancy of a located finding ({modality})",
        model_set=out.name, weights=f"{bundle_id}.npz", arrays=f"{bundle_id}.npz",
        sha256="0" * 64, files={}, mode="early", classifier="LR",  # write_bundle sets both
        deep_crop="mask", deep_model=None, radiomics_names=names,
        members=[{"name": "fusion", "branches": [
            {"kind": "radiomics", "selected": names, "mean": "m_rad_mean", "scale": "m_rad_scale"},
            {"kind": "deep", "mean": "m_deep_mean", "scale": "m_deep_scale", "pca_mean": "m_deep_pca_mean",
             "pca_components": "m_deep_pca_components"}],
            "estimator": {"kind": "logistic", "coef": coef.tolist(), "intercept": float(m["lr"].intercept_[0])}}],
        combine={"kind": "single"}, calibration={"kind": "identity"},
        ood={"threshold": ood_threshold, "space": "radiomics z-scores + deep PCA",
             "rule": "Mahalanobis distance above the 99th percentile of the training findings"},
        explain={"deep_bias": bias, "method": "Grad-CAM of the deep part of the logistic score"},
        training={**training, "fitting_rows": int(len(y)),
                  "design": {"lexicon_descriptors": DESIGN[modality]["descriptors"], "logistic_c": c,
                             "redrawn_outlines": DESIGN[modality]["redrawn"]}},
        box_member=refs.get("box"), image_member=refs.get("whole"), automatic_masks=automatic_masks,
        intended_use="Research only; not for diagnosis." + (
            " A demonstration on 1990s screen film (mini-MIAS, 200 um): not a model for radiologists."
            if modality == "MG" else ""),
    )
    card, _ = write_bundle(out, card, arrays, check=(rad, deep, _fusion_proba(m, rad, deep)))
    return card


def write_set(out: Path, names: list[str], rad, deep, y, modality: str, cv: dict, data: dict, command: str,
              source: dict | None = None, detector: dict | None = None, members: dict | None = None,
              automatic: dict | None = None, redrawn: tuple | None = None) -> None:
    """The fusion refitted on every finding (from `source` with --from), as a bundle the product loads; the image
    members fused with it when they were kept (members: train/members.py's result); the segmenter when one was
    trained (detector: its weights, post-processing and training record) and, when the automatic-outline stage
    kept it (automatic: train/outlines.py's result), the bundle for its own masks; card.md."""
    import shutil

    from BreastCADxLib.analysis.registry import save_card
    from BreastCADxLib.train import members as mem
    from BreastCADxLib.train.outlines import AUTO_ID

    out.mkdir(parents=True, exist_ok=True)
    cites = {k: data[k] for k in ("sites", "data_citations") if k in data}  # data_record: every card names its data
    # the members join each bundle whose own outlines they did not rank worse, at that bundle's weights
    # (train/members.py, train/outlines.py); a view fused in neither is not written
    used = members["training"] if members is not None and members["weights"] else {}
    main_refs, auto_refs = ({view: {"model": mem.VIEWS[view], "weight": w} for view, w in used[k].items()}
                            if used.get(kept) else {} for k, kept in (("weights_reference", "kept_reference"),
                                                                      ("weights_automatic", "kept_automatic")))
    for view in {*main_refs, *auto_refs}:
        weights = out / f"{mem.VIEWS[view]}.pt"
        shutil.copyfile(members["weights"][view], weights)
        save_card(out, mem.card_for(view, weights, out.name, {"command": command, **members["training"], **cites},
                                    modality))
    training = {"command": command, "findings": int(len(y)), "malignant": int(y.sum()), **data,
                **({"from_set": source["id"]} if source else {}),
                "cross_validation": {k: {kk: vv for kk, vv in v.items()} for k, v in cv["models"].items()}}
    redraw = " and that outline redrawn (train/augment.redrawn)" if redrawn else ""
    rows = fit_rows(rad, deep, y, np.arange(len(y)), redrawn)
    auto = automatic is not None and (automatic["rows"] is not None or auto_refs != main_refs)
    if auto:
        write_fusion(out, AUTO_ID, names, *(automatic["rows"] if automatic["rows"] is not None else rows), modality,
                     {**training, "rows": f"each finding with its reference outline{redraw}" + (
                         ", and, where it can be classified, its automatic outline by a segmenter that never saw it"
                         if automatic["rows"] is not None else ""),
                      "automatic_outlines": {k: v for k, v in automatic["record"].items()
                                             if k not in ("by_site", "oof")}},  # per site / finding: cv.json
                     source, auto_refs)
    card = write_fusion(out, "lesion_cls_fusion", names, *rows, modality,
                        {**training, "rows": f"each finding with its reference outline{redraw}"}, source, main_refs,
                        AUTO_ID if auto else None)
    if detector is not None and detector.get("carried") is not None:  # --from: the source's, unchanged
        from dataclasses import replace

        src = detector["carried"]
        shutil.copyfile(src.weights_path, out / src.weights)
        save_card(out, replace(src, model_set=out.name, folder=out,
                               training={**src.training, "carried_from_set": source["id"]}))
    elif detector is not None and detector["weights"] is not None:
        from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL
        from BreastCADxLib.train.segmenter import card_for

        weights = out / f"{DEFAULT_MODEL}.pt"
        shutil.copyfile(detector["weights"], weights)
        save_card(out, card_for(detector["size"], detector["post"], weights, out.name,
                                {**detector["training"], **cites}, modality))
    (out / "card.md").write_text(card_text(card, cv, modality, data, detector, members,
                                           automatic["record"] if automatic else None), encoding="utf-8")


GUARD_DIMS = 16
GUARD_QUANTILE = 0.005  # of the training images' own scores: the threshold


def pca_params(z: np.ndarray) -> dict[str, np.ndarray]:
    """The one-class guard's model of embeddings z: their mean, top principal axes and variances along them."""
    mean = z.mean(0)
    _, sv, vt = np.linalg.svd(z - mean, full_matrices=False)
    k = min(GUARD_DIMS, len(z) - 2)
    return {"mean": mean, "components": vt[:k], "variances": (sv[:k] ** 2) / (len(z) - 1) + 1e-6}


def residual_bound(z: np.ndarray, sites: list[str]) -> float | None:
    """Leave-site-out: for each site, the guard fitted on the others and the largest distance from that subspace
    among the held-out site's images; the highest over sites (every image of a hospital the guard never saw
    passes). None with fewer than two sites (nothing says how far a new hospital's images lie)."""
    from BreastCADxLib.analysis.guard import pca_residual

    sites = np.asarray(sites)
    if len(set(sites.tolist())) < 2:
        return None
    return float(max(pca_residual(z[sites == s], pca_params(z[sites != s])).max() for s in sorted(set(sites))))


def fit_one_class(z: np.ndarray, sites: list[str] | None = None) -> tuple[dict[str, np.ndarray], float]:
    """The guard's parameters on embeddings z (pca_params, with residual_bound's bound when the sites give one)
    and its threshold: the GUARD_QUANTILE of the images' own scores."""
    from BreastCADxLib.analysis.guard import one_class_score

    params = pca_params(z)
    bound = residual_bound(z, sites) if sites is not None else None
    if bound is not None:
        params["residual_max"] = np.float64(bound)
    return params, float(np.quantile(one_class_score(z, params), GUARD_QUANTILE))


def write_guard(out: Path, images: list[Path], modality: str, command: str, device: str, cites: dict | None = None,
                sites: list[str] | None = None) -> GuardCard:
    """The set's input guard: distance to its own training images in a PCA of the whole-image Lite0 embedding
    (analysis.guard.one_class_score), its threshold the 0.5th percentile of those images' scores; with two or more
    sites, also a bound on the distance from that subspace (residual_bound: noise, patterns, another modality lie
    beyond it); sides from the images."""
    from BreastCADxLib.analysis.guard import embed, embedder
    from BreastCADxLib.analysis.registry import save_card, sha256_of
    from BreastCADxLib.io import load_image

    planes = [load_image(p).array[0] for p in images]
    engine = embedder(device)
    z = np.concatenate([embed(engine, planes[i:i + 16]) for i in range(0, len(planes), 16)])
    params, threshold = fit_one_class(z, sites)
    bound = float(params["residual_max"]) if "residual_max" in params else None
    np.savez(out / "image_guard.npz", **params)
    sides = [s for p in planes for s in p.shape]
    k = len(params["variances"])
    residual = (f"; 0 beyond a distance {bound:.3f} from that subspace (the farthest image of a site held out "
                "from the fit, over the sites)" if bound is not None else
                "; no bound on the distance from that subspace (one site: nothing measures a new hospital's)")
    card = GuardCard(
        id="image_guard", task=f"is this a {modality} image like the set's own training images?",
        weights="image_guard.npz", sha256=sha256_of(out / "image_guard.npz"),
        embedding="frozen ImageNet EfficientNet-Lite0, whole image at 224x224, pooled 1280, L2-normalised",
        threshold=threshold,
        validated_on={"modalities": [modality, "OT"], "max_frames": 1, "min_side": int(min(sides) // 2),
                      "max_side": int(max(sides) * 2.5)},
        training={"command": command, "images": len(images),
                  **(cites or {}),
                  "threshold_rule": f"the {100 * GUARD_QUANTILE:g}th percentile of the training images' own scores"},
        notes={"model": f"one-class: Mahalanobis distance in a {k}-component PCA of the embedding (chi-square "
                        f"tail){residual}"})
    save_card(out, card)
    return card


def card_text(card: FusionCard, cv: dict, modality: str, data: dict, detector: dict | None = None,
              members: dict | None = None, automatic: dict | None = None) -> str:
    """card.md: the data, the classifier's cross-validation (with the image members when trained:
    train/members.py's result), (detector: train/segmenter.py's result) the segmenter's and (automatic:
    train/outlines.py's record) the automatic path's, and whether the set kept each."""
    from BreastCADxLib.train.members import chance_text

    t = card.training
    plan = (f"Leave-one-site-out cross-validation (each site scored by models trained on the others: held-out-site "
            f"figures; sites {', '.join(sorted(set(cv['sites'])))}), pooled" if cv["folds"] == SITE_FOLDS else
            f"Cross-validation by patient ({cv['folds']} folds, the same folds for every row)")
    start = (f"; `fusion` starts from the set `{t['from_set']}` (--from), `source_as_is` is that set unchanged"
             if t.get("from_set") else "")
    lines = [f"# Model set `{card.model_set}` ({modality})", "", card.intended_use, "",
             f"Data: {t['findings']} located findings ({t['malignant']} malignant) of {data['patients']} patients; "
             f"left out: {data['left_out']}. Made {data['date']} by `{t['command']}`.", "",
             f"{plan}, 95 % CI by patient bootstrap{start}:", "",
             f"| model | {METRIC_HEAD} |", "|---|---|---|---|"]
    for name, r in cv["models"].items():
        lines.append(f"| {name} | {metric_cells(r)} |")
    if cv.get("by_site"):
        lines += ["", "Each held-out site on its own (AUC [95 % CI]; specificity at sensitivity 0.96):", "",
                  "| model | " + " | ".join(cv["by_site"]) + " |", "|---" * (1 + len(cv["by_site"])) + "|"]
        for name in cv["models"]:
            lines.append(f"| {name} | " + " | ".join(
                f"{r[name]['auc']:.3f} [{r[name]['ci95'][0]:.3f}, {r[name]['ci95'][1]:.3f}]; "
                f"{r[name]['specificity_at_0.96']:.2f}" for r in cv["by_site"].values()) + " |")
    if members is not None:
        r = members["training"]
        where = [f"{name} (weights " + ", ".join(f"{v} {x}" for v, x in r[w].items()) + ")"
                 for name, k, w in (
                     ("the set's fusion (drawn and corrected outlines)", "kept_reference", "weights_reference"),
                     ("the bundle for the segmenter's own masks", "kept_automatic", "weights_automatic"))
                 if r.get(k)]
        epochs = f"{r['epochs']} epoch{'s' if r['epochs'] != 1 else ''}"
        lines += ["", f"Image members ({', '.join(r['views'])}; {epochs} each, "
                  "trained on each fold's training patients, scored on its held-out patients): "
                  + (f"fused in {' and '.join(where)}" if members["weights"] else "left out of the set")
                  + f" ({r['rule']})."]
        lines[-1] += chance_text((r.get("gate_reference") or {}).get("at_chance"))
    if detector is not None and detector.get("carried") is not None:
        lines += ["", f"Segmenter: the source set `{t['from_set']}`'s, unchanged (--from with no segmenter training; "
                  "not cross-validated here): its presence threshold is the source's."]
    elif detector is not None:
        lines += ["", detection_text(detector["training"])]
    if automatic is not None:
        from BreastCADxLib.train.outlines import automatic_text

        lines += ["", automatic_text(automatic)]
    if detector is None or (detector["weights"] is None and detector.get("carried") is None):
        lines += ["", "No segmenter in the set" + (" (it found too few findings out of fold, above)" if detector
                                                   else "") + ": the finding is located by the user (a box, or an "
                  "outline)."]
    lines += ["", "The set's input guard knows only its own training images (no foreign image was shown to it)."]
    if data.get("runs"):
        from BreastCADxLib.train.journal import runs_text

        lines += ["", runs_text(data["runs"])]
    return "\n".join(lines) + "\n"


def detection_text(d: dict) -> str:
    """card.md's segmenter section: the out-of-fold detection report of train/segmenter.py."""
    cv, c = d["cross_validation"], d["cross_validation"]["chosen"]
    auc = cv["presence_auc"]
    lines = [f"Segmenter (finding detection), cross-validated by patient ({cv['folds']} folds): "
             f"{cv['finding_images']} images with a located finding, {cv['normal_images']} normal images. A finding "
             "counts as found when the outline the product returns first has its centre inside it and its score "
             "reaches the threshold.", "",
             f"- told a finding is there (lesion expected): the outline is on a finding in "
             f"{cv['localised_when_expected']:.0%} of the images (its most probable pixel in "
             f"{cv.get('peak_in_finding') or 0:.0%})",
             f"- finding image vs normal image by the presence score: AUC {auc['auc']:.3f} "
             f"[{auc['ci95'][0]:.3f}, {auc['ci95'][1]:.3f}]" + (
                 f"; by the highest probability anywhere: {cv['peak_auc']['auc']:.3f}" if cv.get("peak_auc") else "")
             if auc else "- no normal images: no presence AUC",
             f"- the set's presence threshold {c['threshold']:.4f} ({cv['rule']}): found {c['sensitivity']:.0%} of "
             f"the findings, {c['false_findings_per_image']:.2f} false findings per image",
             "", "| false findings per image at most | threshold | findings found |", "|---|---|---|"]
    lines += [f"| {r['max_false_per_image']} | {r['threshold']:.4f} | {r['sensitivity']:.0%} |" for r in cv["froc"]]
    for site, r in (cv.get("by_site") or {}).items():  # leave-one-site-out: each site at the pooled threshold
        c = r["chosen"]
        normal = "" if c["normal_images_with_a_finding"] is None else \
            f", a finding on {c['normal_images_with_a_finding']:.0%} of its normal images"
        lines.append(f"- held-out site {site}: found {c['sensitivity']:.0%} of its findings, "
                     f"{c['finding_images_said_normal']:.0%} of its finding images said normal{normal}")
    return "\n".join(lines)


def check_folds(folds: int | str, y, patients, sites, manifest: Path, normal_sites: tuple = ()) -> None:
    """Enough findings for the cross-validation asked for (TrainError saying how few otherwise)."""
    if folds == SITE_FOLDS:
        per = {s: (int(y[sites == s].sum()), int((1 - y[sites == s]).sum())) for s in sorted(set(sites))}
        if "" in per or "" in normal_sites or len(per) < 2 or min(min(v) for v in per.values()) < 2:
            raise TrainError("--folds site needs a `site` column naming at least two sites on every row, each with "
                             f"at least 2 malignant and 2 benign located findings (here {per})", manifest)
        return
    if not isinstance(folds, int) or folds < 2:
        raise TrainError(f"--folds must be 2 or more, or `{SITE_FOLDS}` (leave one site out)")
    if min(int(y.sum()), int(len(y) - y.sum())) < 2 * folds or len(set(patients)) < folds:
        raise TrainError(f"{int(y.sum())} malignant and {int(len(y) - y.sum())} benign located findings of "
                         f"{len(set(patients))} patients: {folds}-fold cross-validation by patient needs at least "
                         f"{2 * folds} of each and {folds} patients", manifest)


def train(manifest: Path, modality: str, out: Path, device: str = "auto", max_minutes: float = 0.0,
          folds: int | str = FOLDS, say=None, start_from: str | None = None, segmenter_epochs: int | None = None,
          segmenter_size: int | None = None, segmenter_min_found: float | None = None,
          members: str | None = None, member_epochs: int | None = None) -> dict:
    """The stages above; returns the CV report. `out` must be new or a set this command is still making. Each run
    is journalled in out/.work/runs.json (train/journal.py): the log's first line and the card say which runs made
    the set."""
    from BreastCADxLib.train.journal import RunJournal, ending

    journal = RunJournal(out / ".work", max_minutes)
    try:
        return _train(manifest, modality, out, device, max_minutes, folds, say, start_from, segmenter_epochs,
                      segmenter_size, segmenter_min_found, members, member_epochs, journal)
    except BaseException as e:
        if journal.runs:
            try:
                journal.end(ending(e))
            except OSError:  # a full disk must not hide the run's own error
                pass
        raise


def _train(manifest: Path, modality: str, out: Path, device: str, max_minutes: float, folds: int | str, say,
           start_from: str | None, segmenter_epochs: int | None, segmenter_size: int | None,
           segmenter_min_found: float | None, members: str | None, member_epochs: int | None, journal) -> dict:
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    if modality not in MODALITIES:
        raise TrainError(f"--modality must be one of {', '.join(MODALITIES)}")
    from BreastCADxLib.train import members as mem
    from BreastCADxLib.train import segmenter as seg

    views = tuple(v for v in (members or ",".join(mem.VIEWS)).split(",") if v and v != "none")
    member_epochs = mem.EPOCHS if member_epochs is None else member_epochs
    if not set(views) <= set(mem.VIEWS) or len(set(views)) != len(views) or member_epochs < 0:
        raise TrainError("--members takes box, whole, both (box,whole) or none, and --member-epochs 0 or more")
    if not member_epochs:
        views = ()

    segmenter_epochs = seg.EPOCHS if segmenter_epochs is None else segmenter_epochs
    segmenter_size = segmenter_size or seg.SIZE
    if segmenter_epochs < 0 or not 64 <= segmenter_size <= 1024 or segmenter_size % 32:
        # below 64 px the encoder's last stage is 1 x 1: a batch of one cannot be normalised
        raise TrainError("--segmenter-epochs must be 0 or more and --segmenter-size a multiple of 32 in 64..1024")
    if out.exists() and (out / "modelset.json").is_file():
        raise TrainError("a finished model set is never replaced; choose a new folder", out)
    deadline = time.time() + 60 * max_minutes if max_minutes else float("inf")
    clock = {"t": time.perf_counter()}
    seconds: dict[str, float] = {}

    def lap(stage: str) -> None:  # wall time per stage (the benchmark reports it; the journal keeps each run's)
        now = time.perf_counter()
        seconds[stage], clock["t"] = round(now - clock["t"], 1), now
        journal.stage(stage, seconds[stage])

    findings, skipped, normals = read_manifest(manifest)
    y = np.array([f.label for f in findings])
    patients = np.array([f.patient for f in findings])
    sites = np.array([f.site for f in findings])
    check_folds(folds, y, patients, sites, manifest, tuple(n.site for n in normals))
    say(journal.start())
    say(f"stage 1/7 manifest: {len(findings)} located findings ({int(y.sum())} malignant), {len(set(patients))} "
        f"patients; left out {skipped}")
    lap("manifest")
    say("stage 2/7 features" + (" (reference and redrawn outlines)" if DESIGN[modality]["redrawn"] else ""))
    design = DESIGN[modality]
    rows = features(findings, out / ".work", device, deadline, say, design["descriptors"])
    lap("features")
    names = rows[findings[0].case_id]["names"]
    rad = np.array([rows[f.case_id]["rad"] for f in findings])
    deep = np.array([rows[f.case_id]["deep"] for f in findings], float)
    redrawn = None
    if design["redrawn"]:  # every fusion is fitted on the findings' redrawn outlines too
        again = features(findings, out / ".work", device, deadline, say, design["descriptors"], redrawn=True)
        redrawn = (np.array([again[f.case_id]["rad"] for f in findings]),
                   np.array([again[f.case_id]["deep"] for f in findings], float))
    source = source_fusion(start_from, modality, names, deep.shape[1]) if start_from else None
    say("stage 3/7 cross-validation " + ("leaving one site out" if folds == SITE_FOLDS else "by patient")
        + (f" (from the set {source['id']})" if source else ""))
    cv = cross_validate(rad, deep, y, patients, folds, source=source, c=design["c"], sites=sites, redrawn=redrawn)
    cv["case_ids"] = [f.case_id for f in findings]  # the order of every per-finding list in this record
    for name, r in cv["models"].items():
        say(f"  {name}: AUC {r['auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}], specificity at sensitivity "
            f"0.96 {r['specificity_at_0.96']:.2f}")
    lap("cross-validation")
    command = " ".join(["breastcadx", "train", str(manifest), "--modality", modality, "--out", str(out)]
                       + (["--folds", str(folds)] if folds != FOLDS else [])
                       + (["--from", start_from] if start_from else [])
                       + (["--segmenter-epochs", str(segmenter_epochs)] if segmenter_epochs != seg.EPOCHS else [])
                       + (["--segmenter-size", str(segmenter_size)] if segmenter_size != seg.SIZE else [])
                       + (["--segmenter-min-found", str(segmenter_min_found)]
                          if segmenter_min_found is not None else [])
                       + (["--members", ",".join(views) or "none"] if views != tuple(mem.VIEWS) else [])
                       + (["--member-epochs", str(member_epochs)] if views and member_epochs != mem.EPOCHS else []))
    fused = None
    if views:
        say(f"stage 4/7 image members ({', '.join(views)}): on the same folds (every finding once they are kept)")
        fused = mem.members_stage(findings, y, patients, cv, views, out / ".work", folds=folds, epochs=member_epochs,
                                  device=device, deadline=deadline, say=say, source=source, sites=sites,
                                  modality=modality, defer=True)
    else:
        say("stage 4/7 image members: none (--members none): the features alone")
    lap("image members")
    detector = None
    if segmenter_epochs:
        say("stage 5/7 segmenter: on the same folds, then every image")
        images = seg.seg_images(findings, normals)
        detector = seg.train_segmenter(
            images, out / ".work", folds=folds, epochs=segmenter_epochs, size=segmenter_size, device=device,
            deadline=deadline, say=say, model_set=out.name, modality=modality, command=command,
            min_found=seg.MIN_FOUND if segmenter_min_found is None else segmenter_min_found,
            init=source["segmenter"].weights_path if source and source["segmenter"] else None)
    elif source and source["segmenter"]:
        say(f"stage 5/7 segmenter: the source set {source['id']}'s, unchanged (--segmenter-epochs 0)")
        detector = {"weights": None, "carried": source["segmenter"]}
    else:
        say("stage 5/7 segmenter: none (--segmenter-epochs 0): the user's box locates the finding")
    lap("segmenter")
    automatic = None
    if detector is not None and (detector.get("carried") is not None or detector["weights"] is not None):
        say("stage 6/7 automatic outlines: each finding outlined by a segmenter that never saw it, classified "
            "out of fold")
        from BreastCADxLib.train.outlines import automatic_stage

        automatic = automatic_stage(findings, y, patients, rad, deep, detector, fused, out / ".work",
                                    folds=folds, sites=sites, c=design["c"], descriptors=design["descriptors"],
                                    source=source, seg_images=images if segmenter_epochs else None, device=device,
                                    deadline=deadline, say=say, redrawn=redrawn)
        cv["automatic_outlines"] = automatic["record"]
    else:
        say("stage 6/7 automatic outlines: none (no segmenter in the set)")
    lap("automatic outlines")
    if folds == SITE_FOLDS:
        cv["by_site"] = by_site(cv, y, patients)
    say("stage 7/7 the model set")
    if fused is not None:  # each bundle takes the members when they did not lower its own outlines' ranking
        record = fused["training"]
        auto = automatic["record"] if automatic else None
        record["kept_automatic"] = auto["members_kept"] if auto else record["kept_reference"]
        record["weights_automatic"] = auto["member_weights"] if auto else record["weights_reference"]
        record["kept"] = record["kept_reference"] or record["kept_automatic"]
        if record["kept"]:
            fused = mem.finish_members(fused, findings, out / ".work", device=device, deadline=deadline, say=say)
    cites = data_record(findings + normals, manifest)
    journal.end()  # finished, as the card says; anything raised after this still records how the run ended
    data = {"patients": int(len(set(patients))), "left_out": skipped, "manifest": str(manifest),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), **cites, "runs": journal.runs}
    write_set(out, names, rad, deep, y, modality, cv, data, command, source, detector, fused, automatic, redrawn)
    site_of = {x.image: x.site for x in [*findings, *normals]}
    guard_images = sorted(site_of)
    write_guard(out, guard_images, modality, command, device, cites, [site_of[i] for i in guard_images])
    from BreastCADxLib.analysis.registry import write_modelset

    write_modelset(out, id=out.name, modality=modality, sites=data["sites"])
    lap("model set")
    import resource

    if detector is not None and "training" in detector:
        cv["detection"] = detector["training"]["cross_validation"]
    cv["stage_seconds"] = seconds
    cv["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: kB
    (out / ".work" / "cv.json").write_text(json.dumps(cv, indent=1) + "\n")  # a set's folder holds cards only
    return cv


__all__ = ["train", "read_manifest", "cross_validate", "TrainError", "Finding"]
