"""BreastCADx 3D Slicer module: wiring only. The work is in BreastCADxLib (Slicer-free) and its MRML bridge;
segment/classify run in a background process (BreastCADxLib.scene.worker) so the application stays responsive."""

import os
from typing import Annotated

import qt
import slicer
import vtk
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
from slicer.util import VTKObservationMixin

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
SAMPLE_IMAGE = os.path.join(MODULE_DIR, "Resources", "SampleData", "BreastCADx_US_sample.dcm")
REQUIREMENTS = os.path.join(MODULE_DIR, "Resources", "requirements.txt")
POLL_MS = 200
BIRADS_COLORS = {"3": "#2e7d32", "4A": "#9e9d24", "4B": "#ef6c00", "4C": "#d84315", "5": "#b71c1c"}


class BreastCADx(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BreastCADx"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["BreastCADx contributors"]
        self.parent.helpText = (
            "Breast-lesion CADx: segment the lesion (MONAI U-Net with an ImageNet EfficientNet-Lite0 encoder), "
            "correct it in the embedded Segment Editor, then classify it benign vs malignant by fusing pyradiomics "
            "and CNN features: calibrated malignancy probability, BI-RADS-style suggestion (ACR likelihood ranges), "
            "Grad-CAM heatmap, DICOM SEG + SR export. <b>Research use only; not for diagnosis.</b> "
            'See <a href="https://github.com/breastcadx/BreastCADx">the documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Models trained on BUSI: W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, 'Dataset of breast ultrasound "
            "images', Data in Brief 28:104863, 2020. Built on MONAI, pyradiomics (van Griethuysen et al., Cancer "
            "Research 2017), highdicom and 3D Slicer."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)
        slicer.app.connect("startupCompleted()", loadTerminology)


def loadTerminology():
    """Our lesion category/type (SNOMED CT) as a terminology context, so segments carry standard codes."""
    path = os.path.join(MODULE_DIR, "Resources", "Terminology", "SegmentationCategoryType-BreastCADx.term.json")
    slicer.modules.terminologies.logic().LoadTerminologyFromFile(path)


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


def ensureDependencies():
    """First use: install what Resources/requirements.txt lists (asking first); torch through PyTorchUtils."""
    from pathlib import Path

    from BreastCADxLib.scene.installer import missing_requirements, read_requirements

    try:
        import torch  # noqa: F401
    except ImportError:
        try:
            import PyTorchUtils
        except ImportError:
            if not slicer.util.confirmOkCancelDisplay(
                    "BreastCADx needs PyTorch. Install the CPU build now (several minutes)? For a GPU build, "
                    "install the PyTorch extension from the Extension Manager first."):
                raise RuntimeError("PyTorch is required; installation was declined.") from None
            slicer.util.pip_install(["torch", "--index-url", "https://download.pytorch.org/whl/cpu"])
        else:
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
                raise RuntimeError("PyTorch is required; installation was declined or failed.")
    requirements = read_requirements(Path(REQUIREMENTS))
    if not missing_requirements(requirements):
        return
    try:
        from slicer import packaging

        packaging.pip_ensure(packaging.load_requirements(REQUIREMENTS), requester="BreastCADx")
    except (ImportError, AttributeError):  # Slicer before pip_ensure
        missing = missing_requirements(requirements)
        if not slicer.util.confirmOkCancelDisplay("BreastCADx will install: " + ", ".join(missing) + ". Continue?"):
            raise RuntimeError("Required Python packages were not installed.") from None
        slicer.util.pip_install(missing)


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
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    probability: float = -1.0
    biradsSuggestion: str = ""
    resultMaskDigest: str = ""
    resultJSON: str = ""


class BreastCADxWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._guiTag = None
        self._job = None
        self._observedSegmentation = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.connect("timeout()", self.onPoll)
        # parameter and segment edits fire Modified per change; comparing the mask with the classified one
        # (a segment export) waits for a pause
        self._editTimer = qt.QTimer()
        self._editTimer.setSingleShot(True)
        self._editTimer.setInterval(500)
        self._editTimer.connect("timeout()", self.showResult)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BreastCADx.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = BreastCADxLogic()
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "BreastCADx segment editor")
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(editorNode)
        self.ui.outputDirectoryButton.directory = os.path.expanduser("~")
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.classifyButton.connect("clicked(bool)", self.onClassify)
        self.ui.saveResultsButton.connect("clicked(bool)", self.onSaveResults)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.initializeParameterNode()

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, node):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
        self._parameterNode = node
        if self._parameterNode:
            self._guiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGui)
            self.updateGui()

    def updateGui(self, caller=None, event=None):
        p = self._parameterNode
        busy = self._job is not None
        self.ui.segmentButton.enabled = bool(p and p.inputVolume) and not busy
        self.ui.classifyButton.enabled = bool(p and p.segmentation and p.inputVolume) and not busy
        self.ui.cancelButton.enabled = busy
        hasResult = bool(p and p.resultTable)
        self.ui.saveResultsButton.enabled = hasResult and not busy
        self.ui.exportDicomButton.enabled = hasResult and not busy
        if p and p.segmentation:
            self.ui.segmentEditorWidget.setSegmentationNode(p.segmentation)
            self.ui.segmentEditorWidget.setSourceVolumeNode(p.inputVolume)
            self._observeSegmentation(p.segmentation)
        self.ui.resultsTableView.setMRMLTableNode(p.resultTable if p else None)
        if p and p.probability >= 0:
            self.logic.workflow.show_heatmap(p.heatmapOpacity)  # cheap: the opacity slider acts at once
        self._editTimer.start()  # the result text needs a mask comparison: once, after changes settle

    def _observeSegmentation(self, node):
        if node is self._observedSegmentation:
            return
        if self._observedSegmentation is not None:
            self.removeObserver(self._observedSegmentation, vtk.vtkCommand.ModifiedEvent, self.onSegmentationEdited)
        self._observedSegmentation = node
        self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onSegmentationEdited)

    def onSegmentationEdited(self, caller=None, event=None):
        self._editTimer.start()  # then showResult marks the result "out of date" if the mask changed

    def showResult(self):
        p = self._parameterNode
        if p is None or p.probability < 0:
            self.ui.resultLabel.text = "No result yet."
            self.ui.resultLabel.styleSheet = ""
            self.setCornerText("")
            return
        text = self.logic.workflow.summary_text()
        self.ui.resultLabel.text = text
        self.ui.resultLabel.styleSheet = f"color: {BIRADS_COLORS.get(p.biradsSuggestion, '#444')}; font-weight: bold"
        self.setCornerText(text)

    @staticmethod
    def setCornerText(text):
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        for name in layoutManager.sliceViewNames():
            view = layoutManager.sliceWidget(name).sliceView()
            view.cornerAnnotation().SetText(vtk.vtkCornerAnnotation.UpperRight, text)
            view.forceRender()

    def onLoadSample(self):
        with slicer.util.tryWithErrorDisplay("Failed to load the sample case.", waitCursor=True):
            self._parameterNode.inputVolume = self.logic.loadSampleCase()

    def _start(self, starter):
        with slicer.util.tryWithErrorDisplay("Could not start.", waitCursor=True):
            ensureDependencies()
            self._job = starter()
            self.ui.progressBar.value = 0
            self.ui.progressBar.visible = True
            self.ui.statusLabel.text = "Starting..."
            self._timer.start()
        self.updateGui()

    def onProgress(self, fraction, message):
        self.ui.progressBar.value = int(100 * fraction)
        self.ui.statusLabel.text = message

    def onSegment(self):
        p = self._parameterNode
        box = None
        if p.roi is not None:
            from BreastCADxLib.scene.logic import roi_node_to_box

            box = roi_node_to_box(p.roi, p.inputVolume)
        self._start(lambda: self.logic.workflow.start_segment(p.inputVolume, box, p.device, self.onProgress,
                                                              p.expectLesion))

    def onClassify(self):
        p = self._parameterNode
        segmentId = self.ui.segmentEditorWidget.currentSegmentID() or p.segmentID
        self._start(lambda: self.logic.workflow.start_classify(p.inputVolume, p.segmentation, segmentId, p.device,
                                                               self.onProgress))

    def onPoll(self):
        job = self._job
        if job is None or job.poll() == "running":
            return
        self._timer.stop()
        self._job = None
        self.ui.progressBar.visible = False
        with slicer.util.tryWithErrorDisplay(f"{job.kind.capitalize()} failed.", waitCursor=True):
            if job.kind == "segment":
                out = self.logic.workflow.finish_segment(job, self._parameterNode.segmentation)
                self.ui.segmentEditorWidget.setCurrentSegmentID(out.segment_id)
                self.ui.statusLabel.text = (
                    "No lesion found: an empty segment was added to draw into." if not out.lesion_found else
                    "Low-confidence candidate (nothing certain was found): check it carefully, correct or redraw."
                    if out.low_confidence else "Lesion segmented: check and correct it below.")
            else:
                self.logic.workflow.finish_classify(job)
                self.ui.statusLabel.text = "Classified."
        self.updateGui()

    def onCancel(self):
        if self._job is not None:
            self._timer.stop()
            self._job.cancel()
            self._job = None
            self.ui.progressBar.visible = False
            self.ui.statusLabel.text = "Cancelled; the scene is unchanged."
            self.updateGui()

    def onSaveResults(self):
        with slicer.util.tryWithErrorDisplay("Failed to save results.", waitCursor=True):
            paths = self.logic.workflow.save_results(self.ui.outputDirectoryButton.directory)
            self.ui.statusLabel.text = "Saved: " + ", ".join(str(p) for p in paths.values())

    def onExportDicom(self):
        with slicer.util.tryWithErrorDisplay("DICOM export failed.", waitCursor=True):
            folder = os.path.join(self.ui.outputDirectoryButton.directory, "BreastCADx-DICOM")
            paths = self.logic.workflow.export_dicom(folder)
            self.ui.statusLabel.text = ("Wrote " + ", ".join(str(p) for p in paths.values()) +
                                        ". Import them in the DICOM module to send them to a PACS.")


class BreastCADxLogic(ScriptedLoadableModuleLogic):
    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from BreastCADxLib.scene.logic import WorkflowLogic

        self.workflow = WorkflowLogic(slicer.mrmlScene)

    def getParameterNode(self):
        return BreastCADxParameterNode(super().getParameterNode())

    def loadSampleCase(self):
        """The bundled US sample as a volume node that remembers its DICOM source (for SEG/SR export)."""
        return self.workflow.load_image_file(SAMPLE_IMAGE, "BreastCADx US sample")


class BreastCADxTest(ScriptedLoadableModuleTest):
    """The panel's flow through the Logic, in the running application (same steps as the headless tests)."""

    def runTest(self):
        slicer.mrmlScene.Clear()
        self.test_full_flow()

    def test_full_flow(self):
        import tempfile

        import numpy as np

        logic = BreastCADxLogic()
        volume = logic.loadSampleCase()
        self.assertEqual(volume.GetImageData().GetDimensions()[:2], (557, 457))
        seen = []
        seg = logic.workflow.segment(volume, device="auto", progress=lambda f, m: seen.append(f))
        self.assertTrue(seg.lesion_found)
        self.assertEqual(seen[-1], 1.0)
        first = logic.workflow.classify(volume, seg.segmentation_node, seg.segment_id)
        self.assertIsNotNone(first.result["malignancy_probability"])
        self.assertEqual(first.heatmap_node.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
        # erase the left half of the lesion, as a correction would
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(seg.segmentation_node, seg.segment_id, volume)
        mask[:, :, : mask.shape[2] // 2] = 0
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, seg.segmentation_node, seg.segment_id, volume)
        self.assertTrue(logic.workflow.results_out_of_date())
        second = logic.workflow.classify(volume, seg.segmentation_node, seg.segment_id)
        self.assertEqual(second.result["measurements"]["lesion_pixels"], int(np.count_nonzero(mask)))
        self.assertFalse(logic.workflow.results_out_of_date())
        folder = tempfile.mkdtemp()
        logic.workflow.save_results(folder)
        paths = logic.workflow.export_dicom(os.path.join(folder, "dicom"))
        self.assertTrue(os.path.exists(paths["seg"]) and os.path.exists(paths["sr"]))
        self.delayDisplay("BreastCADx flow passed")
