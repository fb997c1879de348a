"""Background worker: the Slicer panel runs segment / classify here, in a separate process.

    python -m BreastCADxLib.scene.worker segment  --job DIR [--roi x0,y0,x1,y1] [--device auto] [--expect-lesion]
    python -m BreastCADxLib.scene.worker classify --job DIR [--device auto] [--mask-origin user|auto|edited]

DIR is a jobs.JobFolder (its inputs and out/ files are named there). Standard output carries one JSON object per
line: {"progress": f, "message": m}, then {"done": true} or {"error": "..."} (exit 2). `execute` is the same run
with the events sent to a callback (jobs.InProcessRunner).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET
from BreastCADxLib.errors import OVERRIDE_HINT, PANEL_OVERRIDE_HINT, BreastCADxError
from BreastCADxLib.scene.jobs import CANCELLED, DONE, FAILED, JobFolder, Progress, Task

EXIT_ERROR = 2
Emit = Callable[..., None]


def print_event(**event) -> None:
    print(json.dumps(event), flush=True)


def _site(folder: str | None, model_set: str):
    from BreastCADxLib.analysis.site import load_site_profile

    return load_site_profile(folder, model_set) if folder else None


def run_segment(job: JobFolder, roi: str | None, device: str, expect_lesion: bool, progress, model_set: str,
                site: str | None = None) -> None:
    from BreastCADxLib.analysis.guard import check_input
    from BreastCADxLib.analysis.pipeline import box_prompt_outline
    from BreastCADxLib.analysis.registry import has_segmenter
    from BreastCADxLib.analysis.segmentation import get_segmenter, parse_roi
    from BreastCADxLib.io import load_image, save_mask

    image = load_image(job.image)
    check_input(image, model_set, device=device)  # the panel offers no override: refused images stay refused
    profile = _site(site, model_set)
    job.out.mkdir(exist_ok=True)
    if not has_segmenter(model_set):  # the user's box is the finding, as `analyze --roi` takes it
        save_mask(box_prompt_outline(image, parse_roi(roi) if roi else None, model_set), image, job.out_mask)
        job.segment_info.write_text(json.dumps({"low_confidence": False, "presence_score": None, "expected": True,
                                                "box_prompt": True}))
        progress(1.0, "the ellipse inscribed in the box (the model set has no segmenter)")
        return
    progress(0.1, "loading the segmentation model")
    segmenter = get_segmenter(device=device, model_set=model_set)
    progress(0.3, f"segmenting on {segmenter.device}")
    result = segmenter.segment(image, roi=parse_roi(roi) if roi else None,
                               progress=lambda f, m: progress(0.3 + 0.65 * f, m), expect_lesion=expect_lesion,
                               presence=profile.presence if profile else None)
    save_mask(result.mask, image, job.out_mask)
    job.segment_info.write_text(json.dumps({"low_confidence": result.low_confidence,
                                            "presence_score": result.presence_score,
                                            "expected": result.expected}))
    progress(1.0, result.outcome)


def run_classify(job: JobFolder, device: str, progress, model_set: str, mask_origin: str, site: str | None = None,
                 reader_birads: str | None = None, presence_score: float | None = None,
                 box_prompt: bool = False) -> None:
    from BreastCADxLib.analysis.pipeline import analyze
    from BreastCADxLib.io import load_image, load_mask
    from BreastCADxLib.results.case_files import write_case

    image = load_image(job.image)
    mask = load_mask(job.mask, image)
    progress(0.1, "loading the models")
    result = analyze(image, mask=mask, device=device, progress=lambda f, m: progress(0.1 + 0.85 * f, m),
                     model_set=model_set, mask_origin=mask_origin, site=_site(site, model_set),
                     reader_birads=reader_birads, box_prompt=box_prompt)
    if mask_origin == "auto":  # the segmenter's outline as it made it: its presence score, as `analyze` gives it
        result.presence_score = presence_score
    write_case(result, image, job.out)
    progress(1.0, f"malignancy probability {result.probability:.3f}" if result.probability is not None
             else "no lesion in the mask")


def execute(argv: list[str], emit: Emit) -> int:
    """One worker run; events go to `emit` (stdout in the process); returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m BreastCADxLib.scene.worker")
    ap.add_argument("task", choices=["segment", "classify"])
    ap.add_argument("--job", required=True, type=Path)
    ap.add_argument("--roi")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model-set", default=DEFAULT_MODEL_SET)
    ap.add_argument("--expect-lesion", action="store_true")
    ap.add_argument("--mask-origin", choices=["user", "auto", "edited"], default="user")
    ap.add_argument("--site")
    ap.add_argument("--birads")
    ap.add_argument("--presence-score", type=float)
    ap.add_argument("--box-prompt", action="store_true", help="the mask is the box outline of a set without a "
                    "segmenter, as made")
    args = ap.parse_args(argv)

    def progress(fraction: float, message: str) -> None:
        emit(progress=round(float(fraction), 4), message=message)

    progress(0.0, f"{args.task}: starting")
    job = JobFolder(args.job)
    try:
        if args.task == "segment":
            run_segment(job, args.roi, args.device, args.expect_lesion, progress, args.model_set, args.site)
        else:
            run_classify(job, args.device, progress, args.model_set, args.mask_origin, args.site, args.birads,
                         args.presence_score, args.box_prompt)
    except BreastCADxError as e:  # the panel and the page offer no override of the input guard
        emit(error=str(e).replace(OVERRIDE_HINT, PANEL_OVERRIDE_HINT))
        return EXIT_ERROR
    except Exception as e:  # reported to the panel as one line; the scene is untouched
        emit(error=f"internal error: {e.__class__.__name__}: {e}")
        return EXIT_ERROR
    emit(done=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return execute(sys.argv[1:] if argv is None else argv, print_event)


class InProcessTask:
    """A worker run already finished in this process; the same statuses, messages and errors as a process."""

    def __init__(self, argv: list[str], on_progress: Progress | None) -> None:
        self.messages: list[tuple[float, str]] = []
        self.error = ""

        def emit(**event) -> None:
            if "progress" in event:
                self.messages.append((event["progress"], event.get("message", "")))
                if on_progress is not None:
                    on_progress(float(event["progress"]), str(event.get("message", "")))
            elif "error" in event:
                self.error = str(event["error"])

        self.status = DONE if execute(argv, emit) == 0 else FAILED

    def poll(self) -> str:
        return self.status

    def cancel(self) -> None:
        self.status = CANCELLED

    def wait(self, timeout: float | None = None, interval: float = 0.1,
             should_cancel: Callable[[], bool] | None = None) -> str:
        if should_cancel is not None and should_cancel():
            self.cancel()
        return self.status


class InProcessRunner:
    """The worker's code in this process, synchronously: for tests and scripts (no process start-up)."""

    def start(self, task: str, job: JobFolder, args: list[str], on_progress: Progress | None = None) -> Task:
        return InProcessTask([task, "--job", str(job.root), *args], on_progress)


if __name__ == "__main__":
    sys.exit(main())
