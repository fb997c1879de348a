"""MRML bridge on a real vtkMRMLScene (slicer-core): geometry exact, segments added never replaced."""

from __future__ import annotations

import numpy as np
import pytest

from BreastCADxLib.image import Image
from BreastCADxLib.io import load_image, load_mask
from result_factory import fake_result

slicer = pytest.importorskip("slicer", reason="slicer-core is part of the test install")


def test_volume_round_trip_keeps_geometry(scene):
    from BreastCADxLib.scene.mrml import image_to_volume_node, volume_node_to_image

    c, s = np.cos(0.3), np.sin(0.3)
    img = Image(array=np.arange(4 * 6 * 8, dtype=np.int16).reshape(4, 6, 8), spacing=(0.5, 0.7, 2.0),
                origin=(10.0, -5.0, 3.0), direction=(c, -s, 0, s, c, 0, 0, 0, 1), spacing_known=True, modality="MR")
    node = image_to_volume_node(img, scene)
    back = volume_node_to_image(node)
    assert back.same_grid(img, tol=1e-6) and back.modality == "MR" and back.spacing_known
    np.testing.assert_array_equal(back.array, img.array)
    # RAS: LPS x and y flip sign
    assert node.GetOrigin() == pytest.approx((-10.0, 5.0, 3.0))


def test_2d_sample_mask_to_segment_and_back(scene, sample_dicom, sample_mask):
    from BreastCADxLib.scene.mrml import LESION_SEGMENT, add_mask_segment, image_to_volume_node, segment_to_mask

    img = load_image(sample_dicom)
    mask = load_mask(sample_mask, img)
    vol = image_to_volume_node(img, scene)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    sid = add_mask_segment(mask, vol, seg)
    assert seg.GetSegmentation().GetSegment(sid).GetName() == LESION_SEGMENT
    np.testing.assert_array_equal(segment_to_mask(seg, sid, vol), mask)
    # a second run adds a new segment; the first (maybe edited) one is untouched
    edited = mask.copy()
    edited[:, :, : edited.shape[2] // 2] = False
    sid2 = add_mask_segment(edited, vol, seg)
    assert sid2 != sid and seg.GetSegmentation().GetNumberOfSegments() == 2
    assert seg.GetSegmentation().GetSegment(sid2).GetName() == f"{LESION_SEGMENT} 2"
    np.testing.assert_array_equal(segment_to_mask(seg, sid, vol), mask)
    np.testing.assert_array_equal(segment_to_mask(seg, sid2, vol), edited)


def test_heatmap_and_table_nodes(scene, sample_dicom):
    from BreastCADxLib.scene.mrml import heatmap_to_volume_node, result_to_table_node, volume_node_to_image

    img = load_image(sample_dicom)
    heat = np.random.default_rng(0).random(img.array.shape).astype(np.float32)
    node = heatmap_to_volume_node(heat, img, scene)
    assert volume_node_to_image(node).same_grid(img)
    # low evidence is transparent, and the colours run blue (low) -> red (high), as in overlay.png
    display = node.GetDisplayNode()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() > 0
    colours = display.GetColorNode()
    low, high = [0.0] * 4, [0.0] * 4
    colours.GetColor(0, low)
    colours.GetColor(colours.GetNumberOfColors() - 1, high)
    assert low[2] > 0.9 and low[0] < 0.1 and high[0] > 0.9 and high[2] < 0.1
    assert heatmap_to_volume_node(heat, img, scene).GetDisplayNode().GetColorNodeID() == colours.GetID()
    result = fake_result(0.87, "4C")
    result.radiomics = {"a": 1.0, "b": 2.5}
    result.prediction.member_probabilities = {"fusion": 0.62, "box_cnn": 0.91, "whole_image_cnn": 0.75}
    table = result_to_table_node(result, scene)
    assert table.GetNumberOfRows() == 14  # 6 result rows, 3 members, 2 measurements, 1 top feature, 2 radiomics
    assert table.GetCellText(0, 1) == "0.87" and table.GetCellText(2, 1) == "4C"
    members = {table.GetCellText(r, 0): table.GetCellText(r, 1) for r in range(6, 9)}
    assert members == {"Member: outline features": "0.620", "Member: box-crop CNN": "0.910",
                       "Member: whole-image CNN": "0.750"}
    assert table.GetCellText(table.GetNumberOfRows() - 1, 0) == "Radiomics: b"
