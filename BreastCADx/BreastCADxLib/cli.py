"""The `breastcadx` command line. Errors print one line naming the file and the cause."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

import numpy as np

from . import __version__
from .errors import BreastCADxError

EXIT_INPUT_ERROR = 2
EXIT_INTERNAL_ERROR = 3


def cmd_info(args: argparse.Namespace) -> int:
    from .io import load_image

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

    from .io import load_image, save_mask
    from .io.files import write_image
    from .segmentation import get_segmenter, parse_roi

    image = load_image(args.image)
    roi = parse_roi(args.roi) if args.roi else None
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise BreastCADxError("output exists; pass --overwrite to replace it", out)
    segmenter = get_segmenter(args.model, args.device)
    result = segmenter.segment(image, roi=roi, progress=_progress_printer(sys.stderr.isatty() and image.frames > 1))
    save_mask(result.mask, image, out)
    if args.prob:
        write_image(image, Path(args.prob), result.probability.astype(np.float32))
    area = int(result.mask.sum())
    print(f"{'lesion found' if result.lesion_found else 'no lesion found'}: {area} pixels"
          f" -> {out} ({result.seconds:.2f} s on {segmenter.device})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="breastcadx", description="Breast-lesion CADx: load, segment, classify.")
    p.add_argument("--version", action="version", version=f"breastcadx {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
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
    seg.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda; env BREASTCADX_DEVICE")
    seg.add_argument("--model", default="lesion_seg_lite0", help="model id in Resources/Models")
    seg.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    seg.set_defaults(func=cmd_segment)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BreastCADxError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # last resort: one line, not a traceback
        if args.debug:
            raise
        print(f"internal error: {e.__class__.__name__}: {e} (run with --debug for details)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
