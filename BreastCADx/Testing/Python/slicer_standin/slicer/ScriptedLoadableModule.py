"""Stand-in for slicer.ScriptedLoadableModule."""

import os
import sys

from slicer.standin import Widget


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent or Widget("moduleWidget")
        self.layout = Widget("layout")
        self.moduleName = self.__class__.__name__.removesuffix("Widget")

    def setup(self) -> None:
        pass

    def resourcePath(self, filename: str) -> str:
        module = sys.modules[self.__class__.__module__]
        return os.path.join(os.path.dirname(module.__file__), "Resources", filename)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        pass

    def getParameterNode(self):
        return Widget("vtkMRMLScriptedModuleNode")


class ScriptedLoadableModuleTest:
    pass
