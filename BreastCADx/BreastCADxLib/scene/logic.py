"""Scene-level workflow behind the Slicer panel: segment into a new segment, classify a (corrected) segment.

Long work runs through a jobs.TaskRunner (by default a background process running worker.py; in tests the same
worker code in-process); the scene is only touched in `finish_*`, after the run has succeeded, so a cancelled or
failed run leaves it unchanged. No
ScriptedLoadableModule/qt here: it runs in Slicer and headless on slicer-core; BreastCADx.py only wires it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from BreastCADxLib import SAMPLE_IMAGE
from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET, has_segmenter
from BreastCADxLib.analysis.result import AnalysisResult
from BreastCADxLib.analysis.values import Box
from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.image import Image
from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.results.case_files import read_case
from BreastCADxLib.scene import parameters as state
from BreastCADxLib.scene.jobs import CANCELLED, DONE, JobFolder, ProcessRunner, Task, TaskRunner
from BreastCADxLib.scene.mrml import (
    add_mask_segment,
    heatmap_to_volume_node,
    image_to_volume_node,
    result_to_table_node,
    segment_to_mask,
    volume_node_to_image,
)

# one colour per suggested category: the segment after classification, the panel's and the page's result line
BIRADS_COLORS = {"0": "#6a1b9a", "2": "#2e7d32", "3": "#2e7d32", "4A": "#a08600", "4B": "#ef6c00", "4C": "#d84315",
                 "5": "#b71c1c"}
FILL_OPACITY = 0.3
RESULT_TAG = "BreastCADx.result"
AUTO_DIGEST_TAG = "BreastCADx.autoMaskDigest"  # digest of the mask as the segmenter made it
PRESENCE_TAG = "BreastCADx.presenceScore"  # the segmenter's presence score of the image it outlined
BOX_PROMPT_TAG = "BreastCADx.boxPromptDigest"  # digest of the box outline of a set without a segmenter
Progress = Callable[[float, str], None]


class JobFailed(BreastCADxError):
    """The background run failed or was cancelled; the scene was not changed."""


def hex_rgb(color: str) -> tuple[float, float, float]:
    return tuple(int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))


def mask_digest(mask: np.ndarray) -> str:
    m = np.ascontiguousarray(np.asarray(mask, bool))
    return hashlib.sha1(m.tobytes() + str(m.shape).encode()).hexdigest()


@dataclass
class Job:
    kind: str  # "segment" or "classify"
    folder: JobFolder
    task: Task
    volume_node: object
    image: Image  # the volume as sent to the worker (its grid is where results come back)
    segmentation_node: object | None = None
    segment_id: str = ""
    mask_digest: str = ""  # classify: digest of the mask sent

    def poll(self) -> str:
        return self.task.poll()

    def cancel(self) -> None:
        self.task.cancel()
        self.folder.discard()


@dataclass
class SegmentOutcome:
    segmentation_node: object
    segment_id: str
    lesion_found: bool
    low_confidence: bool = False  # the best candidate, kept because a lesion was expected
    expected: bool = False  # the user said a lesion is there (lesion expected, or a drawn box)
    box_prompt: bool = False  # a set without a segmenter: the ellipse inscribed in the user's box


    @property
    def message(self) -> str:
        """What the user is told (panel status line, page message)."""
        if self.box_prompt:
            return ("Box outline: this model set has no segmenter, so the ellipse inscribed in your box stands for "
                    "the finding. Outline the finding in the editor for its size and shape, then Classify.")
        if not self.lesion_found and self.expected:  # told a lesion is there: never "no lesion"
            return ("The segmenter sees no region anywhere in this image although a lesion was expected: draw a box "
                    "around the lesion and segment again, or paint it into the empty segment added.")
        if not self.lesion_found:
            return "No lesion found: an empty segment was added to draw into."
        if self.low_confidence:
            return "Low-confidence candidate (nothing certain was found): check it carefully, correct or redraw."
        return ("Lesion segmented: check and correct it, its margin above all (the lexicon reads shape and margin "
                "from the outline, and the segmenter draws them smoother than a reader).")


@dataclass
class ResultView:
    """The current result as every front door shows it (panel table, web page, corner text)."""

    probability: float
    label: str
    birads: str
    note: str
    reasons: list[str]  # lexicon descriptors with their evidence: why this suggestion
    flags: list[str]
    rows: list[tuple[str, str]]  # the results table (item, value)
    out_of_date: bool  # the mask was edited after this result


@dataclass
class ClassifyOutcome:
    result: AnalysisResult
    table_node: object
    heatmap_node: object | None


def segment_tag(segment, key: str) -> str:
    import vtk

    value = vtk.mutable("")
    return str(value) if segment.GetTag(key, value) else ""


def origin_of(segment, mask: np.ndarray) -> str:
    """'auto' (as the segmenter made it), 'edited' (then corrected) or 'user' (drawn by the user)."""
    auto = segment_tag(segment, AUTO_DIGEST_TAG)
    if not auto:
        return "user"
    return "auto" if mask_digest(mask) == auto else "edited"


def roi_node_to_box(roi_node, volume_node) -> Box:
    """Pixel box (x0, y0, x1, y1) covered by a markups ROI on the volume's grid."""
    import vtk

    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(ras_to_ijk)
    corners = np.array([ras_to_ijk.MultiplyPoint([x, y, z, 1.0])[:3] for x in bounds[0:2] for y in bounds[2:4]
                        for z in bounds[4:6]])
    lo, hi = np.floor(corners.min(0) + 0.5), np.floor(corners.max(0) + 0.5) + 1
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


class WorkflowLogic:
    def __init__(self, scene, runner: TaskRunner | None = None, python: str | None = None,
                 model_set: str = DEFAULT_MODEL_SET) -> None:
        """`runner`: how worker tasks run (default: a background process with `python`, else PythonSlicer);
        `model_set`: the models the worker uses (analysis.registry.MODEL_SETS)."""
        self.scene = scene
        self.runner = runner or ProcessRunner(python)
        self._model_set = model_set

    @property
    def model_set(self) -> str:
        """The panel's model set (a folder chosen in it) or the one this logic was made with."""
        return state.peek_value(self.scene, "modelSet") or self._model_set

    @property
    def parameters(self):
        return state.parameter_node(self.scene)

    @property
    def box_needed(self) -> bool:
        """The set has no segmenter: the ROI box is the finding (a set it cannot verify asks for nothing here; the
        worker refuses it, saying why)."""
        try:
            return not has_segmenter(self.model_set)
        except BreastCADxError:
            return False

    @property
    def roi_label(self) -> str:
        return "ROI box (needed: no segmenter in this model set):" if self.box_needed else "ROI box (optional):"

    # ---- input ---------------------------------------------------------------------------------------
    def load_image_file(self, path: str | Path, name: str | None = None):
        """Load any supported file/series with the library loader into a new volume node (source kept)."""
        image = load_image(path)
        node = image_to_volume_node(image, self.scene, name or Path(path).stem)
        node.SetAttribute("BreastCADx.sourceFiles", json.dumps(list(image.source_files)))
        state.set_values(self.parameters, inputVolume=node)
        return node

    def load_sample(self):
        """The bundled US sample (DICOM, so SEG/SR/SC export works on it)."""
        return self.load_image_file(SAMPLE_IMAGE, "BreastCADx US sample")

    def load_pacs_series(self, pacs, study_uid: str, dest: str | Path, series_uid: str | None = None):
        """Retrieve a study's image series over DICOMweb into `dest` (kept: export references its files), load it."""
        series = pacs.image_series(study_uid, series_uid)
        folder = pacs.retrieve_series(study_uid, series, Path(dest))
        files = sorted(folder.glob("*.dcm"))
        return self.load_image_file(files[0] if len(files) == 1 else folder, f"PACS {study_uid[-12:]}")

    # ---- ROI ------------------------------------------------------------------------------------------
    def set_roi_box(self, volume_node, box: Box):
        """The module's ROI markup (created once, then moved) covering pixel box (x0, y0, x1, y1)."""
        import vtk

        x0, y0, x1, y1 = (int(v) for v in box)
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise BreastCADxError(f"the ROI box {box} is too small: draw it around the lesion")
        ijk_to_ras = vtk.vtkMatrix4x4()
        volume_node.GetIJKToRASMatrix(ijk_to_ras)
        corners = np.array([ijk_to_ras.MultiplyPoint([x, y, 0.0, 1.0])[:3]  # centres of the corner pixels,
                            for x in (x0, x1 - 1) for y in (y0, y1 - 1)])  # as roi_node_to_box reads them
        roi = state.get_value(self.parameters, "roi") or self.new_roi()
        lo, hi = corners.min(0), corners.max(0)
        roi.SetXYZ(*((lo + hi) / 2))
        roi.SetRadiusXYZ(*np.maximum((hi - lo) / 2, 0.5))
        state.set_values(self.parameters, roi=roi)
        return roi

    def new_roi(self):
        """An empty ROI markup as the module's ROI (replacing any earlier one), to be placed in a view."""
        self.clear_roi()
        roi = self.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "BreastCADx ROI")
        roi.CreateDefaultDisplayNodes()
        display = roi.GetDisplayNode()
        display.SetFillOpacity(0.08)  # the lesion stays visible inside the box
        display.SetPropertiesLabelVisibility(False)
        state.set_values(self.parameters, roi=roi)
        return roi

    def roi_box(self, volume_node=None) -> Box | None:
        """The ROI markup as a pixel box on the volume (clipped to it), or None without one."""
        p = state.values(self.parameters)
        volume_node = volume_node or p["inputVolume"]
        if p["roi"] is None or volume_node is None or p["roi"].GetNumberOfControlPoints() == 0:
            return None  # none, or still being placed
        x0, y0, x1, y1 = roi_node_to_box(p["roi"], volume_node)
        w, h = volume_node.GetImageData().GetDimensions()[:2]
        box = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            raise BreastCADxError("the ROI box lies outside the image: move it onto the lesion")
        return box

    def clear_roi(self) -> None:
        roi = state.get_value(self.parameters, "roi")
        if roi is not None:
            self.scene.RemoveNode(roi)
        state.set_values(self.parameters, roi=None)

    # ---- background jobs -----------------------------------------------------------------------------
    def _new_job(self, kind: str, volume_node, mask: np.ndarray | None, args: list[str],
                 progress: Progress | None) -> Job:
        image = volume_node_to_image(volume_node)
        folder = JobFolder.create(kind)
        try:
            folder.write_inputs(image, mask)
            task = self.runner.start(kind, folder, args, progress)
        except BreastCADxError:
            folder.discard()
            raise
        return Job(kind, folder, task, volume_node, image)

    def _site_args(self) -> list[str]:
        """The panel's site profile for the worker (it verifies it against the model set)."""
        site = state.peek_value(self.scene, "siteProfile")
        return ["--site", site] if site else []

    def start_segment(self, volume_node, roi: Box | None = None, device: str = "auto",
                      progress: Progress | None = None, expect_lesion: bool = False) -> Job:
        if roi is None and not has_segmenter(self.model_set):  # refused before a job starts (a bad set too)
            raise BreastCADxError(f"the model set '{self.model_set}' has no segmenter: draw an ROI box around the "
                                  "finding, then Segment (or paint its outline into a segment and Classify)")
        args = ["--device", device, "--model-set", self.model_set, *self._site_args()]
        args += ["--roi", ",".join(map(str, roi))] if roi is not None else []
        args += ["--expect-lesion"] if expect_lesion else []
        return self._new_job("segment", volume_node, None, args, progress)

    def start_classify(self, volume_node, segmentation_node, segment_id: str, device: str = "auto",
                       progress: Progress | None = None) -> Job:
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        if segment is None:
            raise BreastCADxError(f"segment '{segment_id}' no longer exists")
        mask = segment_to_mask(segmentation_node, segment_id, volume_node)
        if not mask.any():
            raise BreastCADxError("the lesion segment is empty: draw or correct it before classifying")
        origin = origin_of(segment, mask)
        args = ["--device", device, "--model-set", self.model_set, "--mask-origin", origin, *self._site_args()]
        presence = segment_tag(segment, PRESENCE_TAG)
        args += ["--presence-score", presence] if presence and origin == "auto" else []
        args += ["--box-prompt"] if segment_tag(segment, BOX_PROMPT_TAG) == mask_digest(mask) else []
        reader = state.peek_value(self.scene, "readerBirads")
        args += ["--birads", reader] if reader else []
        job = self._new_job("classify", volume_node, mask, args, progress)
        job.segmentation_node, job.segment_id, job.mask_digest = segmentation_node, segment_id, mask_digest(mask)
        return job

    @staticmethod
    def wait(job: Job, should_cancel: Callable[[], bool] | None = None, timeout: float | None = None) -> str:
        return job.task.wait(timeout=timeout, should_cancel=should_cancel)

    def _check_done(self, job: Job) -> JobFolder:
        status = job.poll()
        if status != DONE:
            job.folder.discard()
            reason = "cancelled" if status == CANCELLED else (job.task.error or status)
            reason = reason.replace(str(job.folder.image), f"volume '{job.volume_node.GetName()}'")  # the user's name
            raise JobFailed(f"{job.kind} did not complete: {reason}")
        return job.folder

    def finish_segment(self, job: Job, segmentation_node=None) -> SegmentOutcome:
        """Add the result as a NEW segment (never replaces one); only now is the scene changed."""
        folder = self._check_done(job)
        try:
            mask = load_mask(folder.out_mask, job.image)
            info = json.loads(folder.segment_info.read_text())
            low_confidence = bool(info["low_confidence"])
        finally:
            folder.discard()
        if segmentation_node is None:
            segmentation_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "BreastCADx segmentation")
            segmentation_node.CreateDefaultDisplayNodes()
            segmentation_node.GetDisplayNode().SetOpacity2DFill(FILL_OPACITY)  # the echo texture stays visible
        sid = add_mask_segment(mask, job.volume_node, segmentation_node)
        segment = segmentation_node.GetSegmentation().GetSegment(sid)
        box_prompt = bool(info.get("box_prompt"))  # drawn from the user's box: the user's outline, not the model's
        segment.SetTag(BOX_PROMPT_TAG if box_prompt else AUTO_DIGEST_TAG, mask_digest(mask))
        if info.get("presence_score") is not None:
            segment.SetTag(PRESENCE_TAG, repr(float(info["presence_score"])))  # round-trips exactly
        state.set_values(self.parameters, inputVolume=job.volume_node, segmentation=segmentation_node,
                         segmentID=sid)
        return SegmentOutcome(segmentation_node, sid, bool(mask.any()), low_confidence, bool(info.get("expected")),
                              box_prompt)

    def finish_classify(self, job: Job) -> ClassifyOutcome:
        """Results into new table / heatmap nodes; segment colour and name follow the result."""
        folder = self._check_done(job)
        try:
            result = read_case(folder.out, job.image)
        finally:
            folder.discard()
        result.source = job.volume_node.GetName()
        table = result_to_table_node(result, self.scene)
        heat = result.heatmap
        # an all-zero Grad-CAM (no evidence for malignancy) is not shown: it would tint the whole image
        shown = heat is not None and float(np.max(heat)) > 0
        heat_node = heatmap_to_volume_node(heat, job.image, self.scene) if shown else None
        segment = job.segmentation_node.GetSegmentation().GetSegment(job.segment_id)
        p = result.probability
        if segment is not None and p is not None:
            label, birads = result.predicted_label, result.birads_suggestion
            segment.SetColor(*hex_rgb(BIRADS_COLORS.get(birads or "", "#b71c1c")))
            segment.SetTag(RESULT_TAG, f"{p:.4f};{birads}")
            base = segment.GetName().split(" [")[0]
            segment.SetName(f"{base} [{label} {100 * p:.0f} %, BI-RADS {birads} suggested]")
        state.set_values(self.parameters, inputVolume=job.volume_node, segmentation=job.segmentation_node,
                         segmentID=job.segment_id, resultTable=table, heatmap=heat_node,
                         probability=float(p if p is not None else -1.0),
                         biradsSuggestion=result.birads_suggestion or "",
                         resultMaskDigest=job.mask_digest, resultJSON=json.dumps(result.to_json()))
        return ClassifyOutcome(result, table, heat_node)

    # ---- blocking conveniences (scripts, tests, in-Slicer self-test) ---------------------------------
    def segment(self, volume_node, segmentation_node=None, roi: Box | None = None, device: str = "auto",
                progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None,
                expect_lesion: bool = False) -> SegmentOutcome:
        job = self.start_segment(volume_node, roi, device, progress, expect_lesion)
        self.wait(job, should_cancel)
        return self.finish_segment(job, segmentation_node)

    def classify(self, volume_node, segmentation_node, segment_id: str, device: str = "auto",
                 progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None
                 ) -> ClassifyOutcome:
        job = self.start_classify(volume_node, segmentation_node, segment_id, device, progress)
        self.wait(job, should_cancel)
        return self.finish_classify(job)

    # ---- state after edits ---------------------------------------------------------------------------
    def current_mask(self):
        p = state.values(self.parameters)
        if p["segmentation"] is None or p["inputVolume"] is None or not p["segmentID"]:
            return None
        if p["segmentation"].GetSegmentation().GetSegment(p["segmentID"]) is None:
            return None
        return segment_to_mask(p["segmentation"], p["segmentID"], p["inputVolume"])

    def results_out_of_date(self, mask: np.ndarray | None = None) -> bool:
        """True when the segment was edited (or removed) after the current result was computed.
        `mask`: the current mask when the caller has it already (exporting a segment is not free)."""
        digest = state.get_value(self.parameters, "resultMaskDigest")
        if not digest:
            return False
        mask = self.current_mask() if mask is None else mask
        return mask is None or mask_digest(mask) != digest

    def mask_origin(self, mask: np.ndarray | None = None) -> str:
        """'auto' (as segmented), 'edited' (segmented, then corrected) or 'user' (drawn by the user)."""
        p = state.values(self.parameters)
        segment = p["segmentation"].GetSegmentation().GetSegment(p["segmentID"])
        if segment is None:
            return "user"
        return origin_of(segment, self.current_mask() if mask is None else mask)

    # ---- display and export --------------------------------------------------------------------------
    def show_heatmap(self, opacity: float | None = None) -> int:
        """Heatmap as foreground over the input in every slice view; returns the number of views set."""
        p = state.values(self.parameters)
        if opacity is not None:
            state.set_values(self.parameters, heatmapOpacity=float(opacity))
        opacity = state.get_value(self.parameters, "heatmapOpacity")
        n = 0
        for k in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            comp = self.scene.GetNthNodeByClass(k, "vtkMRMLSliceCompositeNode")
            if p["inputVolume"] is not None:
                comp.SetBackgroundVolumeID(p["inputVolume"].GetID())
            comp.SetForegroundVolumeID(p["heatmap"].GetID() if p["heatmap"] is not None else None)
            comp.SetForegroundOpacity(float(opacity))
            n += 1
        return n

    def summary_text(self, out_of_date: bool | None = None) -> str:
        """One line for the panel and the slice-view corner (`out_of_date` when the caller knows it)."""
        p = state.values(self.parameters)
        if p["probability"] < 0:
            return ""
        stale = self.results_out_of_date() if out_of_date is None else out_of_date
        stale = "  (OUT OF DATE: mask edited)" if stale else ""
        flags = json.loads(p["resultJSON"]).get("flags", []) if p["resultJSON"] else []
        flagged = f" FLAG: {flags[0]['code']}" + (f" (+{len(flags) - 1} more)" if len(flags) > 1 else "") + \
            "." if flags else ""
        return (f"Malignancy probability {100 * p['probability']:.1f} %; BI-RADS {p['biradsSuggestion']} "
                f"(algorithm suggestion){stale}.{flagged} Research use only.")

    def result_view(self) -> ResultView | None:
        """The current result for display, or None before the first classification."""
        p = state.values(self.parameters)
        if p["probability"] < 0 or not p["resultJSON"]:
            return None
        d = json.loads(p["resultJSON"])
        table = p["resultTable"]
        rows = [(table.GetCellText(r, 0), table.GetCellText(r, 1)) for r in range(table.GetNumberOfRows())] \
            if table is not None else []
        reasons = [f"{i['feature']}: {i['category']} ({i['evidence']}; {i['confidence']} confidence)"
                   for i in d.get("lexicon", [])]
        return ResultView(float(p["probability"]), str(d.get("predicted_label", "")), p["biradsSuggestion"],
                          str(d.get("birads_note", "")), reasons, [f["text"] for f in d.get("flags", [])], rows,
                          self.results_out_of_date())

    def current_result(self) -> tuple[AnalysisResult, Image]:
        """The classified result with the current mask and heatmap, and the input image; refuses when there is
        none or the mask was edited since (the outputs would not match it)."""
        p = state.values(self.parameters)
        if p["resultTable"] is None or not p["resultJSON"]:
            raise BreastCADxError("there is no result yet: classify first")
        mask = self.current_mask()  # exported once, used for every check and output
        if self.results_out_of_date(mask):
            raise BreastCADxError("the mask was edited after the last classification: classify again first")
        image = volume_node_to_image(p["inputVolume"])
        heat = volume_node_to_image(p["heatmap"]).array if p["heatmap"] is not None else None
        return AnalysisResult.from_json(json.loads(p["resultJSON"]), mask=mask, heatmap=heat), image

    def save_results(self, folder: str | Path) -> dict[str, Path]:
        """The case files (mask.nrrd, heatmap.nrrd, overlay.png, result.json) as every front door writes them;
        refuses to overwrite an earlier result."""
        from BreastCADxLib.results.case_files import CASE_FILES, write_case

        folder = Path(folder)
        for name in CASE_FILES:
            if (folder / name).exists():
                raise BreastCADxError("will not overwrite an existing file", folder / name)
        result, image = self.current_result()
        return write_case(result, image, folder).paths

    def export_dicom(self, folder: str | Path) -> dict[str, Path]:
        """DICOM SEG + SR + overlay Secondary Capture of the current segment and result; DICOM input only."""
        from BreastCADxLib.results.case_files import write_case

        result, image = self.current_result()
        return {k.removeprefix("dicom_"): v for k, v in write_case(result, image, None, Path(folder)).paths.items()}

    def send_to_pacs(self, pacs, folder: str | Path) -> dict[str, Path]:
        """Export SEG + SR + SC into `folder`, then STOW them into the source study on the PACS."""
        from BreastCADxLib.io.dicom import read_datasets

        paths = self.export_dicom(folder)
        pacs.store(read_datasets(list(paths.values())))
        return paths
