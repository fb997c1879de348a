"""`breastcadx serve`: the workflow in a browser (web/ on trame-slicer); needs the [web] extra."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from BreastCADxLib.web.page import ServeOptions, serve
    except ImportError as e:
        from BreastCADxLib.errors import BreastCADxError

        raise BreastCADxError(f"the web page needs the [web] extra ({e.name} is missing): "
                              "pip install -c constraints.txt -e '.[web]'") from None
    pacs = None
    if args.pacs_url:
        from BreastCADxLib.cli.pacs import pacs_from_args

        pacs = pacs_from_args(argparse.Namespace(url=args.pacs_url, user=args.pacs_user,
                                                 token_env=args.pacs_token_env, ca_bundle=args.pacs_ca_bundle,
                                                 insecure=False, allow_http_auth=False, timeout=30.0))
    return serve(ServeOptions(host=args.host, port=args.port, data=[Path(d) for d in args.data], out=Path(args.out),
                              device=args.device, pacs=pacs, open_browser=args.open_browser,
                              model_set=args.model_set, site=_site(args)))


def _site(args: argparse.Namespace) -> Path | None:
    """--site, verified before the server starts (an altered profile or one for another set is refused)."""
    if not args.site:
        return None
    from BreastCADxLib.analysis.site import load_site_profile

    load_site_profile(args.site, args.model_set)
    return Path(args.site).resolve()


def add_serve_parser(sub) -> None:
    sv = sub.add_parser("serve", help="the review workflow as a web page on real Slicer views (trame-slicer)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default loopback only; any other needs $BREASTCADX_SERVE_TOKEN)")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--data", action="append", default=[], metavar="FOLDER",
                    help="a folder whose images and DICOM series the page may open (repeatable; nothing else is read)")
    sv.add_argument("--out", default="breastcadx-serve", help="the only folder the server writes to")
    sv.add_argument("--device", default="auto", help="auto, cpu or cuda")
    sv.add_argument("--pacs-url", help="DICOMweb root of the PACS to retrieve from and send to")
    sv.add_argument("--pacs-user", help="basic-auth user; the password is read from $BREASTCADX_PACS_PASSWORD")
    sv.add_argument("--pacs-token-env", help="name of an environment variable holding a bearer token")
    sv.add_argument("--pacs-ca-bundle", help="CA certificates to verify the PACS's TLS certificate")
    sv.add_argument("--open-browser", action="store_true", help="open the page in this machine's browser")
    from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET
    from BreastCADxLib.cli.main import MODEL_SET_HELP, SITE_HELP

    sv.add_argument("--model-set", default=DEFAULT_MODEL_SET, metavar="NAME|FOLDER",
                    help=MODEL_SET_HELP)

    sv.add_argument("--site", metavar="PROFILE", help=SITE_HELP)
    sv.set_defaults(func=cmd_serve)
