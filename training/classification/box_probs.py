"""Add the shipped image-level members' probabilities to feature files: `box_<model set>` per row, computed on
the same mask as the row's features (reference, perturbed, or the segmenter pass's automatic / ROI-box mask), and
`whole_<model set>` (the mask only picks the frame), for each member either of the set's bundles (drawn or
automatic outlines) fuses.

    python -m training.classification.box_probs --sets three-site,BreastCADx/Testing/Data/model_sets/busi-only \
        runs/site_features/*__test.npz BreastCADx/Testing/Data/test_rows.npz

Used for the final report (benchmarks/leave_site_out.py) and the committed test rows (a file with a `site` column:
reference outlines, each row at its own site); the files are rewritten in place with the new columns, named by
each set's manifest id.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.box_classifier import get_member_scorer
from BreastCADxLib.analysis.classifier import DEFAULT_CLASSIFIER
from BreastCADxLib.analysis.registry import load_card, model_set_dir, model_set_info
from BreastCADxLib.image import Image
from training.classification.site_features import perturbed
from training.data import add_data_args, cases
from training.segmentation.site_pass import load_pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--sets", default="three-site", help="shipped set names or model set folders")
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    scorers = {}  # column -> scorer
    for s in args.sets.split(","):
        card = load_card(DEFAULT_CLASSIFIER, model_set_dir(s))
        auto = [load_card(card.automatic_masks, model_set_dir(s))] if card.automatic_masks else []
        for c in [card, *auto]:  # a member fused in either bundle (drawn or automatic outlines)
            for column, member in (("box", c.box_member), ("whole", c.image_member)):
                if member:
                    scorers[f"{column}_{model_set_info(s)['id']}"] = get_member_scorer(member["model"], "cpu", s)
    whole_done: dict[tuple[str, str, str], float] = {}
    for path in args.files:
        z = dict(np.load(path, allow_pickle=False))
        if "site" in z:  # the committed test rows: reference outlines, several sites
            kind, rest, row_sites = "reference", [], z["site"].tolist()
            by_case = {(c.site, c.case): c for s in sorted(set(row_sites))
                       for c in cases(args, [s], ("test",), lesions_only=True)}
        else:
            site, kind, *rest = path.stem.split("__")
            roles = ("test",) if path.stem.endswith("__test") else ("train", "val")
            row_sites = [site] * len(z["case"])
            by_case = {(site, c.case): c for c in cases(args, [site], roles, lesions_only=True)}
        passed = {}
        if kind in ("expect", "roi"):
            seg = rest[0]
            passed = load_pass(Path("runs/site_pass") / f"{seg}__{site}__{'+'.join(roles)}.npz")
        probs: dict[str, list[float]] = {s: [] for s in scorers}
        for site, case in zip(row_sites, z["case"].tolist()):
            img, ref = by_case[site, case].load()
            mask = ref if kind == "reference" else perturbed(ref, case) if kind == "perturbed" else \
                passed[case][kind].astype(bool)
            for s, scorer in scorers.items():
                if s.startswith("whole_"):  # the same for every mask of the case: once per case, not per file
                    key = (s, site, case)
                    if key not in whole_done:
                        whole_done[key] = scorer.probability(Image(array=img[None]), mask[None])
                    probs[s].append(whole_done[key])
                else:
                    probs[s].append(scorer.probability(Image(array=img[None]), mask[None]))
        for column, v in probs.items():
            z[column] = np.array(v, np.float32)
        np.savez_compressed(path, **z)
        print(f"{path}: {len(z['case'])} rows, columns {', '.join(scorers)}", flush=True)


if __name__ == "__main__":
    main()
