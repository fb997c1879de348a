"""The input guard `breastcadx train` writes (one-class, with the leave-site-out residual bound), judged like the
shipped guard of `training.fit_guard` (`input_guard.md`).

    python -m benchmarks.train_guard --manifest runs/three_sites.csv --minimias ../data/minimias

Genuine images: for each site, the guard made from the other sites' images only (its own threshold and bound, the
bound measured with one of those sites held out) passes or refuses every image of the held-out site; and the guard
made from all sites on its own images. Foreign images: fit_guard's negative families (mini-MIAS films, an MR slice,
pictures, synthetic patterns, text pages), none of which `train` ever shows its guard. Test splits are not read (the
manifest's rows are non-test). Writes benchmarks/results/train_guard.md / .json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.machine import header, stamp, write_results

OUT = Path(__file__).resolve().parent / "results"


def main() -> None:
    from BreastCADxLib.analysis.guard import embed, embedder, one_class_score
    from BreastCADxLib.io import load_image
    from BreastCADxLib.train.pipeline import fit_one_class, read_manifest
    from training.fit_guard import negative_families

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--minimias", type=Path, required=True, help="prepared mini-MIAS (its images/ folder)")
    args = ap.parse_args()
    report = stamp()
    findings, _, normals = read_manifest(args.manifest)
    site_of = {x.image: x.site for x in [*findings, *normals]}
    images = sorted(site_of)
    sites = np.array([site_of[i] for i in images])
    engine = embedder("cpu")
    z = np.concatenate([embed(engine, [load_image(p).array[0] for p in images[i:i + 16]])
                        for i in range(0, len(images), 16)])
    report["genuine"] = []
    for s in sorted(set(sites)):
        params, threshold = fit_one_class(z[sites != s], list(sites[sites != s]))
        passed = one_class_score(z[sites == s], params) >= threshold
        report["genuine"].append({"images": f"{s} (guard made without it)", "n": int((sites == s).sum()),
                                  "pass": float(passed.mean())})
    params, threshold = fit_one_class(z, list(sites))
    report["genuine"].append({"images": "every site (the guard made from them)", "n": len(z),
                              "pass": float((one_class_score(z, params) >= threshold).mean())})
    report["bound"] = float(params.get("residual_max", np.nan))
    report["foreign"] = []
    for name, planes in negative_families(args.minimias).items():
        f = np.concatenate([embed(engine, planes[i:i + 16]) for i in range(0, len(planes), 16)])
        report["foreign"].append({"family": name, "n": len(planes),
                                  "refused": float((one_class_score(f, params) < threshold).mean())})
    lines = header("The input guard `breastcadx train` writes, on genuine and foreign images", report,
                   f"`python -m benchmarks.train_guard --manifest {args.manifest} --minimias {args.minimias}`")
    lines += ["", __doc__.split("\n\n")[2].replace("\n", " "), "",
              f"Bound on the distance from the subspace, made from every site: {report['bound']:.3f}.", "",
              "| ultrasound images | n | pass |", "|---|---|---|"]
    lines += [f"| {r['images']} | {r['n']} | {r['pass']:.1%} |" for r in report["genuine"]]
    lines += ["", "| foreign family (never shown to the guard) | n | refused |", "|---|---|---|"]
    lines += [f"| {r['family']} | {r['n']} | {r['refused']:.1%} |" for r in report["foreign"]]
    write_results(OUT, "train_guard", report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
