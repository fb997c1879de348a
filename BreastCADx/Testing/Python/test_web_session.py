"""web.session: the page's actions on the shared scene logic, headless on a real vtkMRMLScene (slicer-core).

The viewer is a recording fake (the real trame-slicer view is exercised by test_web_browser.py); the worker runs
in-process (worker.InProcessRunner, the same code as the background process).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_workflow import _replace_segment

from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.scene.worker import InProcessRunner
from BreastCADxLib.web.access import DataRoots, OutputFolder
from BreastCADxLib.web.session import ReviewSession, Status, guard
from conftest import BUSI_ONLY, MG_DATA, MODULE_DIR

slicer = pytest.importorskip("slicer", reason="slicer-core is part of the test install")
DATA = MODULE_DIR / "Testing" / "Data"


class FakeViewer:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.stack: list[str] = []

    def show(self, volume_node) -> None:
        self.calls.append(("show", volume_node.GetName()))

    def edit(self, segmentation_node, volume_node, segment_id: str) -> None:
        self.calls.append(("edit", segment_id))

    def set_tool(self, tool: str, brush_mm: float) -> None:
        self.calls.append(("tool", tool))

    def place(self, markup) -> None:
        self.calls.append(("place", markup.GetName()))

    def undo(self) -> bool:
        return False

    def redo(self) -> bool:
        return False

    def render(self) -> None:
        pass


@pytest.fixture()
def session(scene, tmp_path):
    from BreastCADxLib.scene.logic import WorkflowLogic

    return ReviewSession(WorkflowLogic(scene, runner=InProcessRunner()), FakeViewer(), DataRoots([DATA]),
                         OutputFolder(tmp_path / "out"), device="cpu")


def run(session: ReviewSession) -> None:
    while session.poll():
        pass


def test_sample_segment_edit_classify_save(session, sample_dicom, sample_mask, tmp_path):
    session.open_sample()
    assert session.status.case == "BreastCADx US sample" and session.status.dicom
    assert session.viewer.calls[-1] == ("show", "BreastCADx US sample")
    with pytest.raises(BreastCADxError, match="segment the lesion"):
        session.start_classify()

    session.set_roi([120, 80, 500, 400])
    assert session.status.roi == [120, 80, 500, 400]  # the markup round-trips to the same pixel box
    session.start_segment()
    assert session.status.busy == "segment"
    run(session)
    assert session.status.busy == "" and session.status.mask_origin == "auto"
    golden = load_mask(sample_mask, load_image(sample_dicom))[0].astype(bool)
    auto = session.logic.current_mask()
    dice = 2 * (auto & golden).sum() / (auto.sum() + golden.sum())
    assert dice > 0.85 and session.status.lesion_pixels == int(auto.sum())

    session.start_classify()
    run(session)
    r = session.status.result
    assert r is not None and 0.0 <= r["probability"] <= 1.0 and r["birads"] in {"2", "3", "4A", "4B", "4C", "5"}
    assert r["reasons"] and any(row["item"] == "Malignancy probability" for row in r["rows"])
    assert not session.status.out_of_date

    p = session.p
    _replace_segment(session.logic.scene, p["segmentation"], p["segmentID"], golden, p["inputVolume"])
    session.refresh()  # what the page does after a stroke
    assert session.status.out_of_date and session.status.mask_origin == "edited"
    assert session.status.lesion_pixels == int(golden.sum())
    with pytest.raises(BreastCADxError, match="classify again"):
        session.save()

    session.start_classify()
    run(session)
    assert not session.status.out_of_date
    names = session.save()
    saved = session.output.root / names[0]
    assert saved.parent.parent == session.output.root and {p.split("/")[-1] for p in names} >= {"mask.nrrd",
                                                                                                "result.json"}
    assert json.loads((saved.parent / "result.json").read_text())["provenance"]["mask_origin"] == "edited"
    again = session.save()  # a second save never touches the first
    assert again != names and (saved.parent / "result.json").exists()


def test_cancel_leaves_the_scene_unchanged(session):
    session.open_sample()
    session.start_segment()
    session.cancel()
    assert session.job is None and session.status.busy == "" and session.p["segmentation"] is None
    assert "Cancelled" in session.status.message


def test_bad_and_forbidden_files_are_messages_naming_the_case(session):
    status = session.status  # as the page passes it: opening resets it in place
    guard(lambda: session.open_file("0/bad/corrupt.tif"), status, "Open case")
    assert status.error.startswith("Open case: Data/bad/corrupt.tif:") and str(DATA) not in status.error
    guard(lambda: session.open_file("0/../../../etc/passwd"), status, "Open case")
    assert "outside the served folders" in status.error
    guard(lambda: session.open_file("0/bad/empty.dcm"), status, "Open case")
    assert status.error and "Traceback" not in status.error


def test_a_png_case_cannot_be_exported_as_dicom_and_unexpected_errors_stay_short(session):
    session.open_file("0/busi/benign_031.png")
    assert session.status.case == "Data/busi/benign_031.png" and not session.status.dicom
    with pytest.raises(BreastCADxError, match="not DICOM"):
        session.export()
    status = Status()
    guard(lambda: 1 / 0, status, "Segment")
    assert status.error == "Segment: unexpected ZeroDivisionError; details are in the server log"


def test_opening_another_case_clears_the_previous_one(session):
    session.open_sample()
    session.set_roi([10, 10, 100, 100])
    session.open_file("0/busi/benign_031.png")
    scene = session.logic.scene
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode") == 0 and session.status.roi == []
    assert np.asarray(session.logic.roi_box() is None)


def test_a_set_without_a_segmenter_takes_the_users_box_as_the_finding(scene, mg_set, tmp_path):
    """A mammography set from `breastcadx train` (no segmenter) on a film: the box is asked for before any job
    runs, its inscribed ellipse is the user's outline, flagged until it is redrawn; the shipped ultrasound set
    refuses the film naming what is installed."""
    from pathlib import Path

    from test_train import finding_box

    from BreastCADxLib.analysis.segmentation import box_ellipse
    from BreastCADxLib.scene.logic import WorkflowLogic

    def page(model_set: str | None, out: str) -> ReviewSession:
        logic = WorkflowLogic(scene, runner=InProcessRunner(), **({"model_set": model_set} if model_set else {}))
        return ReviewSession(logic, FakeViewer(), DataRoots([DATA]), OutputFolder(tmp_path / out), device="cpu")

    image, text = finding_box("mdb001_1")
    box = [int(v) for v in text.split(",")]
    film = f"0/minimias/{Path(image).relative_to(MG_DATA)}"
    session = page(str(mg_set), "mg")
    session.open_file(film)
    assert "needed: this model set has no segmenter" in session.status.message
    assert session.logic.roi_label == "ROI box (needed: no segmenter in this model set):"  # the panel's label
    with pytest.raises(BreastCADxError, match="has no segmenter: draw an ROI box"):
        session.start_segment()
    assert session.job is None
    session.set_roi(box)
    session.start_segment()
    run(session)
    outline = session.logic.current_mask()
    assert session.status.mask_origin == "user" and session.status.message.startswith("Box outline")
    assert np.array_equal(outline[0], box_ellipse(outline.shape[1:], tuple(box)))
    session.start_classify()
    run(session)
    result = json.loads(session.p["resultJSON"])
    assert result["provenance"]["model_set"] == str(mg_set) and result["provenance"]["segmenter"] is None
    assert result["flags"][0]["code"] == "box_prompt_outline" and result["lexicon"] == []
    assert 0 < session.status.result["probability"] < 1

    redrawn = np.zeros_like(outline)
    redrawn[0, box[1] + 10:box[3] - 10, box[0] + 10:box[2] - 10] = True  # the user's own outline
    _replace_segment(scene, session.p["segmentation"], session.p["segmentID"], redrawn, session.p["inputVolume"])
    session.refresh()
    session.start_classify()
    run(session)
    assert "box_prompt_outline" not in {f["code"] for f in json.loads(session.p["resultJSON"])["flags"]}

    shipped = page(None, "us")
    assert shipped.logic.roi_label == "ROI box (optional):"
    shipped.open_file(film)
    shipped.set_roi(box)
    shipped.start_segment()
    with pytest.raises(BreastCADxError, match=r"does not look like the breast ultrasound.*installed sets: "
                                              r"three-site \(US\); another modality needs a model set made for it.*"
                                              r"the panel and the page take only images") as refused:
        run(shipped)
    assert "to analyse it anyway: --allow" not in str(refused.value)  # not the CLI's way, offered as the page's
    assert shipped.p["segmentation"] is None


def test_the_chosen_model_set_does_the_work(scene, tmp_path):
    from BreastCADxLib.scene.logic import WorkflowLogic

    session = ReviewSession(WorkflowLogic(scene, runner=InProcessRunner(), model_set=str(BUSI_ONLY)), FakeViewer(),
                            DataRoots([DATA]), OutputFolder(tmp_path / "out"), device="cpu")
    session.open_sample()
    session.start_segment()
    run(session)
    session.start_classify()
    run(session)
    provenance = json.loads(session.p["resultJSON"])["provenance"]
    assert provenance["model_set"] == str(BUSI_ONLY) and provenance["mask_origin"] == "auto"
