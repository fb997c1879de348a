"""Safe defaults of the web server: served folders, output folder, bind address and access token."""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.io.dicomweb import is_loopback
from BreastCADxLib.io.files import ITK_SUFFIXES, RASTER_SUFFIXES, suffix_of

TOKEN_ENV = "BREASTCADX_SERVE_TOKEN"
IMAGE_SUFFIXES = (".dcm", ".dicom", *RASTER_SUFFIXES, *ITK_SUFFIXES)
MAX_LISTED = 5000
MAX_VISITED = 200_000  # directory entries one scan of the served folders looks at


class AccessError(BreastCADxError):
    """A request outside what the server was allowed to read or write, or an unsafe bind."""

    code = "access"


def access_token(host: str, environ: dict[str, str] | None = None) -> str:
    """The token a browser must present (`?secret=...` in the printed address), always: on loopback a new random
    one per start when none is set (as Jupyter does: any page the user visits could otherwise drive the server);
    beyond loopback it must be set, so that it can be handed to the readers: refuse to start without it."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip() or None
    if token is None and not is_loopback(host):
        raise AccessError(f"--host {host} makes the server reachable from other machines: set {TOKEN_ENV} to a "
                          f"secret (e.g. {TOKEN_ENV}={secrets.token_urlsafe(18)}) and open the page with "
                          "?secret=<that value>")
    if token is not None and len(token) < 12:
        raise AccessError(f"{TOKEN_ENV} is too short: use at least 12 characters")
    return token or secrets.token_urlsafe(24)


def served_address(host: str, port: int) -> str:
    """The address the server is bound to, as a browser writes it (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def allowed_hosts(host: str, port: int) -> set[str] | None:
    """Host headers a request may carry: the bound address (and its loopback names on loopback), so a page served
    from another name that resolves here (DNS rebinding) is refused; None (any) when bound beyond loopback, where
    the token is what protects the server."""
    if not is_loopback(host):
        return None
    return {f"{name}:{port}".lower() for name in ("127.0.0.1", "localhost", "[::1]")} | {
        served_address(host, port).lower()}


def refusal(host: str, port: int, host_header: str | None, origin: str | None) -> str | None:
    """Why a request must be refused (403), or None: a foreign Host on loopback, or an Origin other than the page's
    own (a WebSocket from another website: cross-site WebSocket hijacking)."""
    allowed = allowed_hosts(host, port)
    got = (host_header or "").strip().lower()
    if allowed is not None and got not in allowed:
        return f"Host {got or '(none)'} is not this server's address"
    if origin is not None and origin.strip().lower() not in (f"http://{got}", f"https://{got}"):
        return f"Origin {origin[:100]} is not this page's"
    return None


@dataclass(frozen=True)
class Entry:
    ref: str  # what the page sends back: "<root index>/<relative path>"
    label: str  # what the page shows


@dataclass(frozen=True)
class Listing:
    cases: list[Entry]
    site_profiles: list[Entry]
    model_sets: list[Entry]


class DataRoots:
    """The folders given with --data: the only places the server reads cases from. The page names a case by
    a reference into this listing; anything that resolves outside the folders is refused."""

    def __init__(self, folders: list[str | Path]) -> None:
        self.roots: list[Path] = []
        for f in folders:
            p = Path(f).expanduser()
            if not p.is_dir():
                raise AccessError("--data must be an existing folder", p)
            self.roots.append(p.resolve())

    def scan(self) -> Listing:
        """One walk of the served folders (sorted, symbolic links not followed, at most MAX_VISITED entries): the
        image files and DICOM series folders (folders holding .dcm files), the site profiles (folders holding
        site.json, made by `breastcadx adapt`) and the model sets (folders holding modelset.json, e.g. made by
        `breastcadx train`), at most MAX_LISTED of each."""
        found = Listing([], [], [])
        visited = 0
        for i, root in enumerate(self.roots):
            for here, dirs, files in os.walk(root):
                dirs.sort()
                folder = Path(here)
                rel = folder.relative_to(root).as_posix()
                visited += len(dirs) + len(files)
                marks = {"site.json": found.site_profiles, "modelset.json": found.model_sets}
                for name, into in marks.items():
                    if name in files and len(into) < MAX_LISTED:
                        into.append(Entry(f"{i}/{rel}", f"{root.name}/{rel}"))
                if rel != "." and sum(f.lower().endswith(".dcm") for f in files) > 1:
                    found.cases.append(Entry(f"{i}/{rel}", f"{root.name}/{rel}/ (DICOM series)"))
                for f in sorted(files):
                    path = folder / f
                    if suffix_of(path) in IMAGE_SUFFIXES and "_mask" not in path.stem:
                        r = path.relative_to(root).as_posix()
                        found.cases.append(Entry(f"{i}/{r}", f"{root.name}/{r}"))
                if visited > MAX_VISITED:
                    break
        found.cases.sort(key=lambda e: e.label)
        del found.cases[MAX_LISTED:]
        return found

    def resolve(self, ref: str) -> Path:
        index, _, rel = str(ref).partition("/")
        if not (index.isascii() and index.isdigit()) or int(index) >= len(self.roots) or not rel:
            raise AccessError(f"'{ref}' is not a case in the served folders")
        root = self.roots[int(index)]
        path = (root / rel).resolve()  # follows '..' and symbolic links before the check
        if not path.is_relative_to(root):
            raise AccessError(f"'{rel}' is outside the served folders")
        if not path.exists():
            raise AccessError(f"'{rel}' does not exist in the served folders")
        return path

    def ref(self, path: Path) -> str | None:
        """The page's reference of a path inside the served folders (as scan lists it); None outside them."""
        p = Path(path).resolve()
        for i, root in enumerate(self.roots):
            if p.is_relative_to(root):  # a served folder itself is "i/.", as scan lists it
                return f"{i}/{p.relative_to(root).as_posix()}"
        return None

    def label(self, path: Path) -> str:
        """A path as the page may show it (relative to its served folder, never the server's layout)."""
        for root in self.roots:
            if Path(path).resolve().is_relative_to(root):
                return f"{root.name}/{Path(path).resolve().relative_to(root).as_posix()}"
        return Path(path).name


class OutputFolder:
    """Where the server writes: a new sub-folder per save or export, never an existing file, nothing elsewhere."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def new_folder(self, case: str, kind: str) -> Path:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", case)[:60].strip("._") or "case"
        base = f"{stem}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(1000):
            path = self.root / (base if n == 0 else f"{base}-{n}")
            try:
                path.mkdir(parents=True)
            except FileExistsError:
                continue
            return path
        raise AccessError("could not make a new folder", self.root)

    def inside(self, path: str | Path) -> Path:
        p = Path(path).resolve()
        if not p.is_relative_to(self.root):
            raise AccessError(f"will not write outside the output folder {self.root}", p)
        return p
