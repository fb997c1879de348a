"""Scene-level workflow behind the Slicer panel: segment into a new segment, classify a (corrected) segment.

No ScriptedLoadableModule/qt here, so it runs in Slicer and headless on slicer-core; BreastCADx.py only wires it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import BreastCADxError
from .mrml import (
    add_mask_segment,
    heatmap_to_volume_node,
    result_to_table_node,
    segment_to_mask,
    volume_node_to_image,
)
from .pipeline import AnalysisResult, analyze
from .segmentation import Box, get_segmenter

BENIGN_COLOR = (0.2, 0.75, 0.35)
MALIGNANT_COLOR = (0.9, 0.15, 0.15)
RESULT_TAG = "BreastCADx.result"


@dataclass
class SegmentOutcome:
    segmentation_node: object
    segment_id: str
    lesion_found: bool


@dataclass
class ClassifyOutcome:
    result: AnalysisResult
    table_node: object
    heatmap_node: object | None


def roi_node_to_box(roi_node, volume_node) -> Box:
    """Pixel box (x0, y0, x1, y1) covered by a markups ROI on the volume's grid."""
    import vtk

    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(ras_to_ijk)
    corners = np.array([ras_to_ijk.MultiplyPoint([x, y, z, 1.0])[:3] for x in bounds[0:2] for y in bounds[2:4]
                        for z in bounds[4:6]])
    lo, hi = np.floor(corners.min(0) + 0.5), np.floor(corners.max(0) + 0.5) + 1
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


class WorkflowLogic:
    def __init__(self, scene) -> None:
        self.scene = scene

    def segment(self, volume_node, segmentation_node=None, roi: Box | None = None, device: str = "auto",
                progress: Callable[[float, str], None] | None = None,
                should_cancel: Callable[[], bool] | None = None) -> SegmentOutcome:
        """Auto-segment into a NEW segment; nothing is created if it fails or is cancelled."""
        image = volume_node_to_image(volume_node)
        result = get_segmenter(device=device).segment(image, roi=roi, progress=progress, should_cancel=should_cancel)
        if segmentation_node is None:
            segmentation_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "BreastCADx segmentation")
            segmentation_node.CreateDefaultDisplayNodes()
        sid = add_mask_segment(result.mask, volume_node, segmentation_node)
        return SegmentOutcome(segmentation_node, sid, result.lesion_found)

    def classify(self, volume_node, segmentation_node, segment_id: str, heatmap: bool = True,
                 device: str = "auto") -> ClassifyOutcome:
        """Classify the segment as it is now (after any correction); results go to new table/heatmap nodes."""
        if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            raise BreastCADxError(f"segment '{segment_id}' no longer exists")
        image = volume_node_to_image(volume_node)
        mask = segment_to_mask(segmentation_node, segment_id, volume_node)
        result = analyze(image, mask=mask, heatmap=heatmap, device=device)
        payload = result.to_json()
        table = result_to_table_node(payload, self.scene)
        heat = heatmap_to_volume_node(result.heatmap, image, self.scene) if result.heatmap is not None else None
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        segment.SetColor(*(MALIGNANT_COLOR if result.predicted_label == "malignant" else BENIGN_COLOR))
        segment.SetTag(RESULT_TAG, f"{result.probability:.4f};{result.birads_suggestion}")
        return ClassifyOutcome(result, table, heat)
