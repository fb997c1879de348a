"""BreastCADx 3D Slicer module: only what Slicer needs at this path. The panel is BreastCADxLib.scene.widget, the
work is in BreastCADxLib (Slicer-free) and its scene logic; segment/classify run in a background process."""

from typing import Annotated

import slicer
from slicer import (
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class BreastCADx(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BreastCADx"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BreastCADx contributors"]
        self.parent.helpText = (
            "Breast-lesion CADx: segment the lesion (MONAI FlexibleUNet with an ImageNet EfficientNet-Lite encoder), "
            "correct it in the embedded Segment Editor, then classify it by fusing pyradiomics features, lexicon-"
            "style descriptors and CNN features: malignancy probability, BI-RADS-style suggestion with "
            "its reasons, Grad-CAM heatmap, DICOM SEG + SR + overlay export. Models trained on two hospitals' "
            "ultrasound. <b>Research use only; not for diagnosis.</b> "
            'See <a href="https://github.com/breastcadx/BreastCADx">the documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Models trained on BUSI (Al-Dhabyani et al., Data in Brief 28:104863, 2020) and BUS-BRA (Gomez-Flores "
            "et al., Medical Physics 51:3110, 2024). Built on MONAI, pyradiomics (van Griethuysen et al., Cancer "
            "Research 2017), highdicom and 3D Slicer."
        )

        def on_startup():
            from BreastCADxLib.scene.widget import load_terminology, register_sample_data

            register_sample_data(lambda: BreastCADxLogic().loadSampleCase())
            load_terminology()

        slicer.app.connect("startupCompleted()", on_startup)


@parameterNodeWrapper
class BreastCADxParameterNode:
    """Mirrors BreastCADxLib/scene/parameters.py (a test keeps them equal); survives scene save and reload."""

    inputVolume: vtkMRMLScalarVolumeNode
    roi: vtkMRMLMarkupsROINode
    segmentation: vtkMRMLSegmentationNode
    resultTable: vtkMRMLTableNode
    heatmap: vtkMRMLScalarVolumeNode
    segmentID: str = ""
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    expectLesion: bool = True
    readerBirads: Annotated[str, Choice(["", "1", "2", "3", "4", "4A", "4B", "4C", "5"])] = ""
    siteProfile: str = ""
    modelSet: str = ""
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    probability: float = -1.0
    biradsSuggestion: str = ""
    resultMaskDigest: str = ""
    resultJSON: str = ""


class BreastCADxWidget(ScriptedLoadableModuleWidget):
    panel = None  # set in setup(); Slicer may call cleanup() on a widget whose setup failed

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from BreastCADxLib.scene.widget import BreastCADxPanel

        self.panel = BreastCADxPanel(self, BreastCADxLogic(), self.resourcePath("UI/BreastCADx.ui"))
        self.panel.setup()

    def cleanup(self):
        if self.panel:
            self.panel.cleanup()

    def enter(self):
        if self.panel:
            self.panel.enter()

    def exit(self):
        if self.panel:
            self.panel.exit()


class BreastCADxLogic(ScriptedLoadableModuleLogic):
    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from BreastCADxLib.scene.logic import WorkflowLogic

        self.workflow = WorkflowLogic(slicer.mrmlScene)

    def getParameterNode(self):
        return BreastCADxParameterNode(super().getParameterNode())

    def loadSampleCase(self):
        """The bundled US sample as a volume node that remembers its DICOM source (for SEG/SR export)."""
        return self.workflow.load_sample()


class BreastCADxTest(ScriptedLoadableModuleTest):
    def runTest(self):
        from BreastCADxLib.scene.selftest import full_flow

        slicer.mrmlScene.Clear()
        full_flow(BreastCADxLogic(), self, self.delayDisplay)
