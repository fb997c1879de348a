"""Make a set `breastcadx train` wrote the shipped set: the same files, its id re-stamped.

    python -m training.restore_set --commit 6d4427d --out runs/recipe-three-site   # its guard: training.fit_guard
    python -m training.ship_set training/sets/three-site-train --id three-site --guard runs/recipe-three-site \
        --out BreastCADx/Resources/Models

The source set is verified first; the weights and arrays are copied byte for byte, each card's `model_set` becomes
the new id, card.md says where the set came from (source id and modelset.json SHA256), and modelset.json is
rewritten (its SHA256 list). --guard takes the input guard from another verified set instead: the shipped
ultrasound set keeps the guard `training.fit_guard` fits on the same sites (shown foreign images and near
misses, it refuses what the train run's one-class guard, which knows only the set's own images, lets through).
The files of the set already in --out (those its modelset.json lists) are replaced; anything else is left, named.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from BreastCADxLib.analysis.guard import GUARD_ID
from BreastCADxLib.analysis.registry import MODELSET_FILE, verify_model_set, write_modelset

CARD_MD = "card.md"


def ship(source: Path, new_id: str, out: Path, guard: Path | None = None) -> dict:
    manifest = verify_model_set(source)
    source_sha = hashlib.sha256((source / MODELSET_FILE).read_bytes()).hexdigest()
    files = {name: source for name in manifest["files"]}
    note = ""
    if guard is not None:
        guard_files = [n for n in verify_model_set(guard)["files"] if n.startswith(GUARD_ID + ".")]
        files = {**{n: d for n, d in files.items() if not n.startswith(GUARD_ID + ".")},
                 **{n: guard for n in guard_files}}
        guard_sha = hashlib.sha256((guard / MODELSET_FILE).read_bytes()).hexdigest()
        note = (f" The input guard ({', '.join(guard_files)}) comes from the set in {guard} ({MODELSET_FILE} SHA256 "
                f"{guard_sha}), not from the train run.")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        stage = Path(tmp)
        for name, folder in files.items():
            if name.endswith(".json"):
                card = json.loads((folder / name).read_text())
                card["model_set"] = new_id
                (stage / name).write_text(json.dumps(card, indent=1) + "\n")
            else:
                shutil.copyfile(folder / name, stage / name)
        if (source / CARD_MD).is_file():
            text = (source / CARD_MD).read_text().replace(f"# Model set `{manifest['id']}`",
                                                          f"# Model set `{new_id}`", 1)
            (stage / CARD_MD).write_text(text + f"\nShipped as `{new_id}` by `training.ship_set` from the set "
                                         f"`{manifest['id']}` (its {MODELSET_FILE} SHA256 {source_sha}): the "
                                         "same weights and arrays; the cards' `model_set` re-stamped." + note + "\n")
        shipped = write_modelset(stage, id=new_id, modality=manifest["modality"], sites=manifest["sites"])
        verify_model_set(stage)
        out.mkdir(parents=True, exist_ok=True)
        if (out / MODELSET_FILE).is_file():
            for name in [*json.loads((out / MODELSET_FILE).read_text())["files"], MODELSET_FILE, CARD_MD]:
                (out / name).unlink(missing_ok=True)
        for f in stage.iterdir():
            shutil.copyfile(f, out / f.name)
    verify_model_set(out)
    left = sorted(p.name for p in out.iterdir() if p.is_file() and p.name not in shipped["files"]
                  and p.name not in (MODELSET_FILE, CARD_MD))
    if left:
        print(f"left in {out} (not part of the set): {', '.join(left)}")
    return shipped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="a model set folder made by `breastcadx train`")
    ap.add_argument("--id", required=True, help="the shipped set's id")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--guard", type=Path, help="a verified set whose input guard the shipped set takes")
    args = ap.parse_args()
    shipped = ship(args.source, args.id, args.out, args.guard)
    print(f"{args.out}: set '{shipped['id']}' ({shipped['modality']}; {', '.join(shipped['sites'])}), "
          f"{len(shipped['files'])} files verified")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
