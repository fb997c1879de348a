"""DICOM SEG + TID 1500 SR: valid (dciodvfy), referencing the source, round-tripping mask and numbers."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from BreastCADxLib.analysis.pipeline import analyze
from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.results.dicom_export import (
    DicomExportError,
    ModelInfo,
    build_dicom_results,
    build_seg,
    build_sr,
    read_seg_mask,
    read_sr_summary,
    save_dicom_results,
)
from conftest import dciodvfy
from dicom_factory import mr_series, sample_pixels, us
from result_factory import fake_result

SEG_MODEL = ModelInfo("BreastCADx lesion segmenter", "0.1.0/lesion_seg_lite0", "a" * 64)
CLS_MODEL = ModelInfo("BreastCADx fusion classifier", "0.1.0/lesion_cls_fusion", "b" * 64)


def write_dicom_results(result, image, out, overlay=None):
    return save_dicom_results(build_dicom_results(result, image, overlay), out)


@pytest.fixture(scope="module")
def sample_export(sample_dicom, sample_mask, tmp_path_factory):
    image = load_image(sample_dicom)
    mask = load_mask(sample_mask, image)
    result = analyze(image, mask, heatmap=False, mask_origin="auto")  # as if the segmenter had drawn it
    out = tmp_path_factory.mktemp("dicom_out")
    overlay = np.zeros((*image.array.shape[1:], 3), np.uint8)
    overlay[..., 1] = image.array[0]
    return image, mask, result, write_dicom_results(result, image, out, overlay)


@pytest.mark.parametrize("kind, iod", [("seg", "Segmentation"), ("sr", "Comprehensive3DSR"),
                                       ("overlay", "SCImage")])
def test_objects_pass_dciodvfy(sample_export, kind, iod):
    out, errors = dciodvfy(sample_export[3][kind])
    assert iod in out
    assert errors == []


def test_seg_round_trips_the_mask_and_copies_patient_study(sample_export, sample_dicom):
    image, mask, _, paths = sample_export
    assert np.array_equal(read_seg_mask(paths["seg"], image), mask.astype(bool))
    seg, src = pydicom.dcmread(paths["seg"]), pydicom.dcmread(sample_dicom)
    for key in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate", "AccessionNumber"):
        assert seg.get(key) == src.get(key), key
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID and seg.SOPInstanceUID != src.SOPInstanceUID
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    desc = seg.SegmentSequence[0]
    assert desc.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert desc.SegmentedPropertyTypeCodeSequence[0].CodeValue == "4147007"
    assert desc.SegmentAlgorithmType == "AUTOMATIC"
    assert desc.SegmentAlgorithmName == f"BreastCADx {sample_export[2].provenance.segmenter.id}"
    assert desc.SegmentAlgorithmName == "BreastCADx lesion_seg_lite0"


def test_overlay_secondary_capture_copies_patient_and_declares_burned_in_text(sample_export, sample_dicom):
    sc, src = pydicom.dcmread(sample_export[3]["overlay"]), pydicom.dcmread(sample_dicom)
    assert sc.PatientID == src.PatientID and sc.StudyInstanceUID == src.StudyInstanceUID
    assert sc.BurnedInAnnotation == "YES" and sc.SamplesPerPixel == 3
    assert sc.pixel_array.shape == (*sample_export[0].array.shape[1:], 3)


def test_sr_round_trips_probability_suggestion_and_references(sample_export, sample_dicom):
    _, _, result, paths = sample_export
    summary = read_sr_summary(paths["sr"])
    assert summary["probability"] == pytest.approx(result.probability, abs=1e-12)
    assert summary["birads_suggestion"] == result.birads_suggestion
    assert any("not a radiologist" in t for t in summary["text"])
    # BUSI has no calibration: sizes are labelled as pixels, never passed off as mm
    assert summary["measurements"]["Area"] == (pytest.approx(result.measurements["area"]), "{pixels}")
    sr, seg = pydicom.dcmread(paths["sr"]), pydicom.dcmread(paths["seg"])
    assert sr.PatientID == pydicom.dcmread(sample_dicom).PatientID
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    evidence = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    assert {seg.SOPInstanceUID, pydicom.dcmread(sample_dicom).SOPInstanceUID} <= evidence
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"


@pytest.mark.parametrize("origin, kind", [("edited", "SEMIAUTOMATIC"), ("user", "MANUAL")])
def test_mask_origin_sets_algorithm_type(sample_dicom, sample_mask, origin, kind, tmp_path):
    image = load_image(sample_dicom)
    seg = build_seg(image, load_mask(sample_mask, image), SEG_MODEL, origin=origin)
    assert seg.SegmentSequence[0].SegmentAlgorithmType == kind
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    assert dciodvfy(tmp_path / "seg.dcm")[1] == []


def test_cine_without_frame_of_reference_gets_a_clear_error(tmp_path):
    frames = np.stack([sample_pixels((96, 80))] * 3)
    image = load_image(us(tmp_path / "cine.dcm", frames))
    with pytest.raises(DicomExportError, match="without patient coordinates") as e:
        build_seg(image, np.ones(frames.shape, bool), SEG_MODEL)
    assert "cine.dcm" in str(e.value)


def test_series_round_trip_with_mm_units(tmp_path):
    folder, _ = mr_series(tmp_path / "mr")
    image = load_image(folder)
    assert image.spacing_known
    mask = np.zeros(image.array.shape, bool)
    mask[2:5, 5:15, 8:20] = True
    paths = write_dicom_results(fake_result(0.07, mask=mask), image, tmp_path / "out")
    assert np.array_equal(read_seg_mask(paths["seg"], image), mask)
    summary = read_sr_summary(paths["sr"])
    assert summary["measurements"]["Long axis"][1] == "mm"
    assert summary["probability"] == pytest.approx(0.07)
    assert dciodvfy(paths["seg"])[1] == []


def test_png_source_is_refused_naming_the_file(tmp_path):
    from PIL import Image as PILImage

    png = tmp_path / "case.png"
    PILImage.fromarray(sample_pixels()).save(png)
    image = load_image(png)
    with pytest.raises(DicomExportError) as e:
        build_seg(image, np.ones(image.array.shape, bool), SEG_MODEL)
    assert "case.png" in str(e.value) and "DICOM" in str(e.value)


def test_empty_mask_and_missing_result_are_refused_without_writing(sample_dicom, tmp_path):
    image = load_image(sample_dicom)
    with pytest.raises(DicomExportError, match="empty"):
        write_dicom_results(fake_result(mask=np.zeros(image.array.shape, bool)), image, tmp_path / "a")
    seg = build_seg(image, np.pad(np.ones((1, 20, 20), bool), ((0, 0), (10, image.array.shape[1] - 30),
                                                                  (10, image.array.shape[2] - 30))), SEG_MODEL)
    with pytest.raises(DicomExportError, match="no lesion"):
        build_sr(image, seg, fake_result(None), CLS_MODEL)
    assert not (tmp_path / "a").exists()


def test_cli_dicom_out_needs_a_dicom_input(tmp_path, capsys):
    from PIL import Image as PILImage

    from BreastCADxLib.cli.main import main

    png = tmp_path / "case.png"
    PILImage.fromarray(sample_pixels()).save(png)
    assert main(["analyze", str(png), "--out", str(tmp_path / "out"), "--dicom-out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "case.png" in err and "DICOM input" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("case", ["long_name", "latin1_without_charset"])
def test_invalid_patient_values_in_the_source_come_out_valid_and_said(case, sample_dicom, sample_mask, tmp_path):
    """A 5,000-character PatientName, or Latin-1 bytes with no SpecificCharacterSet: the SEG, SR and SC pass
    dciodvfy (both were copied as they were and rejected), and the change is reported."""
    from BreastCADxLib.results.case_files import write_case

    ds = pydicom.dcmread(sample_dicom)
    if case == "long_name":
        ds.PatientName = "Long" * 1250
    else:
        ds.pop("SpecificCharacterSet", None)
        ds.PatientName = "X"
        ds.save_as(tmp_path / "tmp.dcm")
        ds = pydicom.dcmread(tmp_path / "tmp.dcm")
        ds[0x00100010].value = "Müller^José".encode("latin-1")
    ds.save_as(tmp_path / "in.dcm")
    image = load_image(tmp_path / "in.dcm")
    result = analyze(image, load_mask(sample_mask, image), heatmap=False)
    out = write_case(result, image, tmp_path / "case", tmp_path / "dicom")
    assert out.notes and ("cut to 64" in out.notes[0] if case == "long_name" else "Latin-1" in out.notes[0])
    for kind in ("dicom_seg", "dicom_sr", "dicom_overlay"):
        text, errors = dciodvfy(out.paths[kind])
        assert errors == [], (kind, errors[:3])
        written = pydicom.dcmread(out.paths[kind])
        if case == "latin1_without_charset":
            assert str(written.PatientName) == "Müller^José" and written.SpecificCharacterSet == "ISO_IR 192"
        else:
            assert len(str(written.PatientName)) == 64
