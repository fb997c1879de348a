"""What the leave-one-site-out benchmarks of `breastcadx train`'s design share: a manifest's findings with the
features a `train` run cached for them (reference and redrawn outlines), and one held-out site's figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_findings(manifest: Path, run: Path) -> dict:
    """The manifest's findings, labels, patients and sites, and the ultrasound design's features of their reference
    and redrawn outlines from the run's cache (computed there when missing)."""
    from BreastCADxLib.train.pipeline import DESIGN, features, read_manifest

    findings = read_manifest(manifest)[0]
    outlines = {}
    for redraw in (False, True):
        rows = features(findings, run / ".work", "cpu", float("inf"), lambda m: None, DESIGN["US"]["descriptors"],
                        redrawn=redraw)
        outlines["redrawn" if redraw else "reference"] = (
            np.array([rows[f.case_id]["rad"] for f in findings]),
            np.array([rows[f.case_id]["deep"] for f in findings], float))
    return {"findings": findings, "outlines": outlines, "y": np.array([f.label for f in findings]),
            "groups": np.array([f.patient for f in findings]), "sites": np.array([f.site for f in findings])}


def site_row(y, p, groups) -> dict:
    """AUC with its patient-bootstrap CI, and specificity at sensitivity 0.96 and 0.98."""
    from BreastCADxLib.train.pipeline import summary

    r = summary(y, p, groups)
    return {k: r[k] for k in ("auc", "ci95", "n", "specificity_at_0.96", "specificity_at_0.98")}


def row_text(r: dict) -> str:
    return (f"{r['auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['specificity_at_0.96']:.2f} | "
            f"{r['specificity_at_0.98']:.2f}")
