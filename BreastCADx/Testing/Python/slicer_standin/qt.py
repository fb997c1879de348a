"""Stand-in for Slicer's PythonQt `qt` module (only what the panel uses)."""

from types import SimpleNamespace

from slicer.standin import record

Qt = SimpleNamespace(WaitCursor=3)


class QTimer:
    def __init__(self) -> None:
        self.interval, self.single, self.active, self.slots = 0, False, False, []

    def setInterval(self, ms) -> None:
        self.interval = ms

    def setSingleShot(self, single) -> None:
        self.single = single

    def connect(self, signal, slot) -> None:
        self.slots.append(slot)

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False


record("import", "qt")
