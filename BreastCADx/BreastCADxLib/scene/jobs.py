"""Background jobs: one job folder, a TaskRunner that runs the worker on it, and the tasks it returns.

`ProcessRunner` runs the worker in a background process (progress events, cancel kills the whole process tree);
`worker.InProcessRunner` runs the same worker code in this process (tests, scripts). Qt-free: the Slicer panel calls
`poll()` from a QTimer so the UI stays responsive; tests and scripts call `wait()`. After a cancel the caller
discards the job folder, so nothing half-made reaches the scene.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from BreastCADxLib.errors import BreastCADxError

LIB_PARENT = Path(__file__).resolve().parents[2]  # the folder holding BreastCADxLib/
RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
Progress = Callable[[float, str], None]


class JobFolder:
    """Inputs and outputs of one background job; every file name of the job is defined here only.
    Inputs: image.nrrd (its header carries spacing-known and modality), mask.nrrd (classify).
    Outputs in out/: mask.nrrd + segment.json (segment); a case folder of the one case writer (classify)."""

    def __init__(self, root: Path) -> None:
        from BreastCADxLib.results.case_files import NAMES

        self.root = Path(root)
        self.image, self.mask, self.out = self.root / "image.nrrd", self.root / "mask.nrrd", self.root / "out"
        self.out_mask, self.segment_info = self.out / NAMES["mask"], self.out / "segment.json"

    @classmethod
    def create(cls, kind: str) -> JobFolder:
        return cls(Path(tempfile.mkdtemp(prefix=f"breastcadx-{kind}-")))

    def write_inputs(self, image, mask=None) -> None:
        from BreastCADxLib.io import save_image, save_mask

        save_image(image, self.image)
        if mask is not None:
            save_mask(mask, image, self.mask)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Task(Protocol):
    status: str
    error: str
    messages: list[tuple[float, str]]

    def poll(self) -> str: ...
    def cancel(self) -> None: ...
    def wait(self, timeout: float | None = None, interval: float = 0.1,
             should_cancel: Callable[[], bool] | None = None) -> str: ...


class TaskRunner(Protocol):
    def start(self, task: str, job: JobFolder, args: list[str], on_progress: Progress | None = None) -> Task:
        """Start worker task `task` ("segment" / "classify") on `job` with worker arguments `args`."""
        ...


def python_executable() -> str:
    """PythonSlicer inside Slicer (its launcher sets up the environment), else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


class BackgroundTask:
    def __init__(self, args: list[str], on_progress: Callable[[float, str], None] | None = None,
                 python: str | None = None) -> None:
        self.args = args
        self.on_progress = on_progress
        self.python = python or python_executable()
        self.status = "new"
        self.error = ""
        self.messages: list[tuple[float, str]] = []
        self._events: queue.Queue = queue.Queue()
        self._proc: subprocess.Popen | None = None
        self._stderr: list[str] = []
        self._readers: list[threading.Thread] = []

    def start(self) -> BackgroundTask:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(LIB_PARENT), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("PYTHONUNBUFFERED", "1")
        kwargs: dict = {"start_new_session": True} if os.name == "posix" else \
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        try:
            self._proc = subprocess.Popen([self.python, "-m", "BreastCADxLib.scene.worker", *self.args], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        except OSError as e:
            raise BreastCADxError(f"cannot start the background process ({e.strerror})", self.python) from None
        self._readers = [threading.Thread(target=self._read, args=(self._proc.stdout, True), daemon=True),
                         threading.Thread(target=self._read, args=(self._proc.stderr, False), daemon=True)]
        for t in self._readers:
            t.start()
        self.status = RUNNING
        return self

    def _read(self, stream, events: bool) -> None:
        for line in stream:
            if events:
                self._events.put(line)
            else:
                self._stderr.append(line)

    def poll(self) -> str:
        """Deliver pending progress events; returns the status (running, done, failed, cancelled)."""
        if self.status != RUNNING:
            return self.status
        finished = self._proc.poll() is not None
        if finished:  # let the reader threads drain the pipes
            for t in self._readers:
                t.join(timeout=10)
        while True:
            try:
                line = self._events.get_nowait()
            except queue.Empty:
                break
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # stray prints from libraries
            if "progress" in event:
                self.messages.append((event["progress"], event.get("message", "")))
                if self.on_progress is not None:
                    self.on_progress(float(event["progress"]), str(event.get("message", "")))
            elif "error" in event:
                self.error = str(event["error"])
        if finished:
            code = self._proc.returncode
            if code == 0 and not self.error:
                self.status = DONE
            else:
                self.status = FAILED
                if not self.error:
                    tail = "".join(self._stderr)[-800:].strip()
                    self.error = f"background process exited with code {code}: {tail}"
        return self.status

    def cancel(self) -> None:
        """Kill the worker and everything it started; status becomes 'cancelled'."""
        if self._proc is not None and self._proc.poll() is None:
            if os.name == "posix":
                os.killpg(self._proc.pid, signal.SIGKILL)
            else:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._proc.pid)], capture_output=True)
            self._proc.wait(timeout=30)
        self.status = CANCELLED

    def wait(self, timeout: float | None = None, interval: float = 0.1,
             should_cancel: Callable[[], bool] | None = None) -> str:
        """Block until the task ends (or is cancelled through should_cancel / timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() == RUNNING:
            if (should_cancel is not None and should_cancel()) or (deadline and time.monotonic() > deadline):
                self.cancel()
                break
            time.sleep(interval)
        return self.status


class ProcessRunner:
    """The worker in a background process (PythonSlicer inside Slicer)."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python

    def start(self, task: str, job: JobFolder, args: list[str], on_progress: Progress | None = None) -> Task:
        return BackgroundTask([task, "--job", str(job.root), *args], on_progress, self.python).start()
