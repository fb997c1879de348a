"""The panel's workflow on a real vtkMRMLScene (slicer-core).

Load -> segment (worker, progress) -> edit the segment -> re-classify -> overlay -> save / reload the scene
(.mrb) -> export; cancel and failures leave the scene unchanged. The worker runs in-process (worker.InProcessRunner,
the same code as the background process) except where the real process is the point: cancel mid-run, a worker
error crossing the process boundary, a missing interpreter.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.scene import parameters as state
from BreastCADxLib.scene.worker import InProcessRunner
from conftest import MODULE_DIR, dciodvfy

slicer = pytest.importorskip("slicer", reason="slicer-core is part of the test install")


def _replace_segment(scene, seg_node, sid, mask, volume):
    """What a Segment Editor edit does: overwrite the segment's labelmap."""
    import vtk

    lm = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    lm.SetIJKToRASMatrix(m)
    slicer.util.updateVolumeFromArray(lm, mask.astype(np.uint8))
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(sid)
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    assert logic.ImportLabelmapToSegmentationNode(lm, seg_node, ids)
    scene.RemoveNode(lm)


def _node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _matrix(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.fixture(scope="module")
def flow(tmp_path_factory, sample_dicom, sample_mask):
    """The whole radiologist flow once (background runs are seconds each); tests check its stages."""
    from BreastCADxLib.scene.logic import WorkflowLogic
    from BreastCADxLib.scene.mrml import segment_to_mask


    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    logic = WorkflowLogic(scene, runner=InProcessRunner())
    volume = logic.load_image_file(sample_dicom, "sample")
    ref = load_mask(sample_mask, load_image(sample_dicom))
    seen: list[tuple[float, str]] = []
    seg = logic.segment(volume, device="cpu", progress=lambda f, m: seen.append((f, m)))
    auto = segment_to_mask(seg.segmentation_node, seg.segment_id, volume)
    first = logic.classify(volume, seg.segmentation_node, seg.segment_id, device="cpu")
    stages = {"seen": seen, "auto": auto, "first": first, "origin_auto": logic.mask_origin(),
              "stale_before_edit": logic.results_out_of_date()}
    # the radiologist replaces the auto outline by the reference outline (a correction)
    _replace_segment(scene, seg.segmentation_node, seg.segment_id, ref, volume)
    stages["stale_after_edit"] = logic.results_out_of_date()
    stages["origin_edited"] = logic.mask_origin()
    stages["second"] = logic.classify(volume, seg.segmentation_node, seg.segment_id, device="cpu")
    # erase half of the lesion and add a blob elsewhere
    edited = ref.copy()
    edited[:, :, : edited.shape[2] // 2] = False
    edited[0, 20:60, 20:60] = True
    _replace_segment(scene, seg.segmentation_node, seg.segment_id, edited, volume)
    stages["third"] = logic.classify(volume, seg.segmentation_node, seg.segment_id, device="cpu")
    yield {"scene": scene, "logic": logic, "volume": volume, "seg": seg, "ref": ref, "edited": edited, **stages}
    scene.Clear(1)


def test_segment_runs_in_background_with_progress(flow):
    fractions = [f for f, _ in flow["seen"]]
    assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("segmenting" in m for _, m in flow["seen"])
    auto, ref = flow["auto"], flow["ref"]
    assert 2 * (auto & ref).sum() / (auto.sum() + ref.sum()) >= 0.85  # golden mask of the sample case
    assert flow["seg"].message.startswith("Lesion segmented: check and correct it, its margin above all")
    segment = flow["seg"].segmentation_node.GetSegmentation().GetSegment(flow["seg"].segment_id)
    from BreastCADxLib.scene.logic import segment_tag

    assert "SCT^4147007^Mass" in segment_tag(segment, segment.GetTerminologyEntryTagName())


def test_classify_writes_table_heatmap_and_segment_colour(flow):
    first = flow["first"]
    p = first.result.probability
    assert first.table_node.GetCellText(0, 0) == "Malignancy probability"
    assert first.table_node.GetCellText(0, 1) == str(p)
    heat, volume = first.heatmap_node, flow["volume"]
    assert heat.GetImageData().GetDimensions() == volume.GetImageData().GetDimensions()
    np.testing.assert_allclose(_matrix(heat), _matrix(volume))
    assert slicer.util.arrayFromVolume(heat).max() > 0.5
    assert flow["origin_auto"] == "auto" and not flow["stale_before_edit"]
    # shape and margin of the segmenter's outline: low confidence, saying so; the corrected outline's: its own
    by = {i.feature: i for i in first.result.lexicon}
    assert by["margin"].confidence == by["shape"].confidence == "low" and "automatic outline" in by["shape"].evidence
    assert all("automatic outline" not in i.evidence for i in flow["second"].result.lexicon)


def test_edits_mark_results_stale_and_reclassify_follows_them(flow):
    assert flow["stale_after_edit"] and flow["origin_edited"] == "edited"
    first, second, third = (flow[k].result for k in ("first", "second", "third"))
    assert second.predicted_label != "benign"  # the sample is a malignant BUSI case
    assert second.measurements["lesion_pixels"] == int(flow["ref"].sum())
    assert third.measurements["lesion_pixels"] == int(flow["edited"].sum())
    assert len({first.probability, second.probability, third.probability}) == 3
    assert (first.mask_origin, second.mask_origin, third.mask_origin) == ("auto", "edited", "edited")
    assert first.provenance.segmenter is not None
    table = flow["third"].table_node
    assert table.GetCellText(0, 1) == str(third.probability)
    params = state.values(flow["logic"].parameters)
    assert params["resultTable"] is table and params["probability"] == pytest.approx(third.probability)
    assert not flow["logic"].results_out_of_date()
    name = flow["seg"].segmentation_node.GetSegmentation().GetSegment(flow["seg"].segment_id).GetName()
    assert name.startswith("Breast lesion [") and third.birads_suggestion in name


def test_heatmap_overlay_in_slice_views(flow):
    comp = flow["scene"].AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    try:
        assert flow["logic"].show_heatmap(opacity=0.35) == 1
        assert comp.GetForegroundVolumeID() == flow["third"].heatmap_node.GetID()
        assert comp.GetBackgroundVolumeID() == flow["volume"].GetID()
        assert comp.GetForegroundOpacity() == pytest.approx(0.35)
        assert "BI-RADS" in flow["logic"].summary_text()
        assert "FLAG: " in flow["logic"].summary_text()  # the third result is on a corrected outline (and more)
    finally:
        flow["scene"].RemoveNode(comp)


def test_save_results_and_dicom_export(flow, tmp_path):
    paths = flow["logic"].save_results(tmp_path / "results")
    assert {p.name for p in paths.values()} == {"mask.nrrd", "heatmap.nrrd", "overlay.png", "result.json"}
    image = load_image(paths["mask"])
    np.testing.assert_array_equal(image.array > 0, flow["edited"])
    saved = json.loads(paths["result"].read_text())
    assert saved["malignancy_probability"] == flow["third"].result.probability
    assert saved["provenance"]["mask_origin"] == "edited"
    with pytest.raises(BreastCADxError, match="overwrite"):
        flow["logic"].save_results(tmp_path / "results")
    from BreastCADxLib.results.dicom_export import read_seg_mask, read_sr_summary

    out = flow["logic"].export_dicom(tmp_path / "dicom")
    for p in out.values():
        assert dciodvfy(p)[1] == []
    import pydicom

    assert pydicom.dcmread(out["seg"]).SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    source = flow["logic"].parameters.GetNodeReference("inputVolume")
    from BreastCADxLib.scene.mrml import volume_node_to_image

    np.testing.assert_array_equal(read_seg_mask(out["seg"], volume_node_to_image(source)), flow["edited"])
    assert read_sr_summary(out["sr"])["probability"] == pytest.approx(
        flow["third"].result.probability)


def test_scene_saved_and_reloaded_keeps_parameters_and_results(flow, tmp_path):
    scene = flow["scene"]
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        if node.IsA("vtkMRMLStorableNode") and node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
    mrb = tmp_path / "case.mrb"
    assert scene.WriteToMRB(str(mrb))
    before = state.values(flow["logic"].parameters)
    table_text = [before["resultTable"].GetCellText(r, 1) for r in range(before["resultTable"].GetNumberOfRows())]

    other = slicer.vtkMRMLScene()
    cache = slicer.vtkCacheManager()  # what the application sets up: MRB extraction needs a cache folder
    cache.SetRemoteCacheDirectory(str(tmp_path / "cache"))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    other.SetCacheManager(cache)
    other.SetDataIOManager(io_manager)
    assert other.ReadFromMRB(str(mrb))
    after = state.values(state.parameter_node(other))
    for key in ("segmentID", "device", "probability", "biradsSuggestion", "resultMaskDigest", "heatmapOpacity",
                "resultJSON"):
        assert after[key] == before[key], key
    for key in ("inputVolume", "segmentation", "resultTable", "heatmap"):
        assert after[key] is not None and after[key].GetName() == before[key].GetName(), key
    assert [after["resultTable"].GetCellText(r, 1) for r in range(after["resultTable"].GetNumberOfRows())] \
        == table_text
    np.testing.assert_allclose(slicer.util.arrayFromVolume(after["heatmap"]),
                               slicer.util.arrayFromVolume(before["heatmap"]), atol=1e-6)
    from BreastCADxLib.scene.logic import WorkflowLogic

    reloaded = WorkflowLogic(other)
    np.testing.assert_array_equal(reloaded.current_mask(), flow["edited"])
    assert not reloaded.results_out_of_date()
    assert json.loads(after["resultJSON"])["malignancy_probability"] == after["probability"]
    other.Clear(1)


def test_cancel_mid_run_leaves_scene_unchanged(scene, sample_dicom):
    from BreastCADxLib.scene.logic import JobFailed, WorkflowLogic

    logic = WorkflowLogic(scene)
    volume = logic.load_image_file(sample_dicom)
    before = _node_ids(scene)
    job = logic.start_segment(volume, device="cpu")
    deadline = time.time() + 120
    while not job.task.messages and time.time() < deadline:  # the worker has started working
        job.poll()
        time.sleep(0.05)
    assert job.task.messages, "worker never reported progress"
    job.cancel()
    assert job.task._proc.poll() is not None  # the process is gone
    assert not job.folder.root.exists()
    with pytest.raises(JobFailed, match="cancelled"):
        logic.finish_segment(job)
    assert _node_ids(scene) == before


def test_resegment_adds_a_new_segment_and_keeps_the_edited_one(scene, sample_dicom):
    from BreastCADxLib.scene.logic import WorkflowLogic
    from BreastCADxLib.scene.mrml import segment_to_mask

    logic = WorkflowLogic(scene, runner=InProcessRunner())
    volume = logic.load_image_file(sample_dicom)
    out = logic.segment(volume, device="cpu")
    drawn = np.zeros(volume_shape(volume), bool)
    drawn[0, 10:40, 10:40] = True
    _replace_segment(scene, out.segmentation_node, out.segment_id, drawn, volume)
    again = logic.segment(volume, out.segmentation_node, device="cpu")
    assert again.segment_id != out.segment_id
    np.testing.assert_array_equal(segment_to_mask(out.segmentation_node, out.segment_id, volume), drawn)
    names = [out.segmentation_node.GetSegmentation().GetSegment(s).GetName() for s in (out.segment_id,
                                                                                        again.segment_id)]
    assert names[0] != names[1]


def test_expect_lesion_gives_a_flagged_candidate_where_the_default_finds_nothing(scene):
    from BreastCADxLib.scene.logic import WorkflowLogic
    from BreastCADxLib.scene.mrml import segment_to_mask

    case = MODULE_DIR / "Testing" / "Data" / "busi" / "benign_351"
    logic = WorkflowLogic(scene, runner=InProcessRunner())
    volume = logic.load_image_file(f"{case}.png")
    plain = logic.segment(volume, device="cpu")
    assert not plain.lesion_found and not plain.low_confidence
    out = logic.segment(volume, plain.segmentation_node, device="cpu", expect_lesion=True)
    assert out.lesion_found and out.low_confidence and out.segment_id != plain.segment_id
    ref = load_mask(f"{case}_mask.png", load_image(f"{case}.png"))
    mask = segment_to_mask(out.segmentation_node, out.segment_id, volume)
    assert 2 * (mask & ref).sum() / (mask.sum() + ref.sum()) >= 0.85


def test_told_a_lesion_is_there_a_blind_segmenter_asks_for_a_box_not_no_lesion(scene, monkeypatch):
    """Lesion expected and the network sees no region anywhere (BUS-UCLM test: 5 views of one patient): the panel
    says so and asks for a box; without the prompt it says no lesion found. Either way an empty segment to paint."""
    from BreastCADxLib.analysis import segmentation
    from BreastCADxLib.analysis.cards import SegmenterCard
    from BreastCADxLib.analysis.registry import MODELS_DIR
    from BreastCADxLib.scene.logic import WorkflowLogic

    card = SegmenterCard.from_json(json.loads((MODELS_DIR / "lesion_seg_lite0.json").read_text()))
    blind = segmentation.LesionSegmenter(card, None, "cpu", engine=lambda x: torch.full((x.shape[0], 1, *x.shape[2:]),
                                                                                        -1e4))
    monkeypatch.setattr(segmentation, "get_segmenter", lambda **kw: blind)
    logic = WorkflowLogic(scene, runner=InProcessRunner())
    volume = logic.load_image_file(str(MODULE_DIR / "Testing" / "Data" / "busi" / "benign_351.png"))
    plain = logic.segment(volume, device="cpu")
    told = logic.segment(volume, plain.segmentation_node, device="cpu", expect_lesion=True)
    assert not plain.lesion_found and not plain.expected and plain.message.startswith("No lesion found")
    assert not told.lesion_found and told.expected and "draw a box" in told.message
    assert "No lesion found" not in told.message


def volume_shape(volume) -> tuple[int, ...]:
    return slicer.util.arrayFromVolume(volume).shape


def test_worker_errors_reach_the_caller_and_scene_is_unchanged(scene):
    from BreastCADxLib.image import Image
    from BreastCADxLib.scene.logic import JobFailed, WorkflowLogic
    from BreastCADxLib.scene.mrml import image_to_volume_node

    logic = WorkflowLogic(scene)
    tiny = image_to_volume_node(Image(array=np.zeros((1, 8, 8), np.uint8)), scene, "tiny")
    before = _node_ids(scene)
    with pytest.raises(JobFailed, match="volume 'tiny': the image is blank"):  # the user's name, not a temp file
        logic.segment(tiny, device="cpu")
    assert _node_ids(scene) == before


def test_empty_segment_is_refused_before_any_run(scene, sample_dicom):
    from BreastCADxLib.scene.logic import WorkflowLogic

    logic = WorkflowLogic(scene, runner=InProcessRunner())
    volume = logic.load_image_file(sample_dicom)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    sid = seg.GetSegmentation().AddEmptySegment("", "Breast lesion")
    with pytest.raises(BreastCADxError, match="empty"):
        logic.start_classify(volume, seg, sid)


def test_roi_node_to_box(scene, sample_dicom):
    from BreastCADxLib.scene.logic import WorkflowLogic, roi_node_to_box

    volume = WorkflowLogic(scene, runner=InProcessRunner()).load_image_file(sample_dicom)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    ijk_to_ras = _matrix(volume)
    lo, hi = ijk_to_ras @ [100, 50, 0, 1], ijk_to_ras @ [300, 250, 0, 1]
    roi.SetXYZ(*((lo[:3] + hi[:3]) / 2))
    roi.SetRadiusXYZ(*(np.abs(hi[:3] - lo[:3]) / 2 + [0, 0, 0.5]))
    x0, y0, x1, y1 = roi_node_to_box(roi, volume)
    assert (x0, y0) == (100, 50) and (x1, y1) == (301, 251)


def test_parameter_state_round_trip(scene):
    node = state.parameter_node(scene)
    assert state.parameter_node(scene) is node  # singleton
    assert state.get_value(node, "device") == "auto" and state.get_value(node, "probability") == -1.0
    state.set_values(node, device="cpu", heatmapOpacity=0.25, segmentID="abc")
    assert state.values(node)["device"] == "cpu" and state.values(node)["heatmapOpacity"] == 0.25
    assert json.loads(json.dumps(node.GetParameter("heatmapOpacity"))) == "0.25"
    with pytest.raises(KeyError):
        state.set_values(node, nonsense=1)


def test_missing_python_is_a_clear_error_and_leaves_nothing(scene, sample_dicom):
    import tempfile
    from pathlib import Path

    from BreastCADxLib.scene.logic import WorkflowLogic

    logic = WorkflowLogic(scene, python="/nonexistent/PythonSlicer")
    volume = logic.load_image_file(sample_dicom)
    before_nodes = _node_ids(scene)
    before_dirs = set(Path(tempfile.gettempdir()).glob("breastcadx-segment-*"))
    with pytest.raises(BreastCADxError, match="cannot start the background process") as e:
        logic.start_segment(volume)
    assert "/nonexistent/PythonSlicer" in str(e.value)
    assert _node_ids(scene) == before_nodes
    assert set(Path(tempfile.gettempdir()).glob("breastcadx-segment-*")) == before_dirs
