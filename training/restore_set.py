"""Bring back a model set that shipped in an earlier commit, as a folder (a held-out set for the benchmarks).

    python -m training.restore_set --commit 6cf1515 --out runs/two-site     # the two-site set (BUSI + L5)

Only the set's own files (Resources/Models/*, not its subfolders); the folder is verified like any model set.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tarfile
from pathlib import Path

from BreastCADxLib.analysis.registry import verify_model_set

MODELS = "BreastCADx/Resources/Models"
# the two-site set (BUSI + L5), shipped until this commit: the A+B -> C held-out set of the pipeline and benchmarks
TWO_SITE_COMMIT = "6cf1515"
TWO_SITE = Path("runs/two-site")
# where the README recipe's three-site set (training.pipeline --set three-site; shipped until commit 6d4427d, whose
# input guard, training.fit_guard's, the shipped set keeps: training.ship_set --guard) is restored and made
RECIPE = Path("runs/recipe-three-site")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commit", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: a restored set is never overwritten")
    blob = subprocess.run(["git", "archive", args.commit, MODELS], check=True, capture_output=True).stdout
    args.out.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for member in tar.getmembers():
            rel = Path(member.name).relative_to(MODELS) if member.name.startswith(MODELS + "/") else None
            if member.isfile() and rel is not None and len(rel.parts) == 1:
                (args.out / rel.name).write_bytes(tar.extractfile(member).read())
    manifest = verify_model_set(args.out)
    print(f"restored {manifest['id']} ({len(manifest['files'])} files) from {args.commit} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
