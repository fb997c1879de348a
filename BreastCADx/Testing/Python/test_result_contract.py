"""The result contract: result.json validates against the committed schema and reads back as the same result."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from BreastCADxLib.analysis.pipeline import analyze
from BreastCADxLib.analysis.result import AnalysisResult, ResultFormatError
from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.results.case_files import read_case, write_case
from conftest import MODULE_DIR

SCHEMA = json.loads((MODULE_DIR / "Resources" / "Schemas" / "result.schema.json").read_text())
DATA = Path(__file__).resolve().parents[1] / "Data" / "busi"


@pytest.fixture(scope="module")
def written(sample_dicom, sample_mask, tmp_path_factory):
    image = load_image(sample_dicom)
    result = analyze(image, load_mask(sample_mask, image), mask_origin="edited")
    out = tmp_path_factory.mktemp("case")
    write_case(result, image, out)
    return image, result, out


def test_result_json_is_strict_json_and_matches_the_schema(written):
    payload = json.loads((written[2] / "result.json").read_text())
    json.dumps(payload, allow_nan=False)
    jsonschema.validate(payload, SCHEMA)
    assert payload["provenance"]["mask_origin"] == "edited" and payload["provenance"]["segmenter"]["sha256"]
    assert payload["files"] == {"mask": "mask.nrrd", "heatmap": "heatmap.nrrd", "overlay": "overlay.png",
                                "result": "result.json"}


def test_no_lesion_result_matches_the_schema(tmp_path):
    image = load_image(DATA / "benign_351.png")  # nothing passes the presence threshold here
    result = analyze(image)
    assert not result.lesion_found
    write_case(result, image, tmp_path)
    payload = json.loads((tmp_path / "result.json").read_text())
    jsonschema.validate(payload, SCHEMA)
    assert payload["predicted_label"] == "normal" and payload["provenance"]["mask_origin"] == "auto"


def test_read_back_is_the_same_result(written):
    image, result, out = written
    back = read_case(out, image)
    assert back.probability == result.probability and back.birads_suggestion == result.birads_suggestion
    assert back.prediction.flags == result.prediction.flags
    assert back.prediction.top_features == result.prediction.top_features
    assert back.provenance == result.provenance and back.measurements == result.measurements
    np.testing.assert_array_equal(back.mask, result.mask)
    np.testing.assert_allclose(back.heatmap, result.heatmap, atol=1e-6)
    assert back.to_json() == {k: v for k, v in json.loads((out / "result.json").read_text()).items()}


@pytest.mark.parametrize("change, where", [
    (lambda d: d["provenance"].update(mask_origin="user"), "segmenter"),  # a user's mask names no segmenter
    (lambda d: d.update(malignancy_probability=None), "lesion_found"),  # a found lesion has a probability
    (lambda d: d.update(birads_suggestion="6"), "birads"),
    (lambda d: d["provenance"].update(mask_origin="manual"), "mask_origin"),
])
def test_the_schema_rejects_inconsistent_results(written, change, where):
    payload = json.loads((written[2] / "result.json").read_text())
    change(payload)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, SCHEMA)


def test_an_older_result_is_refused_by_name():
    with pytest.raises(ResultFormatError, match="breastcadx-result/3"):
        AnalysisResult.from_json({"malignancy_probability": 0.3, "models": {}})


def test_flags_are_codes_with_their_text_and_a_version_2_file_is_read_with_codes(written):
    """Flags travel as {code, text} (nothing downstream parses the sentence); a /2 file's free-text flags get
    their codes once, when read; a flag text that contains '; ' stays one flag."""
    from BreastCADxLib.analysis.values import FLAG_CODES, Flag, InputCheck

    check = InputCheck(ultrasound_score=0.01, threshold=0.05, reasons=["not ultrasound; maybe a photo"],
                       overridden=True)
    assert check.flag.code == "input_unvalidated" and "; maybe a photo" in check.flag.text
    d = json.loads((written[2] / "result.json").read_text())
    assert d["flags"] and {"code": "edited_mask", "text": d["flags"][-1]["text"]} == d["flags"][-1]
    for f in d["flags"]:
        assert set(f) == {"code", "text"} and f["code"] in FLAG_CODES
    old = {**d, "schema": "breastcadx-result/2", "flags": [
        "low-confidence segmentation: no region passed ...", "members_disagree: radiomics and deep disagree"]}
    back = AnalysisResult.from_json(old)
    assert [f.code for f in back.flags] == ["low_confidence_segmentation", "members_disagree", "edited_mask"]
    with pytest.raises(ValueError, match="unknown flag code"):
        Flag("made_up", "text")


def test_the_box_member_is_named_box_model_and_a_file_from_before_the_rename_reads_the_same(written, tmp_path):
    """Provenance names the box-crop CNN `box_model` (it was `image_model`, which the cards use for the whole-image
    member); a result.json written before the rename reads back with the same box member. The shipped set fuses
    both image members on automatic outlines (its drawn-outline bundle only the box member), so the case is
    segmented here."""
    image = written[0]
    write_case(analyze(image, expect_lesion=True, heatmap=False), image, tmp_path)
    d = json.loads((tmp_path / "result.json").read_text())
    drawn = json.loads((written[2] / "result.json").read_text())["provenance"]
    assert drawn["box_model"]["id"] == "lesion_box_cnn" and drawn["whole_image_model"] is None
    prov = d["provenance"]
    assert prov["box_model"]["id"] == "lesion_box_cnn" and prov["whole_image_model"]["id"] == "lesion_whole_cnn"
    assert "image_model" not in prov
    old = {**d, "provenance": {**{k: v for k, v in prov.items() if k != "box_model"}, "image_model": prov["box_model"]}}
    jsonschema.validate(old, SCHEMA)
    assert AnalysisResult.from_json(old).provenance == AnalysisResult.from_json(d).provenance
