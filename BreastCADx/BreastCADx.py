"""BreastCADx 3D Slicer module: wiring only; the work lives in BreastCADxLib (Slicer-free)."""

import os

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE_DIR = os.path.join(MODULE_DIR, "Resources", "SampleData")
SAMPLE_IMAGE = os.path.join(SAMPLE_DIR, "BreastCADx_US_sample.dcm")
SAMPLE_MASK = os.path.join(SAMPLE_DIR, "BreastCADx_US_sample_mask.nrrd")


class BreastCADx(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BreastCADx"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BreastCADx contributors"]
        self.parent.helpText = (
            "Breast-lesion segmentation and benign/malignant classification on ultrasound "
            "(mammography and MRI loading too). <b>Research use only; not for diagnosis.</b> "
            'See <a href="https://github.com/breastcadx/BreastCADx">the documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Sample image from the BUSI dataset: W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, "
            "'Dataset of breast ultrasound images', Data in Brief 28:104863, 2020."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Register the bundled (local, offline) sample case with the Sample Data module."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="BreastCADx",
        sampleName="BreastCADx US sample",
        thumbnailFileName=os.path.join(MODULE_DIR, "Resources", "Icons", "BreastCADx.png"),
        uris=None,
        fileNames=None,
        nodeNames="BreastCADx US sample",
        customDownloader=lambda source: BreastCADxLogic().loadSampleCase(),
    )


class BreastCADxWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/BreastCADx.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = BreastCADxLogic()
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)

    def onLoadSample(self):
        with slicer.util.tryWithErrorDisplay("Failed to load the sample case.", waitCursor=True):
            volume, _ = self.logic.loadSampleCase()
            self.ui.inputVolumeSelector.setCurrentNode(volume)


class BreastCADxLogic(ScriptedLoadableModuleLogic):
    def loadSampleCase(self):
        """Load the bundled US sample and its reference lesion mask; returns (volume, segmentation)."""
        volume = slicer.util.loadVolume(SAMPLE_IMAGE, {"name": "BreastCADx US sample"})
        segmentation = slicer.util.loadSegmentation(SAMPLE_MASK, {"name": "BreastCADx US sample reference"})
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        return volume, segmentation


class BreastCADxTest(ScriptedLoadableModuleTest):
    def runTest(self):
        slicer.mrmlScene.Clear()
        self.test_load_sample()

    def test_load_sample(self):
        volume, segmentation = BreastCADxLogic().loadSampleCase()
        dims = volume.GetImageData().GetDimensions()
        self.assertEqual(dims[:2], (557, 457))
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
