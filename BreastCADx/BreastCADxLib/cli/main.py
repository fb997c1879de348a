"""The `breastcadx` command line. Errors print one line naming the file and the cause."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from BreastCADxLib import __version__
from BreastCADxLib.analysis.registry import SEGMENTER_MODEL as DEFAULT_SEGMENTER
from BreastCADxLib.errors import BreastCADxError

# packages of the optional extras, and the extra that brings each
OPTIONAL_MODULES = {"highdicom": "dicom", "dicomweb_client": "dicom", "requests": "dicom", "slicer": "slicer"}
EXIT_CASES_FAILED = 1  # batch: finished, but some cases failed (see results.csv)
EXIT_INPUT_ERROR = 2
EXIT_INTERNAL_ERROR = 3


def cmd_info(args: argparse.Namespace) -> int:
    from BreastCADxLib.io import load_image

    status = 0
    for path in args.files:
        try:
            info = load_image(path).describe()
        except BreastCADxError as e:
            print(f"error: {e}", file=sys.stderr)
            status = EXIT_INPUT_ERROR
            continue
        if args.json:
            print(json.dumps(info))
            continue
        spacing = info["spacing_mm"]
        spacing_txt = " x ".join(f"{s:.4g}" for s in spacing) + " mm" if spacing else "unknown (sizes in pixels)"
        print(f"{path}\n  modality:    {info['modality']}\n  size:        {' x '.join(map(str, info['size']))}"
              f" (columns x rows x frames)\n  frames:      {info['frames']}\n  spacing:     {spacing_txt}\n"
              f"  photometric: {info['photometric']}\n  pixel type:  {info['dtype']}")
    return status


def _progress_printer(enabled: bool):
    if not enabled:
        return None

    def show(fraction: float, message: str) -> None:
        print(f"\r[{'#' * int(fraction * 20):<20}] {message}", end="\n" if fraction >= 1 else "",
              file=sys.stderr, flush=True)

    return show


def cmd_segment(args: argparse.Namespace) -> int:
    from pathlib import Path

    from BreastCADxLib.analysis.segmentation import get_segmenter, parse_roi
    from BreastCADxLib.io import load_image, save_mask
    from BreastCADxLib.io.files import write_image

    image = load_image(args.image)
    roi = parse_roi(args.roi) if args.roi else None
    out = Path(args.out)
    from BreastCADxLib.io.atomic import check_writable_folder

    for target in (out, Path(args.prob) if args.prob else None):
        if target is not None and os.path.lexists(target) and not args.overwrite:
            raise BreastCADxError("output exists; pass --overwrite to replace it", target)
        if target is not None:
            check_writable_folder(target.parent)  # before the models run
    from BreastCADxLib.analysis.guard import check_input
    from BreastCADxLib.analysis.registry import has_segmenter

    if args.model == DEFAULT_SEGMENTER and not has_segmenter(args.model_set):
        raise BreastCADxError(f"the model set '{args.model_set}' has no segmenter (the user's box locates its "
                              "findings): classify a finding with `breastcadx analyze --roi x0,y0,x1,y1`", args.image)
    checked = check_input(image, args.model_set, args.allow_unvalidated_input, args.device)
    if checked.flag:
        print(f"warning: {checked.flag.text}", file=sys.stderr)
    segmenter = get_segmenter(args.model, args.device, args.model_set)
    result = segmenter.segment(image, roi=roi, progress=_progress_printer(sys.stderr.isatty() and image.frames > 1),
                               expect_lesion=args.expect_lesion)
    save_mask(result.mask, image, out)
    if args.prob:
        write_image(image, Path(args.prob), result.probability.astype(np.float32))
    area = int(result.mask.sum())
    print(f"{result.outcome}: {area} pixels"
          f" -> {out} ({result.seconds:.2f} s on {segmenter.device})")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from BreastCADxLib.cli.case import analyze_case

    analyze_case(args.image, Path(args.out), args.mask, args.roi, args.device,
                 Path(args.dicom_out) if args.dicom_out else None, args.expect_lesion, args.model_set, args.overwrite,
                 args.allow_unvalidated_input, heatmap=args.heatmap, frame=args.frame, site=args.site,
                 reader_birads=args.birads)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from BreastCADxLib.cli.batch import BatchOptions, presence_note, run_batch

    if args.workers < 0:
        raise BreastCADxError(f"--workers must be 0 (this process) or more, got {args.workers}")
    options = BatchOptions(device=args.device, expect_lesion=args.expect_lesion, model_set=args.model_set,
                           allow_unvalidated=args.allow_unvalidated_input, heatmap=args.heatmap, site=args.site)
    table = run_batch(Path(args.manifest), Path(args.out), options, workers=args.workers, scheduler=args.scheduler,
                      overwrite=args.overwrite)
    errors = sum(r["status"] == "error" for r in table)
    print(f"{len(table)} cases, {errors} errors -> {Path(args.out) / 'results.csv'}")
    if note := presence_note(table, options):
        print(note)
    return EXIT_CASES_FAILED if errors else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from BreastCADxLib import SAMPLE_IMAGE
    from BreastCADxLib.cli.case import analyze_case

    # the demo's own folder: overwritten each time
    analyze_case(SAMPLE_IMAGE, Path(args.out), device=args.device, overwrite=True, heatmap=True)
    print(f"Open {Path(args.out) / 'overlay.png'} to see the result.")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from BreastCADxLib.results.evaluation import evaluate, to_markdown

    out = Path(args.out) if args.out else None
    if out is not None:
        for target in (out, out.with_suffix(".json")):
            if target.exists():
                raise BreastCADxError("output exists; choose another name (nothing was replaced)", target)
    report = evaluate(Path(args.results), Path(args.labels))
    text = to_markdown(report)
    print(text, end="")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"# BreastCADx at this site: {args.results} against {args.labels}\n\n{text}")
        out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


MODEL_SET_HELP = ("models to use: three-site (default; trained on BUSI, BUS-BRA L5 and BUS-UCLM), or the folder of "
                  "a model set of your own, e.g. one made by `breastcadx train` or a training/ set with a site held "
                  "out (its modelset.json and every file it lists are verified first)")


ALLOW_HELP = ("analyse an image the input guard refuses (another modality, an implausible size, an image unlike "
              "the breast ultrasound the models were trained on); the result is flagged")


SITE_HELP = ("a site profile made by `breastcadx adapt` from this hospital's labelled cases: the probability, the "
             "suggestion and the presence threshold follow it (refused when made for another model set)")


def _add_model_set(p: argparse.ArgumentParser, site: bool = False) -> None:
    from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET

    p.add_argument("--model-set", default=DEFAULT_MODEL_SET, metavar="NAME|FOLDER", help=MODEL_SET_HELP)
    p.add_argument("--allow-unvalidated-input", action="store_true", help=ALLOW_HELP)
    if site:
        p.add_argument("--site", metavar="PROFILE", help=SITE_HELP)


def _folds(text: str) -> int | str:
    if text == "site":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a number of folds, or `site`") from None


def cmd_train(args: argparse.Namespace) -> int:
    from BreastCADxLib.train.pipeline import train

    train(Path(args.manifest), args.modality, Path(args.out), args.device, args.max_minutes, args.folds,
          start_from=args.start_from, segmenter_epochs=args.segmenter_epochs, segmenter_size=args.segmenter_size,
          segmenter_min_found=args.segmenter_min_found, members=args.members, member_epochs=args.member_epochs)
    print(f"model set -> {args.out} (card.md: the cross-validated figures)")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from BreastCADxLib.results.adapt import adapt, card_text

    tuner = None
    if args.fine_tune:
        from BreastCADxLib.train.fine_tune import SiteFineTune

        tuner = SiteFineTune(Path(args.fine_tune), args.device, args.max_minutes, args.member_epochs)
    body = adapt(Path(args.results), Path(args.labels), Path(args.out), args.sensitivity, args.presence_found,
                 name=args.name, calibration=args.calibration, fine_tune=tuner)
    print(card_text(body), end="")
    tuned = body.get("fine_tune") or {}
    use = (f"--model-set {Path(args.out) / tuned['model_set_folder']} " if tuned.get("kept") else "") + \
        f"--site {args.out}"
    print(f"site profile -> {args.out} (use it with {use})")
    return 0


HEATMAP_HELP = "also compute the Grad-CAM heatmap (heatmap.nrrd, shown on the overlay); slower"
EXPECT_HELP = ("the image shows a lesion: when no region passes the presence threshold, return the most "
               "probable one (flagged low-confidence) instead of an empty mask")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="breastcadx", description="Breast-lesion CADx: load, segment, classify.")
    p.add_argument("--version", action="version", version=f"breastcadx {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    p.add_argument("--max-voxels", type=int, metavar="N",
                   help="refuse images larger than N voxels, read from the file header before decoding "
                        "(default 100,000,000; env BREASTCADX_MAX_VOXELS)")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show what the loader sees in image files (DICOM, PNG, NRRD, NIfTI, ...)")
    info.add_argument("files", nargs="+", help="image files or DICOM series folders")
    info.add_argument("--json", action="store_true", help="one JSON object per file")
    info.set_defaults(func=cmd_info)
    seg = sub.add_parser("segment", help="segment the breast lesion(s) in an image")
    seg.add_argument("image", help="image file or DICOM series folder")
    seg.add_argument("--out", required=True, help="mask file (.nrrd/.nii.gz; .png for 2D input)")
    seg.add_argument("--roi", help="box prompt x0,y0,x1,y1 in pixels (x1, y1 exclusive): segment only inside it")
    seg.add_argument("--prob", help="also write the lesion probability map (.nrrd)")
    seg.add_argument("--expect-lesion", action="store_true", help=EXPECT_HELP)
    seg.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda; env BREASTCADX_DEVICE")
    seg.add_argument("--model", default=DEFAULT_SEGMENTER, help="model id in Resources/Models")
    seg.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_model_set(seg)
    seg.set_defaults(func=cmd_segment)
    an = sub.add_parser("analyze", help="segment (unless --mask) and classify one case")
    an.add_argument("image", help="image file or DICOM series folder")
    an.add_argument("--mask", help="lesion mask on the image grid (else automatic segmentation)")
    an.add_argument("--roi", help="box prompt x0,y0,x1,y1 in pixels for the automatic segmentation")
    an.add_argument("--out", required=True, help="output folder (mask.nrrd, heatmap.nrrd, overlay.png, result.json)")
    an.add_argument("--device", default="auto", help="auto, cpu or cuda")
    an.add_argument("--dicom-out", help="also write DICOM SEG + SR (TID 1500) here (DICOM input only)")
    an.add_argument("--expect-lesion", action="store_true", help=EXPECT_HELP)
    an.add_argument("--overwrite", action="store_true", help="replace an earlier result in --out")
    an.add_argument("--heatmap", action="store_true", help=HEATMAP_HELP)
    an.add_argument("--frame", type=int, metavar="N",
                    help="a multi-frame ultrasound (cine): analyse frame N (0-based; default: the middle one)")
    an.add_argument("--birads", metavar="CATEGORY",
                    help="the radiologist's own BI-RADS category (1-5, 4A-4C): shown beside BreastCADx's, and "
                         "compared by the site profile's rule when --site has one")
    _add_model_set(an, site=True)
    an.set_defaults(func=cmd_analyze)
    ba = sub.add_parser("batch", help="analyse every case of a manifest CSV (case_id,image[,mask]); resumable")
    ba.add_argument("manifest", help="CSV with case_id,image and optional mask (paths relative to the CSV), roi (a box "
                                     "x0,y0,x1,y1 in pixels around the finding, as analyze --roi) and birads (the "
                                     "radiologist's category, shown beside BreastCADx's)")
    ba.add_argument("--out", required=True, help="output folder: results.csv and one folder per case")
    ba.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ba.add_argument("--expect-lesion", action="store_true",
                    help=EXPECT_HELP + "; for cases without a mask (finished cases run without it are redone)")
    ba.add_argument("--heatmap", action="store_true", help=HEATMAP_HELP)
    ba.add_argument("--workers", type=int, default=0, metavar="N",
                    help="run on a local Dask cluster of N worker processes (0: in this process)")
    ba.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                    help="run on an existing Dask cluster (paths must be the same on every worker)")
    ba.add_argument("--overwrite", action="store_true",
                    help="write into an --out that holds files a batch did not make (its results.csv and the "
                         "manifest's case folders are replaced)")
    _add_model_set(ba, site=True)
    ba.set_defaults(func=cmd_batch)
    de = sub.add_parser("demo", help="analyse the bundled sample case into ./breastcadx-demo/")
    de.add_argument("--out", default="breastcadx-demo", help="output folder (default ./breastcadx-demo)")
    de.add_argument("--device", default="auto", help="auto, cpu or cuda")
    de.set_defaults(func=cmd_demo)
    ev = sub.add_parser("evaluate", help="score a finished batch against biopsy results (AUC with a 95 %% CI, "
                                         "calibration, sensitivity / specificity): check the models at your site")
    ev.add_argument("results", help="results.csv of a finished `breastcadx batch`")
    ev.add_argument("--labels", required=True,
                    help="CSV with case_id,label (benign / malignant, or 0 / 1) and optionally group (e.g. the "
                         "patient: the CIs then resample whole patients)")
    ev.add_argument("--out", help="also write the report here (.md, and .json beside it); never replaces a file")
    ev.set_defaults(func=cmd_evaluate)
    ad = sub.add_parser("adapt", help="fit a site profile from a finished batch on this hospital's labelled cases "
                                      "(calibration, biopsy threshold, presence, reader rule); changes nothing until "
                                      "passed with --site")
    ad.add_argument("results", help="results.csv of a finished `breastcadx batch` (run without --site; with "
                                    "--expect-lesion, every lesion is classified)")
    ad.add_argument("--labels", required=True,
                    help="CSV with case_id,label (benign / malignant / normal) and optionally group (the patient) "
                         "and birads (the radiologist's category)")
    ad.add_argument("--out", required=True, help="the new profile's folder (never replaced)")
    ad.add_argument("--sensitivity", type=float, default=0.98,
                    help="the sensitivity the biopsy threshold is chosen for (default 0.98)")
    ad.add_argument("--presence-found", type=float, default=0.95,
                    help="the share of lesion images the presence threshold must find (default 0.95)")
    ad.add_argument("--name", help="the profile's id (default: the folder's name)")
    ad.add_argument("--calibration", choices=["platt_toward_identity", "cv"], default="platt_toward_identity",
                    help="platt_toward_identity (default): Platt scaling pulled toward the set's own probability, "
                         "moved as far as the cases show; cv: none, Platt or isotonic, chosen by cross-validated "
                         "log loss")
    ad.add_argument("--fine-tune", metavar="MANIFEST",
                    help="also fine-tune the model set on the labelled lesions (`train --from` on the batch's "
                         "outlines; MANIFEST: the batch's own manifest, for the images): the profile carries the new "
                         "set and is fitted on its out-of-fold probabilities; resumable, CPU by default")
    ad.add_argument("--max-minutes", type=float, default=0.0,
                    help="with --fine-tune: stop after this many minutes (0: no limit); the same command goes on")
    ad.add_argument("--member-epochs", type=int, default=None, metavar="N",
                    help="with --fine-tune: epochs of each image member (default: train's)")
    ad.add_argument("--device", default="cpu", help="with --fine-tune: cpu (default), cuda or auto")
    ad.set_defaults(func=cmd_adapt)
    tr = sub.add_parser("train", help="make a model set from your own located findings (cross-validated by "
                                      "patient against pyradiomics + logistic regression); resumable")
    tr.add_argument("manifest", help="CSV: case_id, image, label (benign / malignant / normal), patient, and mask, "
                                     "box (x0,y0,x1,y1) or circle (cx,cy,r)")
    tr.add_argument("--modality", required=True, choices=["US", "MG"])
    tr.add_argument("--out", required=True, help="the new model set's folder (a finished set is never replaced)")
    tr.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    tr.add_argument("--max-minutes", type=float, default=0.0,
                    help="stop after this many minutes (0: no limit); the same command goes on from there")
    tr.add_argument("--folds", type=_folds, default=5,
                    help="cross-validation folds by patient (default 5), or `site`: leave one site out (the "
                         "manifest's site column; held-out-site figures)")
    tr.add_argument("--from", dest="start_from", metavar="SET",
                    help="start from a set `breastcadx train` made (same modality): keep its feature scaling and "
                         "deep projection, pull the logistic towards its coefficients (a few local cases adjust it), "
                         "fine-tune its image members")
    tr.add_argument("--segmenter-epochs", type=int, default=None, metavar="N",
                    help="epochs of the set's own segmenter (finding detection; default 12); 0: no segmenter, the "
                         "user's box locates the finding")
    tr.add_argument("--segmenter-size", type=int, default=None, metavar="PX",
                    help="the segmenter's input side in pixels, a multiple of 32 in 64..1024 (default 256)")
    tr.add_argument("--segmenter-min-found", type=float, default=None, metavar="SHARE",
                    help="put the segmenter in the set only if, out of fold, it found at least this share of the "
                         "findings at its presence threshold (default 0.5; 0: always)")
    tr.add_argument("--members", default=None, metavar="VIEWS",
                    help="the image CNNs fused with the features: box,whole (default), box, whole or none; kept in "
                         "the set only if, out of fold, they do not lower the specificity over sensitivities 0.90-1.00 "
                         "(nor the AUC by more than 0.01)")
    tr.add_argument("--member-epochs", type=int, default=None, metavar="N",
                    help="epochs of each image member (default 14); 0: none")
    tr.set_defaults(func=cmd_train)
    from BreastCADxLib.cli.pacs import add_pacs_parser
    from BreastCADxLib.cli.serve import add_serve_parser

    add_pacs_parser(sub, EXPECT_HELP, _add_model_set)
    add_serve_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if args.max_voxels:
        import os

        from BreastCADxLib.io.limits import ENV

        os.environ[ENV] = str(args.max_voxels)
    try:
        return func(args)
    except BreastCADxError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # last resort: one line, not a traceback
        extra = OPTIONAL_MODULES.get((getattr(e, "name", None) or "").split(".")[0])
        if isinstance(e, ModuleNotFoundError) and extra:
            print(f"error: '{args.command}' needs the Python package '{e.name}': pip install 'breastcadx[{extra}]'",
                  file=sys.stderr)
            return EXIT_INPUT_ERROR
        if args.debug:
            raise
        print(f"internal error: {e.__class__.__name__}: {e} (run with --debug for details)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
