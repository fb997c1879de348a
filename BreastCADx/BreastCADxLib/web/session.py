"""What the page can do, on the shared scene logic (scene.logic.WorkflowLogic, as the desktop panel) and a viewer.

No trame here: every action returns plain data or raises a BreastCADxError with a message for the page; `guard`
turns anything else into a short message (the traceback goes to the server log, never to the page). Tested
headless on slicer-core with a fake viewer; page.py binds it to the trame page and the real slice view.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.io.dicom import is_dicom_file
from BreastCADxLib.scene import parameters as params
from BreastCADxLib.scene.logic import BIRADS_COLORS, Job, JobFailed, WorkflowLogic
from BreastCADxLib.web.access import DataRoots, OutputFolder

log = logging.getLogger("breastcadx.serve")
TOOLS = ("none", "paint", "erase")


class Viewer(Protocol):
    """The slice view and its segment editor (trame-slicer in page.py)."""

    def show(self, volume_node) -> None: ...
    def edit(self, segmentation_node, volume_node, segment_id: str) -> None: ...
    def set_tool(self, tool: str, brush_mm: float) -> None: ...
    def place(self, markup) -> None: ...
    def undo(self) -> bool: ...
    def redo(self) -> bool: ...
    def render(self) -> None: ...


@dataclass
class Status:
    """Everything the page shows, as plain data."""

    case: str = ""
    dicom: bool = False  # DICOM source: SEG/SR/SC export possible
    busy: str = ""  # "segment" / "classify" while a job runs
    progress: float = 0.0
    message: str = ""
    error: str = ""
    roi: list[int] = field(default_factory=list)
    segment: str = ""
    lesion_pixels: int = 0
    mask_origin: str = ""  # auto / edited / user
    out_of_date: bool = False
    heatmap: bool = False
    result: dict | None = None
    outputs: list[str] = field(default_factory=list)

    def to_state(self) -> dict:
        return asdict(self)

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(Status(), f.name))


def guard(action: Callable[[], object], status: Status, what: str) -> object | None:
    """Run a page action; a failure becomes `status.error` (a sentence, never a stack trace)."""
    status.error = ""
    try:
        return action()
    except BreastCADxError as e:
        status.error = f"{what}: {e}"
    except Exception as e:  # noqa: BLE001 - the page must get a message, the log gets the traceback
        log.exception("%s failed", what)
        status.error = f"{what}: unexpected {e.__class__.__name__}; details are in the server log"
    return None


class ReviewSession:
    """One reading session: one case at a time in the scene, one background job at a time."""

    def __init__(self, logic: WorkflowLogic, viewer: Viewer, roots: DataRoots, output: OutputFolder,
                 pacs=None, device: str = "auto") -> None:
        self.logic, self.viewer, self.roots, self.output = logic, viewer, roots, output
        self.pacs, self.device = pacs, device
        self.job: Job | None = None
        self.status = Status()
        self.on_roi_changed: Callable[[], None] | None = None  # the page: the box was drawn or dragged
        self.tool = "none"

    @property
    def p(self) -> dict:
        return params.values(self.logic.parameters)

    # ---- open ----------------------------------------------------------------------------------------
    def _clear_case(self) -> None:
        if self.job is not None:
            self.cancel()
        self.viewer.set_tool("none", 0)
        p = self.p
        for name in ("roi", "heatmap", "resultTable", "segmentation", "inputVolume"):
            if p[name] is not None:
                self.logic.scene.RemoveNode(p[name])
        params.set_values(self.logic.parameters, roi=None, heatmap=None, resultTable=None, segmentation=None,
                          inputVolume=None, segmentID="", probability=-1.0, biradsSuggestion="",
                          resultMaskDigest="", resultJSON="")
        self.status.reset()  # the same object: page.act holds it while the action runs

    def _opened(self, node, label: str) -> None:
        node.SetName(label)
        self.viewer.show(node)
        self.status.case = label
        sources = json.loads(node.GetAttribute("BreastCADx.sourceFiles") or "[]")
        self.status.dicom = bool(sources) and all(is_dicom_file(Path(f)) for f in sources)
        box = "(needed: this model set has no segmenter)" if self.logic.box_needed else "(optional)"
        self.status.message = f"Opened. Draw an ROI box around the lesion {box}, then Segment."

    def open_sample(self) -> None:
        self._clear_case()
        self._opened(self.logic.load_sample(), "BreastCADx US sample")

    def open_file(self, ref: str) -> None:
        path = self.roots.resolve(ref)
        self._clear_case()
        try:
            node = self.logic.load_image_file(path)
        except BreastCADxError as e:  # name the case as the page knows it, not the server's folder layout
            label = self.roots.label(path)
            raise BreastCADxError(e.cause.replace(str(path), label), label) from None
        self._opened(node, self.roots.label(path))

    def open_pacs(self, study_uid: str) -> None:
        if self.pacs is None:
            raise BreastCADxError("no PACS configured: start the server with --pacs-url")
        study_uid = study_uid.strip()
        self._clear_case()
        dest = self.output.new_folder(study_uid[-16:], "retrieved") / "series"  # kept: SEG/SR reference it
        self._opened(self.logic.load_pacs_series(self.pacs, study_uid, dest), f"PACS study {study_uid}")

    # ---- ROI -----------------------------------------------------------------------------------------
    def _volume(self):
        node = self.p["inputVolume"]
        if node is None:
            raise BreastCADxError("open a case first")
        return node

    def set_roi(self, box: list[int] | tuple[int, int, int, int]) -> None:
        roi = self.logic.set_roi_box(self._volume(), tuple(int(v) for v in box))
        self._watch(roi)
        self.read_roi()
        self.viewer.render()

    def draw_roi(self) -> None:
        """A new ROI box drawn in the view: click a corner, then the opposite one."""
        self._volume()
        roi = self.logic.new_roi()
        self._watch(roi)
        self.viewer.place(roi)
        self.status.roi = []
        self.status.message = "Click one corner of the box in the image, then the opposite corner."

    def read_roi(self) -> None:
        """The ROI box as the page shows it, after it was set, drawn or dragged."""
        try:
            box = self.logic.roi_box()
        except BreastCADxError as e:
            self.status.roi, self.status.error = [], str(e)
            return
        self.status.roi = list(box) if box is not None else []
        if box is not None:
            self.status.message = "ROI box set: Segment looks for the lesion inside it."

    def clear_roi(self) -> None:
        self.logic.clear_roi()
        self.status.roi = []
        self.viewer.render()

    def _watch(self, roi) -> None:
        if self.on_roi_changed is not None:
            roi.AddObserver("ModifiedEvent", lambda *_: self.on_roi_changed())

    # ---- jobs ----------------------------------------------------------------------------------------
    def _on_progress(self, fraction: float, message: str) -> None:
        self.status.progress, self.status.message = float(fraction), message

    def start_segment(self) -> None:
        if self.job is not None:
            raise BreastCADxError(f"{self.job.kind} is still running")
        volume = self._volume()
        self.viewer.set_tool("none", 0)
        self.job = self.logic.start_segment(volume, self.logic.roi_box(volume), self.device, self._on_progress,
                                            expect_lesion=True)
        self.status.busy, self.status.progress, self.status.message = "segment", 0.0, "Segmenting..."

    def set_site_profile(self, ref: str | None) -> str:
        """A site profile from the served folders for the next runs ("" / None: none), verified against the
        model set before it is taken (one carrying its fine-tuned set takes that set too); returns its label."""
        if not ref:
            params.set_values(self.logic.parameters, siteProfile="")
            return ""
        from BreastCADxLib.analysis.site import carried_model_set, load_site_profile

        folder = self.roots.resolve(ref)
        carried = carried_model_set(folder)
        load_site_profile(folder, str(carried) if carried else self.logic.model_set)
        if carried:
            params.set_values(self.logic.parameters, modelSet=str(carried))
        params.set_values(self.logic.parameters, siteProfile=str(folder))
        return self.roots.label(folder)

    def model_set_label(self) -> str:
        """The chosen model set as the page names it ("" for the shipped one)."""
        chosen = params.get_value(self.logic.parameters, "modelSet")
        return self.roots.label(Path(chosen)) if chosen else ""

    def model_set_ref(self) -> str | None:
        """The chosen model set as the page's selector lists it (None: the shipped one, or one outside the served
        folders)."""
        chosen = params.get_value(self.logic.parameters, "modelSet")
        return self.roots.ref(Path(chosen)) if chosen else None

    def set_model_set(self, ref: str | None) -> str:
        """A model set from the served folders for the next runs ("" / None: the shipped one), verified whole
        before it is taken; returns its label. A site profile made for another set is let go."""
        from BreastCADxLib.analysis.registry import verify_model_set
        from BreastCADxLib.analysis.site import SiteProfileError, load_site_profile

        if ref:
            folder = self.roots.resolve(ref)
            verify_model_set(folder)  # ModelError naming the missing or altered file
            params.set_values(self.logic.parameters, modelSet=str(folder))
            label = self.roots.label(folder)
        else:
            params.set_values(self.logic.parameters, modelSet="")
            label = "the shipped set"
        site = self.site_profile()
        if site:
            try:
                load_site_profile(Path(site), self.logic.model_set)
            except SiteProfileError:  # made for another set
                params.set_values(self.logic.parameters, siteProfile="")
        return label

    def site_profile(self) -> str:
        """The site profile folder the next runs follow ("" none)."""
        return params.get_value(self.logic.parameters, "siteProfile")

    def set_reader_birads(self, category: str | None) -> None:
        """The radiologist's own category for the next classification ("" / None: none)."""
        from BreastCADxLib.analysis.site import reader_category

        params.set_values(self.logic.parameters, readerBirads=reader_category(category) if category else "")

    def start_classify(self) -> None:
        if self.job is not None:
            raise BreastCADxError(f"{self.job.kind} is still running")
        p = self.p
        if p["segmentation"] is None or not p["segmentID"]:
            raise BreastCADxError("segment the lesion (or draw it) first")
        self.viewer.set_tool("none", 0)
        self.job = self.logic.start_classify(self._volume(), p["segmentation"], p["segmentID"], self.device,
                                             self._on_progress)
        self.status.busy, self.status.progress, self.status.message = "classify", 0.0, "Classifying..."

    def poll(self) -> bool:
        """Deliver progress; finish the job when it ended. True while a job is still running."""
        job = self.job
        if job is None:
            return False
        if job.poll() == "running":
            return True
        self.job, self.status.busy = None, ""
        try:
            if job.kind == "segment":
                out = self.logic.finish_segment(job, self.p["segmentation"])
                self.viewer.edit(out.segmentation_node, job.volume_node, out.segment_id)
                self.status.message = out.message
            else:
                self.logic.finish_classify(job)
                self.logic.show_heatmap()
                self.status.message = "Classified. Research use only: not for diagnosis."
        except JobFailed as e:
            self.status.message = ""
            raise BreastCADxError(str(e)) from None
        finally:
            self.refresh()
        return False

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job, self.status.busy, self.status.progress = None, "", 0.0
            self.status.message = "Cancelled; nothing was changed."

    # ---- correction ----------------------------------------------------------------------------------
    def set_tool(self, tool: str, brush_mm: float = 5.0) -> None:
        if tool not in TOOLS:
            raise BreastCADxError(f"unknown tool '{tool}'")
        if tool != "none" and self.p["segmentation"] is None:
            raise BreastCADxError("segment first (an empty segment is added when nothing is found)")
        self.viewer.set_tool(tool, float(brush_mm))
        self.tool = tool

    def undo(self) -> None:
        if not self.viewer.undo():
            raise BreastCADxError("nothing to undo")
        self.refresh()

    def redo(self) -> None:
        if not self.viewer.redo():
            raise BreastCADxError("nothing to redo")
        self.refresh()

    def refresh(self) -> None:
        """Recompute what depends on the mask (after a stroke, undo or redo, or a job)."""
        p = self.p
        mask = self.logic.current_mask()
        self.status.segment = p["segmentID"] if mask is not None else ""
        self.status.lesion_pixels = int(mask.sum()) if mask is not None else 0
        self.status.mask_origin = self.logic.mask_origin(mask) if mask is not None else ""
        view = self.logic.result_view()
        self.status.out_of_date = bool(view and view.out_of_date)
        self.status.heatmap = p["heatmap"] is not None
        self.status.result = None if view is None else {
            "probability": view.probability, "percent": f"{100 * view.probability:.1f} %", "label": view.label,
            "birads": view.birads, "color": BIRADS_COLORS.get(view.birads, "#444444"), "note": view.note,
            "reasons": view.reasons, "flags": view.flags,
            "rows": [{"item": a, "value": b} for a, b in view.rows]}

    def heatmap_opacity(self, opacity: float) -> None:
        self.logic.show_heatmap(min(1.0, max(0.0, float(opacity))))
        self.viewer.render()

    # ---- outputs -------------------------------------------------------------------------------------
    def save(self) -> list[str]:
        folder = self.output.new_folder(self.status.case, "result")
        return self._done(self.logic.save_results(folder), "Saved")

    def export(self) -> list[str]:
        self._needs_dicom()
        folder = self.output.new_folder(self.status.case, "dicom")
        return self._done(self.logic.export_dicom(folder), "Exported")

    def send(self) -> list[str]:
        self._needs_dicom()
        if self.pacs is None:
            raise BreastCADxError("no PACS configured: start the server with --pacs-url")
        folder = self.output.new_folder(self.status.case, "sent")
        return self._done(self.logic.send_to_pacs(self.pacs, folder), "Sent to the PACS (copies kept)")

    def _needs_dicom(self) -> None:
        if not self.status.dicom:
            raise BreastCADxError("DICOM SEG/SR/SC need a DICOM image: this case is not DICOM (use Save)")

    def _done(self, paths: dict, verb: str) -> list[str]:
        names = [str(self.output.inside(p).relative_to(self.output.root)) for p in paths.values()]
        self.status.outputs = names
        self.status.message = f"{verb}: " + ", ".join(names)
        return names
