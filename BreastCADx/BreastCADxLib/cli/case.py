"""One case from the command line (`analyze`, `demo`, `pacs analyze`): checks first, then the one case writer."""

from __future__ import annotations

import os
from pathlib import Path

from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET
from BreastCADxLib.errors import BreastCADxError
from BreastCADxLib.io.atomic import check_writable_folder
from BreastCADxLib.results.case_files import CASE_FILES, CaseOutputs, summary_lines


def check_case_folder(out: Path, overwrite: bool) -> None:
    """--out must be a writable folder, and one without an earlier result unless --overwrite (a link in the
    place of a result file counts as one: it is replaced, never followed)."""
    if out.exists() and not out.is_dir():
        raise BreastCADxError("--out must be a folder, but a file of that name exists", out)
    earlier = [name for name in CASE_FILES if os.path.lexists(out / name)]
    if earlier and not overwrite:
        raise BreastCADxError(f"the folder holds an earlier result ({', '.join(earlier)}); pass --overwrite to "
                              "replace it or choose another folder", out)
    check_writable_folder(out)


def check_dicom_folder(dicom_out: Path) -> None:
    from BreastCADxLib.results.dicom_export import check_writable

    check_writable(dicom_out)
    check_writable_folder(dicom_out)


def analyze_case(image_path: str | Path, out: Path, mask_path: str | Path | None = None, roi: str | None = None,
                 device: str = "auto", dicom_out: Path | None = None, expect_lesion: bool = False,
                 model_set: str = DEFAULT_MODEL_SET, overwrite: bool = False, allow_unvalidated: bool = False,
                 heatmap: bool = False, frame: int | None = None, site: str | Path | None = None,
                 reader_birads: str | None = None) -> CaseOutputs:
    """Analyse one image into `out` (and DICOM into `dicom_out`); prints the summary; returns what was written."""
    from BreastCADxLib.analysis.pipeline import analyze
    from BreastCADxLib.analysis.radiomics_features import check_lesion_mask
    from BreastCADxLib.analysis.segmentation import parse_roi
    from BreastCADxLib.analysis.site import load_site_profile, reader_category
    from BreastCADxLib.io import load_image, load_mask
    from BreastCADxLib.results.case_files import write_case

    check_case_folder(out, overwrite)  # before anything is loaded or computed
    profile = load_site_profile(site, model_set) if site else None
    if reader_birads is not None:
        reader_birads = reader_category(reader_birads)
    if mask_path and Path(mask_path).resolve() == (out / "mask.nrrd").resolve():
        raise BreastCADxError("--out would overwrite the input mask with the output mask; choose another folder",
                              mask_path)
    if dicom_out:
        check_dicom_folder(dicom_out)
    image = load_image(image_path)
    if dicom_out and not image.source_files:
        raise BreastCADxError("--dicom-out needs a DICOM input (SEG and SR reference the source images)", image_path)
    mask = load_mask(mask_path, image) if mask_path else None
    if mask is not None:
        check_lesion_mask(mask, mask_path)  # named after the mask file, before any model runs
    result = analyze(image, mask=mask, roi=parse_roi(roi) if roi else None, device=device,
                     expect_lesion=expect_lesion, model_set=model_set, allow_unvalidated=allow_unvalidated,
                     heatmap=heatmap, frame=frame, site=profile, reader_birads=reader_birads)
    outputs = write_case(result, image, out, dicom_out)
    print(f"{image_path}")
    for line in summary_lines(result):
        print(f"  {line}")
    print(f"  outputs: {', '.join(str(p) for p in outputs.paths.values())}")
    for note in outputs.notes:
        print(f"  note (DICOM out): {note}")
    return outputs
