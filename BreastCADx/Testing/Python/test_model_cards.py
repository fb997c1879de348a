"""The model card's contract (Resources/Schemas/model_card.schema.json): every shipped card is inside it (checked
by jsonschema and by the product's own reader of the schema), and no card outside it is written or loaded."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jsonschema
import pytest

from BreastCADxLib.analysis.cards import (
    CARD_CLASSES,
    FusionCard,
    GuardCard,
    ImageCnnCard,
    ModelCard,
    SegmenterCard,
    card_schema,
    check_card,
)
from BreastCADxLib.analysis.registry import MODELS_DIR, load_card, save_card
from BreastCADxLib.errors import ModelError
from conftest import BUSI_ONLY

CARDS = sorted(p for d in (MODELS_DIR, BUSI_ONLY) for p in d.glob("*.json") if p.name != "modelset.json")


def test_every_set_has_its_four_kinds_of_card():
    kinds = {(p.parent.name, ModelCard.from_json(json.loads(p.read_text())).kind) for p in CARDS}
    for folder in ("Models", BUSI_ONLY.name):
        assert {k for f, k in kinds if f == folder} == {"segmenter", "image_cnn", "fusion", "guard"}


@pytest.mark.parametrize("path", CARDS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_card_is_inside_the_schema(path):
    card = json.loads(path.read_text())
    jsonschema.validate(card, card_schema())
    check_card(card, path)
    typed = ModelCard.from_json(card, path.parent)
    assert typed.command.startswith(("python -m training.", "breastcadx train "))
    assert type(typed) is CARD_CLASSES[typed.kind] and typed.path == path
    assert typed.to_json() == card  # the class is the card file's content, nothing lost or added


def test_save_card_takes_only_a_typed_card_and_the_typed_card_checks_itself(tmp_path):
    folder = tmp_path / "set"
    shutil.copytree(MODELS_DIR, folder)
    seg = load_card("lesion_seg_lite0", folder)
    with pytest.raises(TypeError, match="typed card"):
        save_card(folder, seg.to_json())
    broken = dataclasses.replace(seg, postprocessing={"threshold": 0.35})
    before = (folder / "lesion_seg_lite0.json").read_bytes()
    with pytest.raises(ModelError, match="card.postprocessing.presence is missing"):
        save_card(folder, broken)
    assert (folder / "lesion_seg_lite0.json").read_bytes() == before
    with pytest.raises(ModelError, match="a segmenter card where a fusion card was expected"):
        FusionCard.from_json(seg.to_json(), folder)
    moved = dataclasses.replace(seg, postprocessing={**seg.postprocessing, "presence": 0.9})
    save_card(folder, moved)  # written through the class, the manifest follows, and it loads back typed
    again = load_card("lesion_seg_lite0", folder)
    assert again.postprocessing["presence"] == 0.9 and again.notes == seg.notes


def test_each_kind_has_its_class_with_what_its_consumer_reads():
    assert isinstance(load_card("lesion_seg_lite0"), SegmenterCard)
    assert load_card("lesion_seg_lite0").size == (256, 256)
    box, whole = load_card("lesion_box_cnn"), load_card("lesion_whole_cnn")
    assert isinstance(box, ImageCnnCard) and (box.view, whole.view) == ("box", "whole")
    fusion, auto = load_card("lesion_cls_fusion"), load_card("lesion_cls_fusion_auto")
    assert isinstance(fusion, FusionCard) and fusion.automatic_masks == "lesion_cls_fusion_auto"
    # each bundle at the weights the train run chose on its own outlines (drawn: the box member alone)
    assert fusion.box_member["model"] == "lesion_box_cnn" and fusion.image_member is None
    assert auto.box_member["model"] == "lesion_box_cnn" and auto.image_member["model"] == "lesion_whole_cnn"
    assert fusion.box_member["weight"] != auto.box_member["weight"]
    assert isinstance(load_card("image_guard"), GuardCard) and 0 < load_card("image_guard").threshold < 1


@pytest.mark.parametrize("change, problem", [
    (lambda c: c["training"].pop("command"), "card.training.command is missing"),
    (lambda c: c["architecture"].update(arch="resnet50"), "card.architecture.arch must be one of"),
    (lambda c: c["postprocessing"].pop("presence"), "card.postprocessing.presence is missing"),
    (lambda c: c.update(sha256="abc"), "card.sha256 does not match"),
])
def test_a_card_outside_the_schema_is_neither_written_nor_loaded(tmp_path, change, problem):
    folder = tmp_path / "set"
    shutil.copytree(MODELS_DIR, folder)
    card = json.loads((folder / "lesion_seg_lite0.json").read_text())
    change(card)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(card, card_schema())  # the two readers agree
    before = (folder / "lesion_seg_lite0.json").read_bytes()
    with pytest.raises(ModelError, match=problem) as e:
        save_card(folder, ModelCard.from_json(card, folder))
    assert "lesion_seg_lite0.json" in str(e.value)
    assert (folder / "lesion_seg_lite0.json").read_bytes() == before  # nothing written
    (folder / "lesion_seg_lite0.json").write_text(json.dumps(card))  # changed by hand, and re-listed
    from BreastCADxLib.analysis.registry import write_modelset

    write_modelset(folder)
    with pytest.raises(ModelError) as e:
        load_card("lesion_seg_lite0", folder)
    assert problem in str(e.value) or "SHA256 differs" in str(e.value)  # the manifest's own check comes first


def test_the_typed_card_names_what_consumers_read():
    seg = load_card("lesion_seg_lite0")
    assert seg.kind == "segmenter" and seg.arch == "lite0" and seg.weights_path.is_file()
    with pytest.raises(ModelError, match="no network architecture"):
        load_card("lesion_cls_fusion").arch  # noqa: B018


def test_a_model_set_of_ones_own_is_a_folder_verified_before_use(tmp_path, sample_dicom, sample_mask):
    """`--model-set FOLDER`: a copy of a shipped set analyses like it; the same folder altered is refused naming
    the file; a name that is neither a set nor a set's folder is refused naming what is accepted."""
    import subprocess
    import sys

    own = tmp_path / "my-set"
    shutil.copytree(BUSI_ONLY, own)
    cmd = [sys.executable, "-m", "BreastCADxLib.cli.main", "analyze", str(sample_dicom), "--mask", str(sample_mask)]
    r = subprocess.run(cmd + ["--model-set", str(own), "--out", str(tmp_path / "a")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    mine = json.loads((tmp_path / "a" / "result.json").read_text())
    r = subprocess.run(cmd + ["--model-set", str(BUSI_ONLY), "--out", str(tmp_path / "b")], capture_output=True,
                       text=True)
    shipped = json.loads((tmp_path / "b" / "result.json").read_text())
    assert mine["provenance"]["model_set"] == str(own)
    assert mine["malignancy_probability"] == pytest.approx(shipped["malignancy_probability"], abs=1e-9)
    with open(own / "lesion_box_cnn.pt", "r+b") as f:
        f.seek(200)
        f.write(b"\0\0\0\0")
    r = subprocess.run(cmd + ["--model-set", str(own), "--out", str(tmp_path / "c")], capture_output=True, text=True)
    assert r.returncode == 2 and "lesion_box_cnn.pt" in r.stderr and "SHA256 mismatch" in r.stderr, r.stderr
    r = subprocess.run(cmd + ["--model-set", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "a folder holding a modelset.json" in r.stderr, r.stderr


def test_the_panels_model_set_choice_reaches_the_worker(tmp_path, sample_dicom, sample_mask):
    """A folder chosen in the panel (parameter modelSet) is the set the background worker uses, verified."""
    import slicer

    from BreastCADxLib.io import load_image, load_mask
    from BreastCADxLib.scene import parameters as params
    from BreastCADxLib.scene.logic import JobFailed, WorkflowLogic
    from BreastCADxLib.scene.mrml import add_mask_segment
    from BreastCADxLib.scene.worker import InProcessRunner

    own = tmp_path / "panel-set"
    shutil.copytree(BUSI_ONLY, own)
    scene = slicer.vtkMRMLScene()
    try:
        logic = WorkflowLogic(scene, runner=InProcessRunner())
        volume = logic.load_image_file(sample_dicom, "sample")
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "lesion")
        segment_id = add_mask_segment(load_mask(sample_mask, load_image(sample_dicom)), volume, segmentation)
        params.set_values(logic.parameters, modelSet=str(own))
        logic.classify(volume, segmentation, segment_id, device="cpu")
        assert logic.current_result()[0].provenance.model_set == str(own)
        (own / "modelset.json").unlink()
        with pytest.raises(JobFailed, match="modelset.json"):
            logic.classify(volume, segmentation, segment_id, device="cpu")
    finally:
        scene.Clear(1)


def test_a_bundle_is_written_through_its_typed_card_and_must_reproduce_its_fit(tmp_path):
    """train/bundle.write_bundle (both training sides): the arrays and the card land together, the card's SHA256
    and files follow the arrays, and a bundle that does not reproduce the fit it came from is refused, naming it."""
    import numpy as np

    from BreastCADxLib.analysis.classifier import load_classifier
    from BreastCADxLib.train.bundle import write_bundle

    folder = tmp_path / "set"
    shutil.copytree(MODELS_DIR, folder)
    card = load_card("lesion_cls_fusion_auto", folder)
    with np.load(folder / card.arrays, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    rad = np.random.default_rng(0).normal(size=(4, len(card.radiomics_names)))
    deep = np.random.default_rng(1).normal(size=(4, arrays["m_deep_mean"].shape[0]))
    expected = load_classifier(card.id, folder).raw_proba(rad, deep)[0]
    arrays["explain_deep_weight"] = arrays["explain_deep_weight"] * 2  # a change the fit does not see
    written, diff = write_bundle(folder, dataclasses.replace(card, sha256="0" * 64, files={}), arrays,
                                 check=(rad, deep, expected))
    assert diff < 1e-9 and written.files == {card.arrays: written.sha256} != {card.arrays: card.sha256}
    assert load_card(card.id, folder).sha256 == written.sha256  # the manifest followed
    with pytest.raises(ModelError, match="does not reproduce the fit") as e:
        write_bundle(folder, written, arrays, check=(rad, deep, expected + 0.1))
    assert "lesion_cls_fusion_auto.json" in str(e.value)
