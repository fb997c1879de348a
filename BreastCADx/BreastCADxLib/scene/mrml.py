"""MRML bridge: volume node <-> Image, segment <-> mask, results -> table / heatmap nodes.

Imports slicer inside functions only, so the rest of the library stays Slicer-free. Works in the Slicer
application and headless with slicer-core. Geometry: Image is LPS (ITK/DICOM); MRML is RAS.
"""

from __future__ import annotations

import json

import numpy as np

from BreastCADxLib.analysis.result import AnalysisResult
from BreastCADxLib.analysis.values import MEMBER_LABELS
from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.image import Image

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
LESION_SEGMENT = "Breast lesion"
LESION_COLOR = (0.93, 0.28, 0.6)
# SNOMED CT: category "Morphologically abnormal structure", type "Mass" (breast lesion), region "Breast"
TERMINOLOGY_CONTEXT = "Segmentation category and type - BreastCADx"  # Resources/Terminology/*.term.json
LESION_TERMINOLOGY = (
    f"{TERMINOLOGY_CONTEXT}~SCT^49755003^Morphologically abnormal structure"
    "~SCT^4147007^Mass~^^~Anatomic codes - DICOM master list~SCT^76752008^Breast~^^"
)


def _ijk_to_ras(image: Image) -> np.ndarray:
    d = np.array(image.direction, float).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = LPS_TO_RAS @ d @ np.diag(image.spacing)
    m[:3, 3] = LPS_TO_RAS @ np.array(image.origin, float)
    return m


def _vtk_matrix(m: np.ndarray):
    import vtk

    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def _numpy_matrix(vm) -> np.ndarray:
    return np.array([[vm.GetElement(r, c) for c in range(4)] for r in range(4)])


def image_to_volume_node(image: Image, scene, name: str = "BreastCADx image", array: np.ndarray | None = None,
                         node_class: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node with the image's pixels (or `array`) and exact geometry."""
    import slicer

    node = scene.AddNewNodeByClass(node_class, name)
    node.SetIJKToRASMatrix(_vtk_matrix(_ijk_to_ras(image)))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(image.array if array is None else array))
    node.SetAttribute("BreastCADx.spacingKnown", "1" if image.spacing_known else "0")
    node.SetAttribute("BreastCADx.modality", image.modality)
    return node


def volume_node_to_image(node) -> Image:
    """Image from a scalar volume node (LPS geometry; 2D volumes keep one frame)."""
    import slicer
    import vtk

    if node is None or node.GetImageData() is None:
        raise BreastCADxError("the selected volume has no image data")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise BreastCADxError("colour (vector) volumes are not supported; convert to scalar first")
    vm = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(vm)
    m = _numpy_matrix(vm)
    scaled = LPS_TO_RAS @ m[:3, :3]  # LPS direction * spacing
    spacing = np.linalg.norm(scaled, axis=0)
    direction = scaled / spacing
    storage = node.GetStorageNode()
    return Image(
        array=np.array(slicer.util.arrayFromVolume(node)),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(v) for v in LPS_TO_RAS @ m[:3, 3]),
        direction=tuple(float(v) for v in direction.ravel()),
        spacing_known=node.GetAttribute("BreastCADx.spacingKnown") != "0",
        modality=node.GetAttribute("BreastCADx.modality") or "OT",
        source=(storage.GetFileName() if storage else None) or node.GetName(),
        source_files=_source_files(node),
    )


def _source_files(node) -> tuple[str, ...]:
    """DICOM files behind a volume: set by our loader, or from Slicer's DICOM database (DICOM module)."""
    ours = node.GetAttribute("BreastCADx.sourceFiles")
    if ours:
        return tuple(json.loads(ours))
    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    if not uids:
        return ()
    import slicer

    database = getattr(slicer, "dicomDatabase", None)
    if database is None:
        return ()
    files = [database.fileForInstance(uid) for uid in uids]
    return tuple(files) if all(files) else ()


def _segmentations_logic(scene):
    import slicer

    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    return logic


def add_mask_segment(mask: np.ndarray, volume_node, segmentation_node, name: str = LESION_SEGMENT,
                     color=LESION_COLOR) -> str:
    """Add the mask as a NEW segment (never replaces an existing one); returns its segment ID."""
    import vtk

    scene = volume_node.GetScene()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__breastcadx_tmp__")
    try:
        vm = vtk.vtkMatrix4x4()
        volume_node.GetIJKToRASMatrix(vm)
        labelmap.SetIJKToRASMatrix(vm)
        import slicer

        slicer.util.updateVolumeFromArray(labelmap, mask.astype(np.uint8))
        segmentation = segmentation_node.GetSegmentation()
        before = {segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())}
        if not _segmentations_logic(scene).ImportLabelmapToSegmentationNode(labelmap, segmentation_node):
            raise BreastCADxError("the mask could not be imported into the segmentation")
    finally:
        scene.RemoveNode(labelmap)
    new = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())
           if segmentation.GetNthSegmentID(i) not in before]
    if not new:  # an empty mask imports no segment: add an empty one so the user can draw
        sid = segmentation.AddEmptySegment("", name, color)
    else:
        sid = new[0]
    segment = segmentation.GetSegment(sid)
    taken = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())
             if segmentation.GetNthSegmentID(i) != sid}
    unique, k = name, 2
    while unique in taken:  # a new name: an earlier (possibly edited) segment keeps its own
        unique, k = f"{name} {k}", k + 1
    segment.SetName(unique)
    segment.SetColor(*color)
    segment.SetTag(segment.GetTerminologyEntryTagName(), LESION_TERMINOLOGY)
    return sid


def segment_to_mask(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """The segment as a bool array on the volume's grid (frames, rows, cols)."""
    import vtk

    scene = volume_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__breastcadx_tmp__")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not _segmentations_logic(scene).ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap,
                                                                         volume_node):
            raise BreastCADxError(f"segment '{segment_id}' could not be exported")
        import slicer

        return np.array(slicer.util.arrayFromVolume(labelmap)) > 0
    finally:
        scene.RemoveNode(labelmap)


HEAT_COLOR_NODE = "BreastCADx heat"
HEAT_SHOWN_FROM = 0.15  # Grad-CAM below this is transparent: the image stays visible away from the evidence


def heat_color_node(scene):
    """The overlay's blue-cyan-yellow-red ramp (results/overlay.heat_colours) as a colour table, made once per
    scene: the panel, the page and overlay.png show the same colours (Slicer's Rainbow starts at red)."""
    from slicer import vtkMRMLColorTableNode

    from BreastCADxLib.results.overlay import heat_colours

    nodes = scene.GetNodesByName(HEAT_COLOR_NODE)
    if nodes.GetNumberOfItems():
        return nodes.GetItemAsObject(0)
    node = vtkMRMLColorTableNode()
    node.SetName(HEAT_COLOR_NODE)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    for i, (r, g, b) in enumerate(heat_colours(np.linspace(0.0, 1.0, 256)) / 255.0):
        node.SetColor(i, f"heat {i}", float(r), float(g), float(b), 1.0)
    node.SetHideFromEditors(True)
    scene.AddNode(node)
    return node


def heatmap_to_volume_node(heatmap: np.ndarray, image: Image, scene, name: str = "BreastCADx Grad-CAM"):
    node = image_to_volume_node(image, scene, name, array=heatmap.astype(np.float32))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(heat_color_node(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.AutoThresholdOff()
    display.SetThreshold(HEAT_SHOWN_FROM, float(max(1.0, heatmap.max())))
    display.ApplyThresholdOn()
    return node


def result_to_table_node(result: AnalysisResult, scene, name: str = "BreastCADx results"):
    """Two-column (item, value) table: probability, suggestion, flags, each member's own probability, lexicon,
    measurements, top and all radiomics."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table.AddColumn().SetName("Item")
    table.AddColumn().SetName("Value")
    pred = result.prediction
    rows = [("Malignancy probability", result.probability),
            ("Predicted label", result.predicted_label),
            ("BI-RADS-style suggestion", result.birads_suggestion),
            ("Suggestion note", pred.suggestion_note if pred else None),
            ("Mask origin", result.mask_origin),
            ("Flags", "; ".join(f.text for f in result.flags) or "none")]
    rows += [(f"Member: {MEMBER_LABELS.get(k, k)}", f"{v:.3f}")
             for k, v in (pred.member_probabilities.items() if pred else ())]
    rows += [(f"Lexicon: {i.feature}", f"{i.category} ({i.evidence}; confidence {i.confidence})")
             for i in result.lexicon]
    rows += [(f"Measurement: {k}", v) for k, v in result.measurements.items()]
    rows += [(f"Top feature: {f['feature']}", f"{f['value']:.4g} (contribution {f['contribution']:+.3f})")
             for f in (pred.top_features if pred else [])]
    rows += [(f"Radiomics: {k}", f"{v:.6g}") for k, v in result.radiomics.items()]
    for item, value in rows:
        r = table.AddEmptyRow()
        table.SetCellText(r, 0, str(item))
        table.SetCellText(r, 1, "" if value is None else str(value))
    return table
