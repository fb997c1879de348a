"""`breastcadx pacs ...`: query, retrieve, analyze and store over DICOMweb."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the [dicom] extra is imported only when a pacs command runs
    from BreastCADxLib.io.dicomweb import Pacs

PASSWORD_ENV = "BREASTCADX_PACS_PASSWORD"


def pacs_from_args(args: argparse.Namespace) -> Pacs:
    from BreastCADxLib.io.dicomweb import Pacs, PacsConfig

    verify: bool | str = args.ca_bundle or not args.insecure
    if args.insecure and not args.ca_bundle:
        print(f"warning: --insecure: the TLS certificate of {args.url} is not verified", file=sys.stderr)
    if args.allow_http_auth and args.user:
        print("warning: --allow-http-auth: the password may travel in clear", file=sys.stderr)
    return Pacs(PacsConfig(args.url, username=args.user, token_env=args.token_env, verify=verify,
                           allow_http_auth=args.allow_http_auth,
                           timeout=args.timeout))


def cmd_query(args: argparse.Namespace) -> int:
    pacs = pacs_from_args(args)
    rows = pacs.query_series(args.study) if args.study else pacs.query_studies(args.patient_id, None, args.modality)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("nothing found")
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items() if v))
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    pacs = pacs_from_args(args)
    folder = pacs.retrieve_series(args.study, pacs.image_series(args.study, args.series), Path(args.out))
    print(f"{len(list(folder.glob('*.dcm')))} instances -> {folder}")
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from BreastCADxLib.io.dicom import read_datasets

    datasets = read_datasets(args.files)
    pacs_from_args(args).store(datasets)
    print(f"stored {len(datasets)} instances at {args.url}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from BreastCADxLib.analysis.segmentation import parse_roi
    from BreastCADxLib.cli.case import analyze_case, check_case_folder, check_dicom_folder

    out = Path(args.out)
    dicom_out = out / "dicom"
    if args.roi:
        parse_roi(args.roi)  # a malformed box is refused before anything is retrieved
    check_case_folder(out, args.overwrite)  # before anything is retrieved
    check_dicom_folder(dicom_out)
    pacs = pacs_from_args(args)
    series = pacs.image_series(args.study, args.series)
    with tempfile.TemporaryDirectory(prefix="breastcadx-pacs-") as tmp:
        folder = pacs.retrieve_series(args.study, series, Path(tmp) / "series")
        files = sorted(folder.glob("*.dcm"))
        source = files[0] if len(files) == 1 else folder
        outputs = analyze_case(source, out, roi=args.roi, device=args.device, dicom_out=dicom_out,
                               expect_lesion=args.expect_lesion, model_set=args.model_set, overwrite=args.overwrite,
                               allow_unvalidated=args.allow_unvalidated_input, heatmap=args.heatmap,
                               site=args.site, reader_birads=args.birads)
    if args.store:
        if not outputs.datasets:
            print("no lesion found: nothing to store")
            return 0
        pacs.store(list(outputs.datasets.values()))  # the objects just written, not read back
        print(f"stored SEG + SR + overlay in study {args.study} at {args.url}")
    return 0


def add_pacs_parser(sub, expect_help: str, add_model_set: Callable[..., None]) -> None:
    """`add_model_set`: the CLI's own --model-set / --allow-unvalidated-input / --site options (as `analyze`)."""
    pacs = sub.add_parser("pacs", help="query / retrieve / analyze / store over DICOMweb")
    psub = pacs.add_subparsers(dest="pacs_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", required=True, help="DICOMweb root, e.g. https://pacs.example.org/dicom-web")
    common.add_argument("--user", help=f"basic-auth user; the password is read from ${PASSWORD_ENV}")
    common.add_argument("--token-env", help="name of an environment variable holding a bearer token")
    common.add_argument("--ca-bundle", help="CA certificates to verify the PACS's TLS certificate")
    common.add_argument("--insecure", action="store_true", help="do not verify TLS certificates (avoid)")
    common.add_argument("--allow-http-auth", action="store_true",
                        help="allow basic auth over plain http to a non-loopback host (the password travels in clear)")
    common.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for each PACS request in all, retries included")
    q = psub.add_parser("query", parents=[common], help="list studies (or the series of --study)")
    q.add_argument("--patient-id")
    q.add_argument("--modality", help="e.g. US, MG, MR")
    q.add_argument("--study", help="list this study's series")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_query)
    r = psub.add_parser("retrieve", parents=[common], help="download a series into a new folder")
    r.add_argument("--study", required=True)
    r.add_argument("--series", help="default: the study's only image series")
    r.add_argument("--out", required=True, help="folder to create (must not exist)")
    r.set_defaults(func=cmd_retrieve)
    a = psub.add_parser("analyze", parents=[common], help="retrieve a series, analyze it, write SEG + SR")
    a.add_argument("--study", required=True)
    a.add_argument("--series", help="default: the study's only image series")
    a.add_argument("--out", required=True, help="output folder (as `analyze`, plus dicom/seg.dcm, dicom/sr.dcm)")
    a.add_argument("--roi", help="box x0,y0,x1,y1 in pixels of the retrieved image (as `analyze`; a model set "
                   "without a segmenter needs it)")
    a.add_argument("--store", action="store_true", help="send SEG + SR back to the PACS (STOW-RS)")
    a.add_argument("--device", default="auto", help="auto, cpu or cuda")
    a.add_argument("--expect-lesion", action="store_true", help=expect_help)
    a.add_argument("--overwrite", action="store_true",
                   help="replace earlier case files in --out (an earlier dicom/ result is never replaced)")
    a.add_argument("--heatmap", action="store_true", help="also compute the Grad-CAM heatmap (on the overlay)")
    a.add_argument("--birads", metavar="CATEGORY", help="the radiologist's own BI-RADS category (see analyze)")
    add_model_set(a, site=True)
    a.set_defaults(func=cmd_analyze)
    s = psub.add_parser("store", parents=[common], help="send DICOM files to the PACS (STOW-RS)")
    s.add_argument("files", nargs="+")
    s.set_defaults(func=cmd_store)
