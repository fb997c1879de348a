"""The panel's workflow on a real vtkMRMLScene (slicer-core): segment, correct, re-classify, cancel."""

from __future__ import annotations

import numpy as np
import pytest

from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.segmentation import Cancelled

slicer = pytest.importorskip("slicer", reason="slicer-core is part of the test install")


@pytest.fixture()
def sample_volume(scene, sample_dicom):
    from BreastCADxLib.mrml import image_to_volume_node

    return image_to_volume_node(load_image(sample_dicom), scene, "sample")


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


def test_segment_correct_classify(scene, sample_volume, sample_dicom, sample_mask):
    from BreastCADxLib.mrml import segment_to_mask
    from BreastCADxLib.workflow import WorkflowLogic

    logic = WorkflowLogic(scene)
    seen = []
    out = logic.segment(sample_volume, device="cpu", progress=lambda f, m: seen.append(f))
    assert out.lesion_found and seen[-1] == 1.0
    auto = segment_to_mask(out.segmentation_node, out.segment_id, sample_volume)
    ref = load_mask(sample_mask, load_image(sample_dicom))
    assert 2 * (auto & ref).sum() / (auto.sum() + ref.sum()) >= 0.85

    first = logic.classify(sample_volume, out.segmentation_node, out.segment_id, device="cpu")
    assert first.table_node.GetCellText(0, 1) == str(first.result.probability)
    assert first.heatmap_node is not None
    assert first.heatmap_node.GetImageData().GetDimensions() == sample_volume.GetImageData().GetDimensions()

    # the radiologist replaces the auto outline by the reference outline (a correction) and re-classifies
    _replace_segment(scene, out.segmentation_node, out.segment_id, ref, sample_volume)
    second = logic.classify(sample_volume, out.segmentation_node, out.segment_id, device="cpu")
    assert second.result.mask_source == "user"
    np.testing.assert_array_equal(second.result.mask, ref)
    assert second.result.probability != first.result.probability
    assert second.table_node.GetCellText(0, 1) == str(second.result.probability)
    assert second.result.predicted_label == "malignant"

    # erase half of the lesion and add a blob: the classification input follows the edit
    edited = ref.copy()
    edited[:, :, : edited.shape[2] // 2] = False
    edited[0, 20:60, 20:60] = True
    _replace_segment(scene, out.segmentation_node, out.segment_id, edited, sample_volume)
    third = logic.classify(sample_volume, out.segmentation_node, out.segment_id, device="cpu")
    np.testing.assert_array_equal(third.result.mask, edited)
    assert third.result.probability != second.result.probability


def test_resegment_adds_segment_and_cancel_leaves_scene_unchanged(scene, sample_volume):
    from BreastCADxLib.workflow import WorkflowLogic

    logic = WorkflowLogic(scene)
    out = logic.segment(sample_volume, device="cpu")
    again = logic.segment(sample_volume, out.segmentation_node, device="cpu")
    assert again.segment_id != out.segment_id
    assert out.segmentation_node.GetSegmentation().GetNumberOfSegments() == 2
    nodes_before = scene.GetNumberOfNodes()
    with pytest.raises(Cancelled):
        logic.segment(sample_volume, device="cpu", should_cancel=lambda: True)
    assert scene.GetNumberOfNodes() == nodes_before
    assert out.segmentation_node.GetSegmentation().GetNumberOfSegments() == 2


def test_roi_node_to_box(scene, sample_volume):
    from BreastCADxLib.workflow import roi_node_to_box

    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    # sample has identity LPS geometry: RAS x = -i, RAS y = -j
    roi.SetCenter(-200.0, -150.0, 0.0)
    roi.SetSize(100.0, 60.0, 1.0)
    assert roi_node_to_box(roi, sample_volume) == (150, 120, 251, 181)
