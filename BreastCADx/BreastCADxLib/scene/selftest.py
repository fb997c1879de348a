"""The module's in-application self-test (Slicer's Reload and Test): the panel's flow through the Logic on the
bundled sample, with the same steps as the headless tests."""

import os
import tempfile

import numpy as np


def full_flow(logic, case, delay_display=None) -> None:
    """`logic`: the module Logic; `case`: a unittest.TestCase for the assertions."""
    import slicer

    volume = logic.loadSampleCase()
    case.assertEqual(volume.GetImageData().GetDimensions()[:2], (557, 457))
    seen = []
    seg = logic.workflow.segment(volume, device="auto", progress=lambda f, m: seen.append(f))
    case.assertTrue(seg.lesion_found)
    case.assertEqual(seen[-1], 1.0)
    first = logic.workflow.classify(volume, seg.segmentation_node, seg.segment_id)
    case.assertIsNotNone(first.result.probability)
    case.assertEqual(first.heatmap_node.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
    # erase the left half of the lesion, as a correction would
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg.segmentation_node, seg.segment_id, volume)
    mask[:, :, : mask.shape[2] // 2] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg.segmentation_node, seg.segment_id, volume)
    case.assertTrue(logic.workflow.results_out_of_date())
    second = logic.workflow.classify(volume, seg.segmentation_node, seg.segment_id)
    case.assertEqual(second.result.measurements["lesion_pixels"], int(np.count_nonzero(mask)))
    case.assertEqual(second.result.mask_origin, "edited")
    case.assertFalse(logic.workflow.results_out_of_date())
    folder = tempfile.mkdtemp()
    logic.workflow.save_results(folder)
    paths = logic.workflow.export_dicom(os.path.join(folder, "dicom"))
    case.assertTrue(os.path.exists(paths["seg"]) and os.path.exists(paths["sr"]))
    if delay_display:
        delay_display("BreastCADx flow passed")
