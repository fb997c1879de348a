"""The `breastcadx` command line. Errors print one line naming the file and the cause."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="breastcadx", description="Breast-lesion CADx: load, segment, classify.")
    p.add_argument("--version", action="version", version=f"breastcadx {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show what the loader sees in image files (DICOM, PNG, NRRD, NIfTI, ...)")
    info.add_argument("files", nargs="+", help="image files or DICOM series folders")
    info.add_argument("--json", action="store_true", help="one JSON object per file")
    info.set_defaults(func=cmd_info)
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
