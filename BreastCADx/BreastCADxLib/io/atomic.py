"""Writing inside an output folder without following what someone left there.

Every file is written to a new temporary file beside its target (created exclusively, so nothing that already
exists is opened) and renamed into place: a symbolic link at the target is replaced, never followed, and a failed
write leaves the earlier file whole. Temporary names start with "." (no case id can), and are removed on failure.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from BreastCADxLib.errors import BreastCADxError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would have given the file (mkstemp makes it owner-only)
DIR_MODE = 0o777 & ~_umask()  # what mkdir() would have given a folder (mkdtemp makes it owner-only)


class OutputError(BreastCADxError):
    """An output folder or file that cannot be written (read-only, permission, a file where a folder goes)."""

    code = "output_unwritable"


def os_cause(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.EROFS:
        return "read-only file system"
    if e.errno == errno.ENOSPC:
        return "no space left on the device"
    return e.strerror or str(e) or e.__class__.__name__


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` writes the content to a temporary path (same suffix) beside `path`, then it becomes `path`."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem.split('.')[0]}-", suffix=suffix)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write here ({os_cause(e)})", path.parent) from None
    try:
        write(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write the file ({os_cause(e)})", path) from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def check_writable_folder(folder: Path) -> None:
    """The folder is, or can be made, a folder a file can be created in: checked before any analysis runs, and
    nothing is left behind (a missing folder is not made here; its nearest existing parent is probed)."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise OutputError("is a broken symbolic link, not a folder", folder)
    probe_in = folder
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise OutputError("must be a folder, but a file of that name exists" if probe_in == folder else
                          f"cannot be made: {probe_in} is a file", folder)
    try:
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write here ({os_cause(e)})", folder) from None


def append_line(path: Path, line: str) -> None:
    """Append to a log file, refusing a symbolic link in its place."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError("is a symbolic link; BreastCADx does not write through links it did not make",
                              path) from None
        raise OutputError(f"cannot write the file ({os_cause(e)})", path) from None
    with os.fdopen(fd, "a") as f:
        f.write(line)
