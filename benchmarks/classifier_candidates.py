"""Three more of the generalisation issue's candidates, judged at each held-out site: site-balanced fitting, features
standardised per site, and the segmenter's encoder as a classification trunk.

    python -m benchmarks.classifier_candidates --run runs/three-site-train --manifest runs/three_sites.csv

From a finished `breastcadx train --folds site` run (every site scored by models trained on the other two; test
splits unread; `train_weights.run_rows`). Each candidate is fitted on two sites and judged at the third against
the shipped design with train's gate and a paired patient bootstrap of the band (`outline_limits.judge_candidates`),
on the drawn outlines (the features' fusion with the box member, as the set fuses them) and on the automatic ones
(the automatic-outline bundle with both members):
- site-balanced: the fusion's rows weighted so that each (site, class) counts the same;
- per-site standardised: every site's features z-scored by that site's own mean and spread, the held-out site's
  by its own rows (it needs the new hospital's unlabelled cases: what `adapt` could carry);
- the segmenter's encoder: each held-out site's segmenter fold (trained for outlines on the other two sites)
  pooled over the whole image and over the outline's box + 20 % (its last two feature maps, 432 values), a
  logistic regression on the two training sites (box: their drawn outlines; the held-out site: its automatic
  ones), fused as a third member at weights 0.1 / 0.2 / 0.3. A probe of the issue's multitask network (one
  encoder for the outline and the class): if the trunk the segmenter learnt ranks malignancy, a joint head could
  use it. The features are computed once (about 6 min on 2 cores) and cached in the run's work folder.
Writes benchmarks/results/NAME.md / .json.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results
from benchmarks.outline_limits import candidate_table, judge_candidates
from benchmarks.train_weights import run_rows

OUT = Path(__file__).resolve().parent / "results"
BOX_MARGIN = 0.2
TRUNK_C = 0.01  # the logistic's C on the encoder's features (the fusion's own, DESIGN["US"]["c"]), fixed in advance
TRUNK_WEIGHTS = (0.1, 0.2, 0.3)


def site_weights(sites: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample weights with which each (site, class) cell of the rows counts the same in all."""
    w = np.ones(len(y))
    cells = [(s, k) for s in sorted(set(sites)) for k in (0, 1) if ((sites == s) & (y == k)).any()]
    for s, k in cells:
        m = (sites == s) & (y == k)
        w[m] = len(y) / (m.sum() * len(cells))
    return w


def per_site_z(x: np.ndarray, sites: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Each site's rows z-scored by that site's own mean and spread (over `rows` of it when given)."""
    out = x.copy()
    use = np.ones(len(x), bool) if rows is None else rows
    for s in set(sites):
        m = sites == s
        ref = x[m & use]
        out[m] = (x[m] - ref.mean(0)) / (ref.std(0) + 1e-8)
    return out


def fusion_variants(r: dict) -> dict[str, dict[str, np.ndarray]]:
    """Out-of-fold probabilities of the features' fusion under each variant, on the drawn outlines ("drawn") and
    on the automatic ones ("automatic", fitted on both outlines as the shipped bundle is)."""
    from BreastCADxLib.train.outlines import with_automatic
    from BreastCADxLib.train.pipeline import DESIGN, _fusion, _fusion_proba, fit_rows

    y, sites, ok, c = r["y"], r["sites"], r["ok"], DESIGN["US"]["c"]
    plain = (r["rad"], r["deep"], r["redrawn"][0], r["redrawn"][1], r["arad"], r["adeep"])
    z = tuple(per_site_z(a, sites) for a in plain[:4]) + tuple(per_site_z(a, sites, ok) for a in plain[4:])
    out = {}
    for name, (rad, deep, rrad, rdeep, arad, adeep), balanced in (("site-balanced", plain, True),
                                                                   ("per-site standardised", z, False)):
        drawn, auto = np.full(len(y), 0.5), np.full(len(y), 0.5)
        for tr, te in r["splits"]:
            rows = fit_rows(rad, deep, y, tr, (rrad, rdeep))
            fit = _fusion(*rows, c=c, sample_weight=site_weights(np.r_[sites[tr], sites[tr]], rows[2])
                          if balanced else None)
            drawn[te] = _fusion_proba(fit, rad[te], deep[te])
            rows = with_automatic(rad, deep, y, arad, adeep, ok, tr, (rrad, rdeep))
            fit = _fusion(*rows, c=c, sample_weight=site_weights(np.r_[sites[tr], sites[tr], sites[tr[ok[tr]]]],
                                                                 rows[2]) if balanced else None)
            s = te[ok[te]]
            auto[s] = _fusion_proba(fit, arad[s], adeep[s])
        out[name] = {"drawn": drawn, "automatic": auto}
    return out


def finding_planes(work: Path, findings: list) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per finding on the working grid: its plane (0..255, float32), drawn outline and automatic outline (the run's
    cached outline pass)."""
    from BreastCADxLib.analysis.values import to_uint8_range
    from BreastCADxLib.train.outlines import cached_outline, cached_passes
    from BreastCADxLib.train.pipeline import on_grid

    passes, out = cached_passes(work), []
    for f in findings:
        image, ref = on_grid(f)
        out.append((to_uint8_range(image.array[0]).astype(np.float32), ref[0].astype(bool),
                    cached_outline(passes[str(f.image)], ref[0].shape).astype(bool)))
    return out


def box_view(plane: np.ndarray, mask: np.ndarray | None, size: int):
    """The network's size x size view: the whole plane (mask None) or the mask's box + BOX_MARGIN; None for an empty
    mask."""
    import torch

    from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox, resize_plane

    if mask is not None:
        if not mask.any():
            return None
        x0, y0, x1, y1 = expand_box(mask_bbox(mask), BOX_MARGIN, mask.shape)
        plane = plane[y0:y1, x0:x1]
    return resize_plane(torch.from_numpy(np.ascontiguousarray(plane)), (size, size))


def encoder_features(run: Path, findings: list) -> dict[str, np.ndarray]:
    """Per held-out site S, its segmenter fold's encoder pooled over every finding's whole image, drawn outline's
    box and automatic outline's box ("S_whole", "S_drawn", "S_automatic"; zeros where an outline is empty).
    Cached in the run's work folder."""
    import torch

    from BreastCADxLib.analysis.preprocessing import network_input
    from BreastCADxLib.train.outlines import cached_passes
    from BreastCADxLib.train.segmenter import fold_segmenters

    work = run / ".work"
    passes = cached_passes(work)
    folds = sorted(work.glob("segmenter_fold*/model.pt"))
    digest = hashlib.sha256("".join([f.case_id + hashlib.sha256(passes[str(f.image)]).hexdigest() for f in findings]
                                    + [hashlib.sha256(p.read_bytes()).hexdigest() for p in folds]).encode()).hexdigest()
    cache = work / "classifier_candidates_trunk.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["digest"]) == digest:
                return {k: z[k] for k in z.files if k != "digest"}
    planes = finding_planes(work, findings)
    out = {}
    for fold, judged in fold_segmenters(run):
        (site,) = {r["site"] for r in judged}  # the site this fold held out
        encoder, size = fold.net.encoder, fold.card.input["height"]  # the fold's own input size
        rows = {"whole": [], "drawn": [], "automatic": []}
        with torch.no_grad():
            for plane, ref, auto in planes:
                for name, mask in (("whole", None), ("drawn", ref), ("automatic", auto)):
                    t = box_view(plane, mask, size)
                    if t is None:  # an empty outline: zeros, once the width is known
                        rows[name].append(None)
                        continue
                    maps = encoder(network_input(t.clamp(0, 255))[None])
                    rows[name].append(torch.cat([maps[-1].mean((2, 3)), maps[-2].mean((2, 3))], 1)[0].numpy())
        width = len(rows["whole"][0])  # the whole view always has one
        rows = {k: [np.zeros(width, np.float32) if v is None else v for v in r] for k, r in rows.items()}
        out.update({f"{site}_{k}": np.array(v, np.float32) for k, v in rows.items()})
        print(f"encoder features: {site} done", flush=True)
    np.savez(cache, digest=digest, **out)
    return out


def trunk_member(r: dict, feats: dict, view: str) -> np.ndarray:
    """Out of fold: a logistic on the segmenter encoder's features ("whole", "box" or "both"), fitted on the two
    training sites (boxes of their drawn outlines), scored at the held-out site (its automatic outlines' boxes)."""
    from sklearn.linear_model import LogisticRegression

    y, sites = r["y"], r["sites"]
    train_views = {"whole": ["whole"], "box": ["drawn"], "both": ["drawn", "whole"]}[view]
    test_views = {"whole": ["whole"], "box": ["automatic"], "both": ["automatic", "whole"]}[view]
    p = np.full(len(y), 0.5)
    for s in sorted(set(sites)):
        tr, te = sites != s, sites == s
        xtr = np.hstack([feats[f"{s}_{v}"][tr] for v in train_views])
        xte = np.hstack([feats[f"{s}_{v}"][te] for v in test_views])
        mean, sd = xtr.mean(0), xtr.std(0) + 1e-6
        lr = LogisticRegression(C=TRUNK_C, max_iter=5000, class_weight="balanced").fit((xtr - mean) / sd, y[tr])
        p[te] = lr.predict_proba((xte - mean) / sd)[:, 1]
    return p


def third_member(p: np.ndarray, q: np.ndarray, w: float) -> np.ndarray:
    """The fused probability `p` with a third member's `q` at weight `w` (logits mixed, the fusion's own form)."""
    from scipy.special import expit, logit

    return expit((1 - w) * logit(np.clip(p, 1e-6, 1 - 1e-6)) + w * logit(np.clip(q, 1e-6, 1 - 1e-6)))


def main() -> None:
    from BreastCADxLib.train.members import fuse
    from BreastCADxLib.train.pipeline import summary

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished `breastcadx train --folds site` folder")
    ap.add_argument("--manifest", type=Path, required=True, help="the manifest it was trained on")
    ap.add_argument("--name", default="classifier_candidates")
    args = ap.parse_args()
    report = stamp()
    r = run_rows(args.run, args.manifest)
    y, sites, groups = r["y"], r["sites"], r["groups"]
    cv = r["cv"]
    drawn_weights = cv["member_gate"]["weights"]  # the drawn-outline bundle's members, as the run chose them
    drawn_members = {k: v for k, v in (("box", np.asarray(cv["oof"]["box_cnn"])), ("whole", r["whole"]))
                     if k in drawn_weights}
    auto_members, auto_weights = {"box": r["box"], "whole": r["whole"]}, cv["automatic_outlines"]["member_weights"]
    drawn = {"shipped": (r["drawn"], "the shipped drawn-outline bundle")}
    auto = {"shipped": (r["automatic"], "the shipped automatic-outline bundle")}
    for name, v in fusion_variants(r).items():
        drawn[name] = (fuse(v["drawn"], drawn_members, drawn_weights), "features' fusion "
                       + name + ", the set's members")
        auto[name] = (fuse(v["automatic"], auto_members, auto_weights), "features' fusion " + name
                      + ", the set's members")
    feats = encoder_features(args.run, r["findings"])
    report["trunk_alone"] = {}
    for view in ("whole", "box", "both"):
        q = trunk_member(r, feats, view)
        report["trunk_alone"][view] = {s: summary(y[sites == s], q[sites == s], groups[sites == s])
                                       for s in sorted(set(sites))}
        for w in TRUNK_WEIGHTS:
            auto[f"encoder {view} at {w}"] = (third_member(r["automatic"], q, w),
                                               f"the segmenter encoder's {view} view as a third member")
    report.update(run=str(args.run), findings=len(y), drawn=judge_candidates(drawn, y, sites, groups),
                  automatic=judge_candidates(auto, y, sites, groups))
    write_results(OUT, args.name, report, markdown(report, args))


def markdown(report: dict, args) -> str:
    lines = header("Site-balanced fitting, per-site standardisation and the segmenter's encoder, at each held-out "
                   "site", report,
                   f"Made by `python -m benchmarks.classifier_candidates --run {args.run} --manifest {args.manifest}`"
                   f": {report['findings']} findings of three sites, each site scored by models trained on the other "
                   "two (the run's out-of-fold record); test splits unread.")
    lines += ["", "## Drawn outlines (the features' fusion with the box member)", ""] + candidate_table(report["drawn"])
    lines += ["", "## Automatic outlines (the automatic-outline bundle with both members)", ""]
    lines += candidate_table(report["automatic"])
    lines += ["", "## The segmenter's encoder alone (logistic on its pooled features; automatic outlines' boxes)", ""]
    return "\n".join(lines + alone_table(report["trunk_alone"])) + "\n"


def alone_table(by_view: dict) -> list[str]:
    """{view: {site: pipeline.summary}} as markdown: AUC and specificity at sensitivity 0.96 / 0.98 per site."""
    sites = sorted(next(iter(by_view.values())))
    lines = ["| view | " + " | ".join(sites) + " |", "|---|" + "---|" * len(sites)]
    for view, cells in by_view.items():
        lines.append(f"| {view} | " + " | ".join(f"AUC {v['auc']:.3f}, spec {v['specificity_at_0.96']:.2f} / "
                                                 f"{v['specificity_at_0.98']:.2f}" for v in
                                                 (cells[s] for s in sites)) + " |")
    return lines


if __name__ == "__main__":
    main()
