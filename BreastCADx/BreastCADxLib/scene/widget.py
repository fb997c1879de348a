"""The Slicer module panel (Qt), kept out of BreastCADx.py: Slicer needs only the module classes at that path.

Thin by design: every action calls the shared scene logic (`logic.WorkflowLogic`), which is tested headless on a
real MRML scene; the widget names used here are checked against Resources/UI/BreastCADx.ui by a test.
"""

import os
import traceback

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.scene.installer import InstallDeclined, ensure_dependencies
from BreastCADxLib.scene.logic import BIRADS_COLORS

MODULE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIREMENTS = os.path.join(MODULE_DIR, "Resources", "requirements.txt")
TERMINOLOGY = os.path.join(MODULE_DIR, "Resources", "Terminology", "SegmentationCategoryType-BreastCADx.term.json")
POLL_MS = 200


def load_terminology():
    """Our lesion category/type (SNOMED CT) as a terminology context, so segments carry standard codes."""
    slicer.modules.terminologies.logic().LoadTerminologyFromFile(TERMINOLOGY)


def register_sample_data(load_sample):
    """Register the bundled (local, offline) sample case with the Sample Data module."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="BreastCADx", sampleName="BreastCADx US sample",
        thumbnailFileName=os.path.join(MODULE_DIR, "Resources", "Icons", "BreastCADx.png"),
        uris=None, fileNames=None, nodeNames="BreastCADx US sample",
        customDownloader=lambda source: load_sample())


class BreastCADxPanel(VTKObservationMixin):
    """The module panel: builds the .ui into the module widget's layout and runs the workflow through `logic`
    (the module's Logic, whose `workflow` is the shared scene logic)."""

    def __init__(self, module_widget, logic, ui_path: str):
        VTKObservationMixin.__init__(self)
        self.module_widget = module_widget
        self.logic = logic
        self.ui_path = ui_path
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
        uiWidget = slicer.util.loadUI(self.ui_path)
        self.module_widget.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
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
        self.ui.siteProfilePathLineEdit.connect("currentPathChanged(QString)", self.onSiteProfile)
        self.ui.modelSetPathLineEdit.connect("currentPathChanged(QString)", self.onModelSet)
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
        if self.module_widget.parent.isEntered:
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
        self.ui.roiLabel.text = self.logic.workflow.roi_label  # a set without a segmenter needs the box
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
        def load():
            self._parameterNode.inputVolume = self.logic.loadSampleCase()

        self._guarded("Failed to load the sample case.", load)

    def _start(self, starter):
        def install_then_start():
            ensure_dependencies(REQUIREMENTS)
            self._job = starter()

        if not self._guarded("Could not start.", install_then_start):
            return
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.ui.statusLabel.text = "Starting..."
        self._timer.start()
        self.updateGui()

    def _guarded(self, message: str, action) -> bool:
        """Run a panel action: a failure is shown (ours: its message; anything else: with details) and said in the
        status line, never raised into Qt's event loop; a declined install is the user's choice: said, not shown."""
        try:
            slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
            try:
                action()
            finally:
                slicer.app.restoreOverrideCursor()
            return True
        except InstallDeclined as e:
            self.ui.statusLabel.text = str(e)
        except BreastCADxError as e:
            self.ui.statusLabel.text = f"{message} {e}"
            slicer.util.errorDisplay(f"{message}\n\n{e}")
        except Exception as e:
            self.ui.statusLabel.text = f"{message} {e}"
            slicer.util.errorDisplay(f"{message}\n\n{e}", detailedText=traceback.format_exc())
        return False

    def onProgress(self, fraction, message):
        self.ui.progressBar.value = int(100 * fraction)
        self.ui.statusLabel.text = message

    def onModelSet(self, path):
        if self._parameterNode:
            self._parameterNode.modelSet = path or ""

    def onSiteProfile(self, path):
        from BreastCADxLib.analysis.site import carried_model_set

        carried = carried_model_set(path) if path else None
        if carried:  # a profile's own fine-tuned set comes with it
            self.ui.modelSetPathLineEdit.currentPath = str(carried)
        if self._parameterNode:
            self._parameterNode.siteProfile = path or ""

    def onSegment(self):
        p = self._parameterNode
        self._start(lambda: self.logic.workflow.start_segment(p.inputVolume, self.logic.workflow.roi_box(),
                                                              p.device, self.onProgress, p.expectLesion))

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
        def finish():
            if job.kind == "segment":
                out = self.logic.workflow.finish_segment(job, self._parameterNode.segmentation)
                self.ui.segmentEditorWidget.setCurrentSegmentID(out.segment_id)
                self.ui.statusLabel.text = out.message
            else:
                self.logic.workflow.finish_classify(job)
                self.ui.statusLabel.text = "Classified."

        self._guarded(f"{job.kind.capitalize()} failed.", finish)
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
        def save():
            paths = self.logic.workflow.save_results(self.ui.outputDirectoryButton.directory)
            self.ui.statusLabel.text = "Saved: " + ", ".join(str(p) for p in paths.values())

        self._guarded("Failed to save results.", save)

    def onExportDicom(self):
        def export():
            folder = os.path.join(self.ui.outputDirectoryButton.directory, "BreastCADx-DICOM")
            paths = self.logic.workflow.export_dicom(folder)
            self.ui.statusLabel.text = ("Wrote " + ", ".join(str(p) for p in paths.values()) +
                                        ". Import them in the DICOM module to send them to a PACS.")

        self._guarded("DICOM export failed.", export)
