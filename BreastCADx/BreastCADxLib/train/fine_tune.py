"""`adapt --fine-tune`'s run: `train --from SET --segmenter-epochs 0` on a finished batch's labelled lesions.

SiteFineTune is the FineTuner (results.site_fine_tune) the command line hands to `adapt`: the images come from the
batch's own manifest, each checked against the batch's input digest; the outlines are the ones the batch classified
(mask.nrrd). The fusion is pulled toward the set's coefficients and the image members fine-tuned at a tenth of the
learning rate; the segmenter is kept (so are the batch's presence scores), and the source's input guard replaces
the one `train` fits (it accepted every one of these images; one fitted on ~100 images of one hospital would know
only them). The new set is kept only where its out-of-fold probabilities pass `train`'s own gate against the
probabilities the set as it is gave the same lesions in the batch (results.site_fine_tune.RULE).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.results.site_fine_tune import (
    FOLDS,
    RULE,
    set_name,
    set_scores,
    summaries,
    work_folder,
    write_manifest,
)


@dataclass(frozen=True)
class SiteFineTune:
    manifest: Path  # the batch's own manifest (case_id, image[, mask]), for the images
    device: str = "cpu"
    max_minutes: float = 0.0
    member_epochs: int | None = None

    def __call__(self, cases: list, results: Path, out: Path, profile_id: str, source: dict, error) -> dict:
        from BreastCADxLib.analysis.registry import model_set_fingerprint

        try:
            same = model_set_fingerprint(source["id"]) == source["sha256"]
        except BreastCADxError:
            same = False
        if not same:
            raise error(f"the batch's model set '{source['id']}' is not here as the batch used it (run adapt where "
                        "the batch ran, with the same set)", results)
        began = not out.exists()
        rows = train_rows(cases, results, Path(self.manifest), error)
        try:
            return self._run(cases, rows, out, profile_id, source["id"], error)
        except BreastCADxError as e:
            if began and "--max-minutes" not in e.cause:  # refused before anything worth keeping: leave nothing
                shutil.rmtree(out, ignore_errors=True)
            raise

    def _run(self, cases: list, rows: list, out: Path, profile_id: str, source: str, error) -> dict:
        from BreastCADxLib.analysis.registry import load_card, model_set_dir, model_set_info, write_modelset
        from BreastCADxLib.train.pipeline import TrainError, train

        work = work_folder(out)
        write_manifest(work / "findings.csv", rows, error)
        folder = work / set_name(profile_id)
        try:
            cv = json.loads((folder / ".work" / "cv.json").read_text()) if (folder / "modelset.json").is_file() \
                else train(work / "findings.csv", model_set_info(source)["modality"], folder, self.device,
                           self.max_minutes, FOLDS, start_from=source, segmenter_epochs=0,
                           member_epochs=self.member_epochs)
        except TrainError as e:
            if "--max-minutes" in e.cause:  # the time box: the same adapt command goes on
                raise error(e.cause.replace("the same command", "the same `breastcadx adapt` command"),
                            work) from None
            raise error(f"the fine-tune cannot run on these cases: {e.cause}", e.path or work) from None
        src = model_set_dir(source)  # the source's guard replaces the one fitted on these images alone
        for name in ("image_guard.json", load_card("image_guard", src).weights):
            shutil.copyfile(src / name, folder / name)
        write_modelset(folder)
        card = folder / "card.md"
        note = (f"\n`breastcadx adapt --fine-tune`: the input guard is the source set `{source}`'s (it accepted "
                "every one of these images), not one fitted on them alone.\n")
        if card.is_file() and not card.read_text(encoding="utf-8").endswith(note):
            card.write_text(card.read_text(encoding="utf-8") + note, encoding="utf-8")
        scores = set_scores(cv)
        tuned = [c if c.label is None or c.probability is None else
                 replace(c, probability=(scores.get("auto" if c.mask_origin == "auto" else "user")
                                         or scores["user"]).get(c.case_id)) for c in cases]
        kept, gate = judge(cases, tuned)
        record = {"from": None, "kept": kept, "gate": gate, "rule": RULE, "model_set_folder": folder.name,
                  "lesions": len(rows), "command": load_card("lesion_cls_fusion", folder).training.get("command"),
                  "members": (cv.get("member_gate") or {}).get("weights"), "cross_validation": summaries(cv),
                  "stage_seconds": cv.get("stage_seconds"), "guard": "the source set's (it accepted these images)"}
        return {"cases": tuned if kept else cases, "folder": folder, "record": record,
                "cv_text": json.dumps(cv, indent=1) + "\n"}


def train_rows(cases: list, results: Path, manifest: Path, error) -> list[list[str]]:
    """Train-manifest rows (case_id, image, label, patient, mask) of the classified lesions; each image taken from
    the batch's manifest and checked to be the one the batch analysed."""
    from BreastCADxLib.io.files import fingerprint
    from BreastCADxLib.results.batch_manifest import read_manifest
    from BreastCADxLib.results.case_files import NAMES

    try:  # the batch's own reader: the rows it ran
        rows = {r["case_id"]: r for r in read_manifest(manifest)}
    except BreastCADxError as e:
        raise error(f"--fine-tune takes the batch's own manifest: {e.cause}", manifest) from None
    out = []
    for c in cases:
        if c.label is None or c.probability is None:
            continue
        row = rows.get(c.case_id)
        if row is None:
            raise error(f"case {c.case_id!r} of the batch is not in this manifest: --fine-tune takes the batch's own "
                        "manifest (for its images)", manifest)
        folder = results.parent / c.case_id
        inputs = [manifest.parent / (row["image"] or "").strip()] + (
            [manifest.parent / row["mask"].strip()] if (row.get("mask") or "").strip() else [])
        try:  # read_site_cases kept what result.json says the batch analysed
            same = inputs[0].is_file() and fingerprint(*inputs) == c.inputs_sha256
        except OSError:
            same = False
        if not same:
            raise error(f"case {c.case_id!r}: its image (or mask) is not the one the batch analysed (missing, or "
                        "changed since)", inputs[0])
        mask = folder / NAMES["mask"]
        if not mask.is_file():
            raise error("the case's outline (mask.nrrd) is missing from the batch's folder", folder)
        out.append([c.case_id, str(inputs[0].resolve()), "malignant" if c.label == 1 else "benign", c.group,
                    str(mask.resolve())])
    return out


def judge(cases: list, tuned: list) -> tuple[bool, dict]:
    """train's gate (pipeline.no_worse, patient groups) between the batch's probabilities and the fine-tuned set's
    out-of-fold ones, on the lesions both classified."""
    import numpy as np

    from BreastCADxLib.train.pipeline import no_worse

    pairs = [(a, b) for a, b in zip(cases, tuned) if a.label is not None and a.probability is not None
             and b.probability is not None]
    y = np.array([a.label for a, _ in pairs])
    if len(set(y.tolist())) < 2:
        return False, {"reason": "the fine-tuned set classified too few of the lesions"}
    kept, gate = no_worse(y, [b.probability for _, b in pairs], [a.probability for a, _ in pairs],
                          groups=np.array([a.group for a, _ in pairs]))
    return kept, {**gate, "lesions": len(pairs)}


__all__ = ["SiteFineTune", "train_rows", "judge"]
