"""Fuzzing the loaders with atheris (coverage-guided): any exception other than our typed BreastCADxError is a
crash (a traceback a user would see). Run one harness, time- or count-boxed:

    python -m benchmarks.fuzz.harness dicom  -atheris_runs=1000000 -max_len=4096
    python -m benchmarks.fuzz.harness raster|itk|manifest|dicomdir ...

Targets: the format readers themselves (below load_image's last-resort net, so the net hides nothing here).
Seeds: the hostile corpus and the committed test data (a copy in runs/fuzz/<harness>/seeds). Crashing inputs are
written by libFuzzer as crash-<sha1> in the working folder; each one found becomes a kind of the hostile corpus.
Only our code, pydicom, Pillow and the csv reader are instrumented (instrumenting torch/numpy makes every run
a thousand times slower for no coverage of ours).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import atheris
import numpy  # noqa: F401  (imported before instrumentation: not instrumented)
import SimpleITK  # noqa: F401

INSTRUMENTED = ["BreastCADxLib", "pydicom", "PIL", "csv"]


def reader(kind: str):
    """The reader under test, imported (and instrumented) alone: a fresh process starts in seconds."""
    with atheris.instrument_imports(include=INSTRUMENTED):
        if kind == "manifest":
            from BreastCADxLib.cli.batch import read_manifest as read
        elif kind in ("dicom", "dicomdir"):
            from BreastCADxLib.io.dicom import read_dicom_file as read
        elif kind == "raster":
            from BreastCADxLib.io.files import read_raster as read
        else:
            from BreastCADxLib.io.files import read_itk as read
    return read


warnings.simplefilter("ignore")
os.environ.setdefault("BREASTCADX_MAX_VOXELS", "4000000")  # keep every decode small
SUFFIX = {"dicom": ".dcm", "raster": ".png", "itk": ".nrrd", "manifest": ".csv", "dicomdir": ""}
SAMPLE = Path(__file__).resolve().parents[2] / "BreastCADx" / "Resources" / "SampleData"


def dicomdir_export(folder: Path) -> Path:
    """A CD / USB export of the sample case (DICOMDIR + the file it indexes): the fuzzed bytes replace its DICOMDIR,
    so the reader follows whatever records they hold to a real image beside it."""
    import pydicom
    from pydicom.fileset import FileSet

    fs = FileSet()
    fs.add(pydicom.dcmread(next(SAMPLE.glob("*.dcm"))))
    fs.write(folder)
    return folder / "DICOMDIR"
TMP = Path(tempfile.mkdtemp(prefix="breastcadx-fuzz-"))


def target(kind: str):
    from BreastCADxLib.errors import BreastCADxError

    path = dicomdir_export(TMP / "export") if kind == "dicomdir" else TMP / f"input{SUFFIX[kind]}"
    read = reader(kind)

    def one(data: bytes) -> None:
        path.write_bytes(data)
        try:
            read(path)
        except BreastCADxError:
            pass  # a clear, typed refusal: the expected outcome for most inputs

    return one


def main() -> None:
    kind = sys.argv.pop(1)
    if kind not in SUFFIX:
        raise SystemExit(f"harness must be one of {sorted(SUFFIX)}")
    atheris.Setup(sys.argv, target(kind))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
