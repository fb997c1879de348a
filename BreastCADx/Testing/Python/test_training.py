"""Pieces of training.segmentation: the presence loss, the crop sampler, the second-look cascade score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.experiments.second_look import cascade, summarise
from training.segmentation.train import presence_loss, sample


def test_presence_loss_punishes_a_small_hot_spot_on_a_normal_image():
    cold = torch.full((1, 1, 100, 100), -6.0)
    spot = cold.clone()
    spot[..., 10:15, 10:15] = 6.0  # 25 of 10,000 pixels: a false lesion the mean would hide
    empty = torch.zeros_like(cold)
    assert presence_loss(cold, empty) < 0.01
    assert presence_loss(spot, empty) > 5.0

    lesion = torch.zeros_like(cold)
    lesion[..., 40:60, 40:60] = 1
    found = torch.where(lesion > 0, 6.0, -6.0)
    assert presence_loss(found, lesion) < 0.01
    assert presence_loss(cold, lesion) > 5.0  # a missed lesion


def test_random_crops_keep_their_labels_and_leave_the_shipped_random_stream_alone():
    img = np.tile(np.arange(200, dtype=np.uint8), (100, 1))  # intensity = column
    msk = np.zeros((100, 200), bool)
    msk[40:60, 150:170] = True
    normal = np.zeros_like(msk)
    rng, ref = np.random.default_rng(0), np.random.default_rng(0)
    out = sample(img, normal, 32, rng, roi_prob=0.3)  # no crop for a normal image: no random number drawn
    assert out["image"].shape == (1, 32, 32) and not out["label"].any()
    assert rng.random() == ref.random()
    seen_lesion = seen_empty = False
    for seed in range(40):
        out = sample(img, msk, 64, np.random.default_rng(seed), roi_prob=0.0, random_crop_prob=1.0)
        x = out["image"][0]
        assert x.max() - x.min() < 0.7 * 200  # a crop, not the whole width
        if out["label"].any():
            seen_lesion = True
            assert x[out["label"][0] > 0].min() >= 140  # label stays on the lesion's columns
        else:
            seen_empty = True
    assert seen_lesion and seen_empty


def test_second_look_cascade_keeps_candidates_at_the_threshold_and_counts_false_lesions():
    # images 0-1 lesions, 2-3 normal; the first model left 1 (lesion) and 2, 3 (normal) empty
    plain = [0.9, 0.0, 1.0, 1.0]
    checked = [(1, 0.8, 0.91), (2, 0.0, 0.90), (3, 0.0, 0.5)]  # (image, candidate's score, its mean)
    lesion = np.array([True, True, False, False])
    np.testing.assert_allclose(cascade(plain, checked, 0.95), plain)
    kept = cascade(plain, checked, 0.9)  # >= t: image 2's false lesion is kept too
    np.testing.assert_allclose(kept, [0.9, 0.8, 0.0, 1.0])
    got = summarise(kept, lesion)
    assert (got["normal_with_lesion"], got["normals"]) == (1, 2)
    np.testing.assert_allclose([got["score"], got["lesion_dice"]], [0.675, 0.85])


def test_calibration_choice_scores_raw_pooled_and_per_source_ece_across_directions():
    # two directions whose fused scores are calibrated as they are; a Platt fitted on one shifted direction
    # must move the other one away, and the table must say so (training.classification.box_fusion)
    import numpy as np

    from training.classification.box_fusion import KINDS, calibration_choice

    rng = np.random.default_rng(0)

    def rows(shift: float) -> dict:
        out = {}
        for kind in KINDS:
            z = rng.normal(0, 2, 2000)
            y = (rng.random(2000) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated logit z
            out[kind] = {"label": y, "box": z + shift, "design": z + shift, "low": np.zeros(2000, bool)}
        return out

    table = calibration_choice({"busi->busbra_l5": rows(0.0), "busbra_l5->busi": rows(1.5)}, 0.75)
    first = [r for r in table if r["rows"].startswith("busi->")]
    assert len(table) == 2 * len(KINDS)
    assert all(r["raw"] < 0.05 for r in first)  # already calibrated
    assert all(r["pooled"] > r["raw"] + 0.05 for r in first)  # the other site's Platt moves it away


def test_fit_rows_add_the_segmenters_own_masks_and_refuse_them_without_a_pass(tmp_path):
    # the feature member may be fitted on the set's own automatic masks (training.classification.designs.fit_rows):
    # those rows come from <site>__expect__<pass>.npz, the reference rows from <site>__reference.npz
    import pytest

    from training.classification.designs import fit_rows, parse_own_pass

    def write(name: str, n: int, value: float) -> None:
        np.savez(tmp_path / f"{name}.npz", label=np.arange(n) % 2, radiomics=np.full((n, 3), value),
                 descriptors=np.zeros((n, 2)), deep_box=np.zeros((n, 4)), deep_mask=np.zeros((n, 4)),
                 group=np.arange(n), case=np.array([f"c{i}" for i in range(n)]), split=np.array(["train"] * n),
                 radiomics_names=np.array(["a", "b", "c"]), descriptor_names=np.array(["d", "e"]))

    write("busi__reference", 4, 1.0)
    write("busi__expect__busi-only", 3, 2.0)
    rows = fit_rows(["busi"], ("reference", "expect"), parse_own_pass("busi=busi-only"), root=tmp_path)
    assert rows["radiomics"][:, 0].tolist() == [1.0] * 4 + [2.0] * 3
    assert rows["split"].tolist() == ["train"] * 7
    with pytest.raises(ValueError, match="segmenter pass of busi"):
        fit_rows(["busi"], ("reference", "expect"), {}, root=tmp_path)


@pytest.mark.parametrize("stage_set", ["three-site", "rotations", "busi-only"])
def test_every_runs_path_a_stage_reads_is_made_by_a_stage_it_needs(stage_set):
    """The pipeline's interfaces are declared: each runs/ path in a stage's arguments is an output (or the run
    folder) of a stage among those it needs, directly or not; the order runs needs first; modules exist."""
    import importlib.util
    import re

    from training.pipeline import SETS, order

    stages = SETS[stage_set]()
    by = {s.name: s for s in stages}
    assert len(by) == len(stages)

    def needed(name: str) -> set[str]:
        out = set(by[name].needs)
        for n in by[name].needs:
            out |= needed(n)
        return out

    for s in stages:
        assert importlib.util.find_spec(s.module) is not None, s.module
        made = {o for n in needed(s.name) for o in by[n].outputs} | {by[n].run_dir for n in needed(s.name)}
        made |= {str(Path(o).parent) for o in made}
        own = set(s.outputs) | {str(Path(o).parent) for o in s.outputs} | {s.run_dir}
        for arg in s.args:
            for path in re.findall(r"runs/[\w./+-]+", arg):
                assert path in made or path in own, f"{s.name} reads {path}, made by no stage it needs"
    last = {"three-site": "ship_classifier", "rotations": "rotation_fusion", "busi-only": "ship_classifier"}[stage_set]
    names = [s.name for s in order(stages, [last])]
    assert names[-1] == last and all(names.index(n) < names.index(s) for s in names for n in by[s].needs)


def test_the_busi_only_ship_stages_run_the_commands_its_cards_record():
    """The busi-only set's cards say which command made each of them; the pipeline's ship stages run exactly those
    (the --models folder aside: the set has moved to Testing/Data since)."""
    import shlex

    from training.pipeline import BUSI_ONLY, SETS

    by = {s.name: s for s in SETS["busi-only"]()}
    for stage, card in (("ship_classifier", "lesion_cls_fusion"), ("ship_classifier_auto", "lesion_cls_fusion_auto"),
                        ("guard", "image_guard")):
        recorded = shlex.split(json.loads((BUSI_ONLY / f"{card}.json").read_text())["training"]["command"])
        recorded = [a for i, a in enumerate(recorded) if a != "--models" and recorded[i - 1] != "--models"]
        assert sorted(recorded[3:]) == sorted(by[stage].args) and recorded[2] == by[stage].module, stage
    seg = shlex.split(json.loads((BUSI_ONLY / "lesion_seg_lite0.json").read_text())["training"]["command"])

    def options(args) -> dict:  # --name value pairs, numbers as numbers (0.001 == 1e-3); flags as True
        out, args = {}, list(args)
        for i, a in enumerate(args):
            if a.startswith("--"):
                v = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else True
                try:
                    v = float(v)
                except (TypeError, ValueError):
                    pass
                out[a] = v
        return out

    stage = options(by["seg_A"].args)
    assert by["seg_A"].module == seg[2] and all(stage[k] == v for k, v in options(seg[3:]).items())


def test_a_stage_already_made_needs_nothing_rebuilt():
    """Asking for a stage whose needs are made except for one already-made stage's own inputs: those inputs (a
    training run of hours) are not rebuilt; forcing that stage brings them back."""
    from training.pipeline import Stage, order

    stages = [Stage("train", "m", (), ("runs/x/model.pt",), run_dir="runs/x"),
              Stage("ship", "m", (), ("{models}/w.pt",), needs=("train",)),
              Stage("use", "m", (), ("runs/y.npz",), needs=("ship",))]
    made = {"ship"}
    names = [s.name for s in order(stages, ["use"], lambda s: s.name in made)]
    assert names == ["ship", "use"]
    assert [s.name for s in order(stages, ["use"], lambda s: s.name in made, forced=("ship",))] == \
        ["train", "ship", "use"]
    assert [s.name for s in order(stages, ["use"])] == ["train", "ship", "use"]


def test_a_training_run_is_done_only_when_it_marked_itself_finished(tmp_path):
    """A run cut by its time box has model.pt (the best epoch so far) and a log: not done; the marker that the last
    epoch writes makes it done (no log text is parsed)."""
    from training.common import write_finished
    from training.pipeline import Stage

    run = tmp_path / "seg"
    run.mkdir()
    (run / "model.pt").write_bytes(b"x")
    (run / "run.log").write_text("2026-12-06 stopped by the time limit after epoch 3; finished soon\n")
    stage = Stage("seg", "training.segmentation.train", (), (str(run / "model.pt"),), run_dir=str(run))
    assert not stage.done(tmp_path)
    write_finished(run, {"epochs": 8})
    assert stage.done(tmp_path)
    assert json.loads((run / "finished.json").read_text())["epochs"] == 8


def test_an_earlier_set_comes_back_whole_and_is_never_written_over(tmp_path):
    """training.restore_set: the two-site set of commit 6cf1515 (the A+B -> C held-out set) as a verified folder;
    a second restore into the same folder is refused."""
    import subprocess
    import sys

    from conftest import REPO

    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", "6cf1515^{commit}"], capture_output=True).returncode:
        pytest.skip("the repository's history does not hold commit 6cf1515 (a shallow clone)")
    from BreastCADxLib.analysis.registry import model_set_info

    out = tmp_path / "two-site"
    cmd = [sys.executable, "-m", "training.restore_set", "--commit", "6cf1515", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert model_set_info(str(out)) == {"id": "two-site", "modality": "US", "sites": ["busi", "busbra_l5"]}
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert again.returncode != 0 and "never overwritten" in again.stderr


def test_the_train_manifest_of_the_sites_leaves_test_rows_out_and_cites_each_site(tmp_path, monkeypatch):
    """training/train_manifest.py: the rows `breastcadx train` reads (lesions with their mask, lesion-free views
    without), patients prefixed by their site, every row's site and citation; never test rows, never a file
    written over."""
    import csv
    import sys

    from training import train_manifest
    from training.data import CITATIONS, SPLITS

    out = tmp_path / "busi.csv"
    monkeypatch.setattr(sys, "argv", ["x", "--sites", "busi", "--busi", str(tmp_path), "--out", str(out)])
    train_manifest.main()
    rows = list(csv.DictReader(open(out)))
    split = [r for r in csv.DictReader(open(SPLITS / "busi.csv")) if r["split"] != "test"]
    assert len(rows) == len(split) and {r["site"] for r in rows} == {"busi"}
    assert all(r["citation"] == CITATIONS["busi"] and r["patient"].startswith("busi_") for r in rows)
    assert all((r["mask"] == "") == (r["label"] == "normal") for r in rows)
    with pytest.raises(SystemExit, match="never replaced"):
        train_manifest.main()
    monkeypatch.setattr(sys, "argv", ["x", "--roles", "train,test", "--out", str(tmp_path / "t.csv")])
    with pytest.raises(SystemExit, match="final report only"):
        train_manifest.main()


def test_ship_set_copies_a_verified_set_byte_for_byte_under_a_new_id_and_refuses_a_changed_one(tmp_path):
    """training.ship_set: weights and arrays byte for byte, every card's model_set the new id, the guard from
    another set when asked (and said on card.md), the result verified; an altered source is refused."""
    import shutil

    from BreastCADxLib.analysis.registry import MODELS_DIR, ModelError, load_card, verify_model_set
    from conftest import BUSI_ONLY
    from training.ship_set import ship

    source = tmp_path / "made"
    shutil.copytree(BUSI_ONLY, source)
    (source / "card.md").write_text(f"# Model set `{verify_model_set(source)['id']}`\n\nmade here\n")
    out = tmp_path / "shipped"
    manifest = ship(source, "renamed", out, guard=MODELS_DIR)
    assert manifest["id"] == "renamed" and verify_model_set(out)["id"] == "renamed"
    for name in manifest["files"]:
        origin = MODELS_DIR if name.startswith("image_guard.") else source
        if name.endswith(".json"):
            assert json.loads((out / name).read_text())["model_set"] == "renamed"
        else:
            assert (out / name).read_bytes() == (origin / name).read_bytes()
    assert load_card("image_guard", out).threshold == load_card("image_guard", MODELS_DIR).threshold
    card = (out / "card.md").read_text()
    assert card.startswith("# Model set `renamed`") and "input guard" in card and "made here" in card
    (source / "lesion_box_cnn.pt").write_bytes(b"changed")
    with pytest.raises(ModelError, match="SHA256"):
        ship(source, "again", tmp_path / "other")
    assert not (tmp_path / "other").exists()
