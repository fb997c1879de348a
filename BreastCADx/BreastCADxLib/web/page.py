"""The trame page: one real Slicer slice view (trame-slicer, rendered off-screen through EGL) and the workflow panel.

Thin by design: every button calls a ReviewSession action (session.py) through `act`, which turns failures into a
message on the page; the page state is `status` (session.Status as a dict) plus a few widget values.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET
from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.web.access import DataRoots, OutputFolder, access_token, refusal, served_address
from BreastCADxLib.web.session import ReviewSession, guard

log = logging.getLogger("breastcadx.serve")
POLL_S = 0.25
EDIT_SETTLE_S = 0.3  # after a paint stroke: recompute the mask once the stroke has landed
IDLE_TIMEOUT_S = 0  # wslink stops an idle server after --timeout seconds; a reading-room server stays up


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    data: list[Path] = field(default_factory=list)
    out: Path = Path("breastcadx-serve")
    device: str = "auto"
    pacs: object | None = None  # io.dicomweb.Pacs
    model_set: str = DEFAULT_MODEL_SET
    open_browser: bool = False
    site: Path | None = None  # a site profile (breastcadx adapt), verified at start


class SlicerViewer:
    """session.Viewer on a trame-slicer SlicerApp: the axial slice view and its segment editor."""

    def __init__(self, app) -> None:
        from undo_stack import UndoStack

        self.app = app
        self.undo_stack = UndoStack(undo_limit=20)
        app.segmentation_editor.set_undo_stack(self.undo_stack)

    def show(self, volume_node) -> None:
        dm = self.app.display_manager
        dm.show_volume_in_slice_background(volume_node)
        dm.show_volume_in_slice_foreground(None)
        dm.reset_views()
        self.render()

    def edit(self, segmentation_node, volume_node, segment_id: str) -> None:
        editor = self.app.segmentation_editor
        editor.set_active_segmentation(segmentation_node, volume_node)
        editor.set_surface_representation_enabled(False)
        editor.set_active_segment_id(segment_id)
        self.render()

    def set_tool(self, tool: str, brush_mm: float) -> None:
        from trame_slicer.segmentation import BrushDiameterMode, SegmentationEffectErase, SegmentationEffectPaint

        editor = self.app.segmentation_editor
        if tool == "none" or editor.active_segmentation is None:
            editor.deactivate_effect()
            return
        effect = editor.set_active_effect_type(SegmentationEffectPaint if tool == "paint" else SegmentationEffectErase)
        effect.set_brush_diameter(brush_mm, BrushDiameterMode.Absolute)

    def place(self, markup) -> None:
        self.set_tool("none", 0)
        self.app.markups_logic.place_node(markup)

    def undo(self) -> bool:
        return self._step(self.undo_stack.can_undo, self.undo_stack.undo)

    def redo(self) -> bool:
        return self._step(self.undo_stack.can_redo, self.undo_stack.redo)

    def _step(self, can, do) -> bool:
        if not can():
            return False
        do()
        self.render()
        return True

    def render(self) -> None:
        for view in self.app.view_manager.get_slice_views():
            view.schedule_render()


class BreastCADxPage:
    def __init__(self, server, options: ServeOptions) -> None:
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        from BreastCADxLib.scene.logic import WorkflowLogic

        self.server, self.options = server, options
        self.state, self.ctrl = server.state, server.controller
        self.slicer_app = SlicerApp()
        register_rca_factories(self.slicer_app.view_manager, server)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, server)
        axial = Layout(LayoutDirection.Vertical, [ViewLayoutDefinition.axial_view()])
        self.layout_manager.register_layout("Axial", axial)
        self.layout_manager.set_layout("Axial")
        self.viewer = SlicerViewer(self.slicer_app)
        self.roots = DataRoots(options.data)
        self.session = ReviewSession(WorkflowLogic(self.slicer_app.scene, model_set=options.model_set), self.viewer,
                                     self.roots,
                                     OutputFolder(options.out), pacs=options.pacs, device=options.device)
        if options.site is not None:
            from BreastCADxLib.scene import parameters as params

            params.set_values(self.session.logic.parameters, siteProfile=str(options.site))
        self._watch_task: asyncio.Task | None = None
        self._roi_shown = ""
        self.slicer_app.segmentation_editor.segmentation_modified.connect(self._on_edit)
        self.session.on_roi_changed = self._on_roi
        found = self.roots.scan()  # one walk of the served folders
        self.state.update({
            "status": self.session.status.to_state(), "cases": [{"title": e.label, "value": e.ref}
                                                                 for e in found.cases],
            "case_ref": None, "study_uid": "", "roi_text": "", "tool": "none", "brush_mm": 15.0,
            "heat_opacity": 0.5, "pacs_enabled": options.pacs is not None, "trame__title": "BreastCADx",
            "reader_birads": "", "site": options.site.name if options.site else "", "site_ref": None,
            "site_profiles": [{"title": e.label, "value": e.ref} for e in found.site_profiles],
            "model_set_ref": None, "model_set": "",
            "model_sets": [{"title": e.label, "value": e.ref} for e in found.model_sets],
        })
        self._build_ui()

    # ---- actions -------------------------------------------------------------------------------------
    def push(self) -> None:
        with self.state:
            self.state.status = self.session.status.to_state()
            self.state.tool = self.session.tool

    def act(self, what: str, action, *args) -> None:
        guard(lambda: action(*args), self.session.status, what)
        self.push()

    def open_case(self) -> None:
        if not self.state.case_ref:
            self.session.status.error = "Open case: choose a case from the list first"
            return self.push()
        self.act("Open case", self.session.open_file, self.state.case_ref)

    def open_pacs(self) -> None:
        self.act("Open from PACS", self.session.open_pacs, self.state.study_uid or "")

    def set_roi(self) -> None:
        def parse() -> None:
            try:
                box = [int(float(v)) for v in str(self.state.roi_text).replace(",", " ").split()]
            except (ValueError, OverflowError):  # not numbers, or infinite
                box = []
            if len(box) != 4:
                raise BreastCADxError("type the ROI box as four pixel numbers: x0 y0 x1 y1")
            self.session.set_roi(box)

        self.act("ROI box", parse)

    def action(self, what: str, fn, *args, watch: bool = False):
        """A button's handler: the session action through `act`; `watch`: it starts a background job."""
        def handler(*_) -> None:
            self.act(what, fn, *args)
            if watch:
                self._watch()
        return handler

    def set_tool(self, tool: str) -> None:
        self.act("Edit", self.session.set_tool, tool, float(self.state.brush_mm))

    def on_opacity(self, heat_opacity, **_) -> None:
        if self.session.status.result is not None:
            self.act("Heatmap", self.session.heatmap_opacity, heat_opacity)

    def on_site(self, site_ref, **_) -> None:
        def choose() -> None:
            self.state.site = self.session.set_site_profile(site_ref)
            self.state.model_set = self.session.model_set_label()  # a profile's own fine-tuned set comes with it
            chosen = self.session.model_set_ref()
            if chosen is not None:  # the selector shows it
                self.state.model_set_ref = chosen

        self.act("Site profile", choose)

    def on_model_set(self, model_set_ref, **_) -> None:
        def choose() -> None:
            label = self.session.set_model_set(model_set_ref)
            self.state.model_set = label if model_set_ref else ""  # the title names a chosen set only
            if not self.session.site_profile():  # let go: it was made for another set
                self.state.site, self.state.site_ref = "", None

        self.act("Model set", choose)

    def on_reader(self, reader_birads, **_) -> None:
        self.act("Radiologist's BI-RADS", self.session.set_reader_birads, reader_birads)

    def on_brush(self, brush_mm, **_) -> None:
        if self.session.tool != "none":
            self.act("Edit", self.session.set_tool, self.session.tool, float(brush_mm))

    def _watch(self) -> None:
        if self.session.job is None or (self._watch_task and not self._watch_task.done()):
            return

        async def run() -> None:
            while guard(self.session.poll, self.session.status, self.session.status.busy.capitalize() or "Job"):
                self.push()
                await asyncio.sleep(POLL_S)
            self.push()

        self._watch_task = asyncio.get_event_loop().create_task(run())

    def _on_roi(self) -> None:
        """The box was drawn or dragged in the view: show its pixels, once it settles."""
        def show() -> None:
            self.act("ROI box", self.session.read_roi)
            box = " ".join(map(str, self.session.status.roi))
            if box != self._roi_shown:  # only a new box replaces what the user may be typing
                self._roi_shown = box
                with self.state:
                    self.state.roi_text = box

        self._settle("_roi_task", show)

    def _settle(self, name: str, then) -> None:
        task = getattr(self, name, None)
        if task is not None and not task.done():
            return

        async def later() -> None:
            await asyncio.sleep(EDIT_SETTLE_S)
            then()

        try:
            setattr(self, name, asyncio.get_event_loop().create_task(later()))
        except RuntimeError:  # no running loop (headless use): at once
            then()

    def _on_edit(self, *_) -> None:
        """A stroke, undo or redo changed the segment: recompute pixels and the out-of-date flag, once."""
        self._settle("_edit_task", lambda: self.act("Edit", self.session.refresh))

    # ---- UI ------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        from trame.widgets import html
        from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
        from trame_vuetify.widgets import vuetify3 as v

        self.state.change("heat_opacity")(self.on_opacity)
        self.state.change("brush_mm")(self.on_brush)
        self.state.change("reader_birads")(self.on_reader)
        self.state.change("site_ref")(self.on_site)
        self.state.change("model_set_ref")(self.on_model_set)
        with SinglePageWithDrawerLayout(self.server, full_height=True) as ui:
            self.ui = ui
            ui.title.set_text("BreastCADx")
            with ui.toolbar:
                v.VSpacer()
                html.Span(f"models: {self.options.model_set}", classes="text-caption mr-4", id="model-set")
                html.Span("Research use only: not for diagnosis", classes="text-caption mr-4", id="ruo")
            with ui.drawer as drawer:
                drawer.width = 420
                with html.Div(classes="pa-3 d-flex flex-column ga-2", style="font-size: 0.9rem"):
                    self._panel(v, html)
            with ui.content:
                with html.Div(style="position: relative; width: 100%; height: calc(100vh - 64px);", id="view"):
                    self.layout_manager.initialize_layout_grid(ui)

    def _panel(self, v, html) -> None:
        a, ses = self.action, self.session
        v.VAlert(v_if="status.error", type="error", density="compact", text=("status.error",), id="error")
        html.Div("{{ status.message }}", v_if="status.message", id="message", classes="text-body-2")
        v.VProgressLinear(v_if="status.busy", model_value=("status.progress * 100",), height=8, color="primary",
                          id="progress")
        html.Div("1. Case {{ status.case ? ': ' + status.case : '' }}", classes="text-subtitle-2", id="case")
        with html.Div(classes="d-flex ga-2"):
            v.VBtn("Sample", click=a("Open sample", ses.open_sample), size="small", id="open-sample",
                   disabled=("!!status.busy",))
            v.VAutocomplete(v_model=("case_ref",), items=("cases",), label="case from the served folders (type)",
                            density="compact", hide_details=True, id="case-select")
            v.VBtn("Open", click=self.open_case, size="small", id="open-case", disabled=("!!status.busy",))
        with html.Div(classes="d-flex ga-2", v_if="pacs_enabled"):
            v.VTextField(v_model=("study_uid",), label="PACS study UID", density="compact", hide_details=True,
                         id="study-uid")
            v.VBtn("Retrieve", click=self.open_pacs, size="small", id="open-pacs", disabled=("!!status.busy",))
        html.Div("2. ROI box (optional): Draw it in the image (two corners) or type x0 y0 x1 y1",
                 classes="text-subtitle-2")
        with html.Div(classes="d-flex ga-2"):
            v.VTextField(v_model=("roi_text",), density="compact", hide_details=True, id="roi-text",
                         placeholder=("status.roi.length ? status.roi.join(' ') : 'whole image'",))
            v.VBtn("Draw", click=a("ROI box", ses.draw_roi), size="small", id="roi-draw", disabled=("!status.case",))
            v.VBtn("Set", click=self.set_roi, size="small", id="roi-set")
            v.VBtn("Clear", click=a("ROI box", ses.clear_roi), size="small", id="roi-clear")
        html.Div("3. Segment", classes="text-subtitle-2")
        with html.Div(classes="d-flex ga-2"):
            v.VBtn("Segment", click=a("Segment", ses.start_segment, watch=True), color="primary", size="small",
                   id="segment",
                   disabled=("!status.case || !!status.busy",))
            v.VBtn("Cancel", click=a("Cancel", ses.cancel), size="small", id="cancel", disabled=("!status.busy",))
        html.Div("4. Correct: {{ status.lesion_pixels }} px ({{ status.mask_origin || 'none' }})",
                 classes="text-subtitle-2", id="lesion")
        with html.Div(classes="d-flex ga-2 align-center"):
            with v.VBtnToggle(v_model=("tool",), density="compact", mandatory=True):
                v.VBtn("View", value="none", click=(self.set_tool, "['none']"), size="small", id="tool-none")
                v.VBtn("Paint", value="paint", click=(self.set_tool, "['paint']"), size="small", id="tool-paint")
                v.VBtn("Erase", value="erase", click=(self.set_tool, "['erase']"), size="small", id="tool-erase")
            v.VBtn("Undo", click=a("Undo", ses.undo), size="small", id="undo")
            v.VBtn("Redo", click=a("Redo", ses.redo), size="small", id="redo")
        v.VSlider(v_model=("brush_mm",), min=1, max=30, step=1, label="brush (mm; pixels if no spacing)",
                  density="compact", hide_details=True, thumb_label=True)
        html.Div("5. Classify {{ model_set ? '(model set ' + model_set + ')' : '' }} "
                 "{{ site ? '(site profile ' + site + ')' : '' }}", classes="text-subtitle-2",
                 id="classify-title")
        v.VSelect(v_model=("model_set_ref",), items=("model_sets",), label="model set (default: the shipped one)",
                  density="compact", hide_details=True, clearable=True, id="model-set", v_if="model_sets.length")
        v.VSelect(v_model=("site_ref",), items=("site_profiles",), label="site profile (from the served folders)",
                  density="compact", hide_details=True, clearable=True, id="site-profile",
                  v_if="site_profiles.length")
        v.VSelect(v_model=("reader_birads",), items=("['', '1', '2', '3', '4', '4A', '4B', '4C', '5']",),
                  label="radiologist's BI-RADS (optional)", density="compact", hide_details=True, id="reader-birads")
        v.VBtn("Classify", click=a("Classify", ses.start_classify, watch=True), color="primary", size="small",
               id="classify",
               disabled=("!status.segment || !!status.busy",))
        with html.Div(v_if="status.result", id="result"):
            v.VAlert("Out of date: the mask was edited after this result. Classify again.", v_if="status.out_of_date",
                     type="warning", density="compact", id="out-of-date")
            html.Div("Malignancy probability <b id='probability'>{{ status.result.percent }}</b>; "
                     "BI-RADS <b id='birads'>{{ status.result.birads }}</b> suggested "
                     "({{ status.result.label }})", classes="text-body-1 my-1",
                     style=("{color: status.result.color}",))
            html.Div("{{ status.result.note }}", classes="text-caption")
            html.Div("Reasons", classes="text-subtitle-2 mt-1")
            with html.Ul(classes="text-caption ml-4", id="reasons"):
                html.Li("{{ r }}", v_for="r in status.result.reasons")
            with html.Div(v_if="status.result.flags.length", id="flags"):
                v.VChip("{{ f }}", v_for="f in status.result.flags", color="warning", size="small",
                        classes="ma-1")
            v.VSlider(v_model=("heat_opacity",), min=0, max=1, step=0.05, label="heatmap", density="compact",
                      hide_details=True, id="heat-opacity", v_if="status.heatmap")
            html.Div("No heatmap: Grad-CAM found no image evidence for malignancy.", v_else=True,
                     classes="text-caption", id="no-heatmap")
            v.VDataTable(items=("status.result.rows",), headers=("[{title: 'Item', key: 'item'}, "
                                                                 "{title: 'Value', key: 'value'}]",),
                         density="compact", items_per_page=8, id="results-table")
        html.Div(f"6. Save and export (output folder {ses.output.root.name})",
                 classes="text-subtitle-2")
        with html.Div(classes="d-flex ga-2"):
            v.VBtn("Save", click=a("Save", ses.save), size="small", id="save", disabled=("!status.result",))
            v.VBtn("Export SEG/SR/SC", click=a("Export DICOM", ses.export), size="small", id="export",
                   disabled=("!status.result || !status.dicom",))
            v.VBtn("Send to PACS", click=a("Send to PACS", ses.send), size="small", id="send", v_if="pacs_enabled",
                   disabled=("!status.result || !status.dicom",))
        with html.Ul(classes="text-caption ml-4", id="outputs"):
            html.Li("{{ o }}", v_for="o in status.outputs")


def protect(web_server, host: str, port: int) -> None:
    """Every HTTP request and WebSocket upgrade checks Host and Origin against the served address (403 else)."""
    from aiohttp import web

    @web.middleware
    async def same_origin(request, handler):
        reason = refusal(host, port, request.headers.get("Host"), request.headers.get("Origin"))
        if reason:
            return web.Response(status=403, text=f"refused: {reason}\n")
        return await handler(request)

    web_server.app.middlewares.append(same_origin)


class _OneLine(logging.Filter):
    """aiohttp logs a malformed or oversized request (a 70 kB URL) with a full traceback; one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        e = record.exc_info[1] if record.exc_info else None
        if isinstance(e, HttpProcessingError):
            record.msg, record.args, record.exc_info, record.exc_text = (
                f"bad request refused ({e.__class__.__name__}: {str(e).splitlines()[0][:120]})", None, None, None)
        return True


def quiet_bad_requests() -> None:
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access"):
        logging.getLogger(name).addFilter(_OneLine())


def serve(options: ServeOptions) -> int:
    """Start the server and block; prints the address to open."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # off-screen, no X, no GPU
    token = access_token(options.host)
    from trame.app import get_server
    from trame_slicer import module as trame_slicer_module

    server = get_server("breastcadx", client_type="vue3")
    server.enable_module(trame_slicer_module)
    page = BreastCADxPage(server, options)
    server.controller.on_server_bind.add(lambda web_server: protect(web_server, options.host, options.port))
    quiet_bad_requests()
    address = f"http://{served_address(options.host, options.port)}/?secret={token}"
    print(f"BreastCADx is serving {len(page.roots.roots)} folder(s); writing to {page.session.output.root}",
          flush=True)
    print(f"Open {address}", flush=True)
    argv = sys.argv
    sys.argv = [argv[0], f"--authKey={token}"]  # trame parses sys.argv; "=" keeps a token starting "-" a value
    try:
        server.start(host=options.host, port=options.port, open_browser=options.open_browser,
                     timeout=IDLE_TIMEOUT_S, show_connection_info=False, disable_logging=True)
    finally:
        sys.argv = argv
    return 0
