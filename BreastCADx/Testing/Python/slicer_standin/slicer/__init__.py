"""Stand-in for Slicer's `slicer` package: the names BreastCADx's start-up, panel set-up and buttons use."""

from types import SimpleNamespace

from slicer import util  # noqa: F401
from slicer.standin import Widget, record


class _Node(Widget):
    pass


class vtkMRMLScalarVolumeNode(_Node):
    pass


class vtkMRMLMarkupsROINode(_Node):
    pass


class vtkMRMLSegmentationNode(_Node):
    pass


class vtkMRMLTableNode(_Node):
    pass


class _App:
    def __init__(self) -> None:
        self.slots: dict[str, list] = {}

    def connect(self, signal, slot) -> None:
        record("connect", signal)
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal) -> None:
        for slot in self.slots.get(signal, []):
            slot()

    def setOverrideCursor(self, cursor) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass

    def layoutManager(self):
        return None

    def testingEnabled(self) -> bool:
        return False


class _Scene(Widget):
    StartCloseEvent, EndCloseEvent = 1, 2

    def AddNewNodeByClass(self, cls, name=""):
        record("AddNewNodeByClass", cls)
        return _Node(cls)

    def GetFirstNodeByClass(self, cls):
        return None


class _Terminologies:
    def logic(self):
        return SimpleNamespace(LoadTerminologyFromFile=lambda path: record("LoadTerminologyFromFile", str(path)))


app = _App()
mrmlScene = _Scene("mrmlScene")
modules = SimpleNamespace(terminologies=_Terminologies())
