"""Stand-in for slicer.util: dialogs answer from STANDIN_CONFIRM; pip_install records and installs nothing."""

import os
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from types import SimpleNamespace

from slicer.standin import Widget, record


def confirmOkCancelDisplay(text, *args, **kwargs) -> bool:
    record("confirm", text)
    return os.environ.get("STANDIN_CONFIRM", "no") == "yes"


def errorDisplay(text, *args, detailedText=None, **kwargs) -> None:
    record("errorDisplay", text, detailedText)


def warningDisplay(text, *args, **kwargs) -> None:
    record("warningDisplay", text)


def infoDisplay(text, *args, **kwargs) -> None:
    record("infoDisplay", text)


def pip_install(requirements) -> None:
    record("pip_install", requirements if isinstance(requirements, str) else list(requirements))


@contextmanager
def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
    """As Slicer's: shows the error with its traceback as details, then raises it again."""
    try:
        yield
    except Exception as e:
        import traceback

        errorDisplay(f"{message}\n\n{e}" if message else str(e), detailedText=traceback.format_exc())
        raise


def loadUI(path):
    root = ET.parse(path).getroot()
    names = [w.get("name") for w in root.iter("widget")]
    record("loadUI", str(path))
    ui = Widget("uiWidget")
    ui._widget_names = names
    return ui


def childWidgetVariables(widget):
    """Exactly the .ui's widget names, as Slicer's: any other name is an AttributeError."""
    return SimpleNamespace(**{n: Widget(n) for n in widget._widget_names})


class VTKObservationMixin:
    def __init__(self) -> None:
        self.observations = []

    def addObserver(self, obj, event, method, *args, **kwargs) -> None:
        self.observations.append((obj, event, method))

    def removeObserver(self, obj, event, method) -> None:
        self.observations = [o for o in self.observations if o != (obj, event, method)]

    def removeObservers(self, method=None) -> None:
        self.observations = []
