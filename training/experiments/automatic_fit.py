"""Fit the bundle for the segmenter's own outlines on what it will read? The shipped bundle is fitted on each
finding's reference outline, its redrawn outline and its automatic outline (one row in three automatic), and the
reference outline's shape and margin rank far better than an automatic outline's (training/segmentation/
EXPERIMENTS.md, "its margin"): it may lean on what an automatic outline cannot show. Per held-out site of a finished
`breastcadx train --folds site` run, refitted on the other two sites:
  - "automatic rows only": the training sites' automatic outlines alone;
  - "automatic, eroded and dilated": the same with the outlines read 5 % smaller and larger (outline_tta's cache);
  - "automatic rows doubled": the shipped rows with each automatic row twice (half the fit automatic);
each fused with the image members at the run's weights and judged against the shipped automatic path
(benchmarks.outline_limits.judge_candidates).

    python -m training.experiments.automatic_fit --run runs/three-site-train --manifest runs/three_sites.csv

Needs training.experiments.outline_tta's feature cache (--work; made there when missing). Writes
benchmarks/results/automatic_fit.md/json. Non-test rows only.
"""

from __future__ import annotations

import numpy as np


def candidates(r: dict, var: dict[str, tuple]) -> dict[str, tuple[np.ndarray, str]]:
    from BreastCADxLib.train.members import fuse
    from BreastCADxLib.train.outlines import with_automatic
    from BreastCADxLib.train.pipeline import DESIGN, _fusion_proba, fit_fusion

    y, ok, splits = r["y"], r["ok"], r["splits"]
    members, weights = {"box": r["box"], "whole": r["whole"]}, r["cv"]["automatic_outlines"]["member_weights"]
    c = DESIGN["US"]["c"]

    def auto_rows(tr, views) -> tuple:
        parts = [(a[tr[k[tr]]], d[tr[k[tr]]], y[tr[k[tr]]]) for a, d, k in views]
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

    own = (r["arad"], r["adeep"], ok)
    designs = {
        "automatic rows only": (lambda tr: auto_rows(tr, [own]), "fitted on the training sites' automatic outlines"),
        "automatic, eroded and dilated": (lambda tr: auto_rows(tr, [own, *var.values()]),
                                          "the same, with each outline also read 5 % smaller and larger"),
        "automatic rows doubled": (
            lambda tr: tuple(np.concatenate([b, a]) for b, a in zip(
                with_automatic(r["rad"], r["deep"], y, r["arad"], r["adeep"], ok, tr, r["redrawn"]),
                auto_rows(tr, [own]))),
            "the shipped rows with each automatic row twice"),
    }
    out = {"shipped": (r["automatic"], "the shipped automatic bundle, members at "
                       + " / ".join(str(w) for w in weights.values()))}
    for name, (rows, what) in designs.items():
        p = np.full(len(y), 0.5)
        for tr, te in splits:
            fit = fit_fusion(rows(tr), c)
            s = te[ok[te]]
            p[s] = _fusion_proba(fit, r["arad"][s], r["adeep"][s])
        out[name] = (fuse(p, members, weights), what)
    return out


def main() -> None:
    from training.experiments.outline_tta import run_study

    run_study("automatic_fit", "The bundle for automatic outlines fitted on automatic outlines", __doc__, candidates)


if __name__ == "__main__":
    main()
