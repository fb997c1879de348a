"""The module's parameter node, read and written the way Slicer's @parameterNodeWrapper stores it.

BreastCADx.py declares the same fields with @parameterNodeWrapper for the GUI; this module lets the Logic
(and headless tests on slicer-core, which lacks the wrapper) use the very same vtkMRMLScriptedModuleNode:
str/float as text, bool as "True"/"False", nodes as node references. A test keeps the two lists equal.
"""

from __future__ import annotations

MODULE_NAME = "BreastCADx"

NODE_PARAMETERS = {
    "inputVolume": "vtkMRMLScalarVolumeNode",
    "roi": "vtkMRMLMarkupsROINode",
    "segmentation": "vtkMRMLSegmentationNode",
    "resultTable": "vtkMRMLTableNode",
    "heatmap": "vtkMRMLScalarVolumeNode",
}
VALUE_PARAMETERS: dict[str, tuple[type, object]] = {
    "segmentID": (str, ""),
    "device": (str, "auto"),
    "expectLesion": (bool, True),  # the user segments because they see a lesion: keep the best candidate
    "readerBirads": (str, ""),  # the radiologist's own category ("" none), shown beside BreastCADx's
    "siteProfile": (str, ""),  # a site profile folder (breastcadx adapt); "" none
    "modelSet": (str, ""),  # a model set's folder (breastcadx train); "" the logic's own (the shipped default)
    "heatmapOpacity": (float, 0.5),
    "probability": (float, -1.0),  # -1: no result yet
    "biradsSuggestion": (str, ""),
    "resultMaskDigest": (str, ""),  # digest of the mask the current result was computed on
    "resultJSON": (str, ""),  # the full result (result.json of the analysis), saved with the scene
}


def parameter_node(scene):
    """The module's singleton vtkMRMLScriptedModuleNode (created like ScriptedLoadableModuleLogic does)."""
    node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(MODULE_NAME)
        node.SetName(scene.GenerateUniqueName(MODULE_NAME))
        node.SetAttribute("ModuleName", MODULE_NAME)
        node = scene.AddNode(node)
    return node


def peek_value(scene, name: str):
    """A value parameter without creating the node (its default when the module has none yet)."""
    node = scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
    return get_value(node, name) if node is not None else VALUE_PARAMETERS[name][1]


def _text(kind: type, value) -> str:
    if kind is bool:
        return "True" if value else "False"
    return str(value)


def set_values(node, **values) -> None:
    for name, value in values.items():
        if name in NODE_PARAMETERS:
            node.SetParameter(name, "")
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        elif name in VALUE_PARAMETERS:
            node.SetParameter(name, _text(VALUE_PARAMETERS[name][0], value))
        else:
            raise KeyError(f"unknown BreastCADx parameter '{name}'")


def get_value(node, name: str):
    if name in NODE_PARAMETERS:
        return node.GetNodeReference(name)
    kind, default = VALUE_PARAMETERS[name]
    text = node.GetParameter(name)
    if text == "":
        return default
    if kind is bool:
        return text == "True"
    return kind(text)


def values(node) -> dict:
    return {name: get_value(node, name) for name in (*NODE_PARAMETERS, *VALUE_PARAMETERS)}
