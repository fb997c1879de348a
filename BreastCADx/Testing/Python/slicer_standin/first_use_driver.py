"""Runs BreastCADx's Slicer start-up in a stock-Slicer-like Python (see test_first_use.py) and prints a JSON report.

Steps as Slicer takes them: the module class is constructed, `startupCompleted()` fires, the panel's `setup()`
runs, then the Segment button is clicked. Every import attempted is recorded (also the ones that fail or are
caught) with the module that asked for it, and the point at which the installer started. Optional imports that a
stock package tries by itself (requests trying brotli, pydicom trying its decoders) are its own business.
"""

import importlib.abc
import json
import os
import site
import sys
import traceback
from pathlib import Path

attempts: list[tuple[str, str]] = []  # (top-level name asked for, the module that asked)
installer_at: list[int] = []


class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        frame = sys._getframe(1)
        while frame and ("importlib" in frame.f_code.co_filename or frame.f_code.co_filename.startswith("<")):
            frame = frame.f_back
        attempts.append((fullname.split(".")[0], frame.f_globals.get("__name__", "") if frame else ""))
        return None


sys.meta_path.insert(0, Recorder())


def main() -> None:
    import slicer
    from slicer.standin import Widget, calls

    for name in filter(None, os.environ.get("STANDIN_PREIMPORT", "").split(",")):
        try:
            __import__(name)  # the test's own check that a heavy import is seen
        except ImportError:
            pass
    import BreastCADx as module

    module.BreastCADx(Widget("moduleParent"))
    slicer.app.emit("startupCompleted()")
    widget = module.BreastCADxWidget()
    widget.setup()

    import BreastCADxLib.scene.widget as panel_module

    real = panel_module.ensure_dependencies

    def observed(path):
        installer_at.append(len(attempts))
        calls.append(("ensure_dependencies", str(path)))
        return real(path)

    panel_module.ensure_dependencies = observed
    raised = None
    try:
        widget.panel.onSegment()
    except Exception:
        raised = traceback.format_exc()
    stock = {p.name.split(".")[0].split("-")[0] for d in site.getsitepackages() for p in Path(d).iterdir()}
    own = {"BreastCADx", "BreastCADxLib", "slicer", "qt", "ctk", "SampleData"}
    allowed = set(sys.stdlib_module_names) | stock | own | set(sys.builtin_module_names)
    before = attempts[:installer_at[0]] if installer_at else attempts
    ours = [name for name, asker in before if asker.split(".")[0] in own or asker == "__main__"]
    print(json.dumps({
        "foreign_before_installer": sorted({a for a in ours if a not in allowed}),
        "installer_started": bool(installer_at),
        "calls": [[str(x) for x in c] for c in calls],
        "status": str(widget.panel.ui.statusLabel._values.get("text", "")),
        "raised": raised,
    }))


if __name__ == "__main__":
    main()
